"""Adaptive compute at real budgets, measured on sample pools by exact replay.

``benchmarks/allocator.py --pool POOL --calibration-pool TRAIN_POOL`` runs this:

1. **Calibrate on the training pool** (``math_train200``; never MATH-500): every problem
   is probed (``auto``'s probe, replayed) and run with best-of-N at each calibration budget
   (``ttscale.cli.calibrate.pool_configs``: n = what the budget buys, up to the pool's K),
   then ``fit_policy`` picks n per (difficulty bin, budget level): Snell et al.'s
   compute-optimal best-of-N. The splits are asserted disjoint.
2. **Evaluate on the held-out MATH-500 pool** at budget levels 1x..16x a greedy solution
   (~450 tokens): ``auto`` with the fitted policy, ``auto_batch`` (``solve_batch``, one
   shared budget of problems x B), uniform maj@n (n = B // 450), the Beta-rule adaptive
   best-of-N and DeepConf online gating, each over ``--orders`` replay orders. Accuracy
   CIs are two-level (problems, orders); compute is mean eFLOPs per problem spent.
3. **Live confirmation** (``--live N``): ``auto`` and uniform maj@n run live on the
   embedded vLLM engine for N of the problems at one budget; their accuracy and tokens are
   compared with the replay figures of the same problems and budget (within the CIs?).
4. **Compute ratio at matched accuracy**: at ``auto``'s most accurate point, the eFLOPs
   uniform maj@n needs to reach that accuracy (log-interpolated on its curve) over what
   ``auto`` spent (a lower bound when maj@n never reaches it). Gating's token saving is
   measured at n = K against ungated maj@K.

Writes ``<out>.json``, ``<out>.png``, the calibration rows and the fitted policy; last line
``RESULT compute_ratio_at_matched_acc=<> token_ratio_at_matched_acc=<> auto_acc=<> bon_acc=<>
gating_token_saving=<> n_problems=<> isa=<>`` (ratios > 1: auto needs less than uniform maj@n).
``--round-size`` sets how many samples ``auto`` draws per engine call between its saturation
checks: smaller rounds stop earlier on easy problems, but every round reads the weights again
for each decode step, which the eFLOPs model (and a memory-bound decoder) charges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GREEDY_TOKENS = 450
LEVELS = (("x1", 1), ("x2", 2), ("x4", 4), ("x8", 8), ("x16", 16))


async def calibrate(
    train: Any, rows_path: Path, budgets: list[int], policy_path: Path, round_size: int | None
) -> Any:
    from ttscale.cli.calibrate import measure_rows, pool_configs
    from ttscale.cost import default_hardware
    from ttscale.host import host_info
    from ttscale.pools import ReplayGenerator
    from ttscale.strategies.allocation.policy import BudgetLevel, fit_policy, load_policy

    problems = [
        {"id": p.id, "problem": p.problem, "answer": p.gold, "level": p.level}
        for p in train.problems.values()
    ]
    s = train.sampling.model_dump()
    await measure_rows(
        problems,
        budgets,
        ReplayGenerator(train),
        None,
        rows_path,
        configs=lambda b, has_verifier: pool_configs(
            b, has_verifier=has_verifier, sampling=s, round_size=round_size
        ),
        probe_temperature=s["temperature"],
        concurrency=64,
    )
    from ttscale.evals.store import read_jsonl

    prior = load_policy()
    levels = [BudgetLevel(name=n, tokens=GREEDY_TOKENS * m) for n, m in LEVELS]
    pol = fit_policy(
        read_jsonl(rows_path),
        calibration_ids=[p["id"] for p in problems],
        dataset="math_train200",
        model=str(train.manifest.get("model", {}).get("embedded")),
        levels=levels,
        prior=prior,
        rows_file=str(rows_path),
        hardware=default_hardware().name,
        isa=host_info().isa,
    )
    return pol.save(policy_path)


async def evaluate(pool: Any, policy: Path, orders: int) -> list[dict[str, Any]]:
    """One row per (method, budget, problem, order)."""
    from ttscale.budget import Budget
    from ttscale.pools import ReplayGenerator
    from ttscale.strategies import make_strategy
    from ttscale.strategies.allocation.batch import run_batch
    from ttscale.types import Problem
    from ttscale.verifiers.answers import grade

    s = pool.sampling
    sampling = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
    probs = list(pool.problems.values())
    rows: list[dict[str, Any]] = []

    def row(method: str, budget: int, p: Any, order: int, res: Any) -> dict[str, Any]:
        failed = isinstance(res, Exception)
        answer = None if failed else res.answer
        return {
            "method": method,
            "budget_tokens": budget,
            "problem_id": p.id,
            "order": order,
            "level": p.level,
            "correct": bool(answer is not None and grade(answer, p.gold)),
            "eflops": 0.0 if failed else res.ledger.eflops,
            "tokens": 0 if failed else res.ledger.generated_tokens,
            "error": repr(res) if failed else None,
            "stop": None if failed else res.extras.get("stop_reason"),
        }

    for _, mult in LEVELS:
        budget = GREEDY_TOKENS * mult
        n = min(s.k, mult)
        uniform = {
            "bon": make_strategy(
                "best_of_n", n=n, round_size=n, adaptive=False, select="majority", **sampling
            ),
            "bon_adaptive": make_strategy(
                "best_of_n", n=n, round_size=min(n, 4), adaptive=True, select="majority", **sampling
            ),
            "auto": make_strategy("auto", policy=str(policy), temperature=s.temperature),
        }
        if n >= 8:  # DeepConf online: 4 warm-up samples, then the rest in one gated call
            for tag, keep in (("bon_gated", 0.9), ("bon_gated50", 0.5)):
                uniform[tag] = make_strategy(
                    "best_of_n",
                    n=n,
                    round_size=n,
                    adaptive=False,
                    select="majority",
                    gate=True,
                    gate_keep=keep,
                    gate_window=64,
                    **sampling,
                )
        for order in range(orders):
            for method, strat in uniform.items():
                for p in probs:
                    try:
                        res = await strat.run(
                            Problem(p.problem, s.system_prompt, id=p.id),
                            ReplayGenerator(pool, order_seed=order),
                            None,
                            Budget(tokens=budget),
                        )
                    except Exception as exc:  # recorded as a wrong row, visibly
                        res = exc
                    rows.append(row(method, budget, p, order, res))
            try:
                batch = await run_batch(
                    [p.problem for p in probs],
                    Budget(tokens=budget * len(probs)),
                    ReplayGenerator(pool, order_seed=order),
                    None,
                    system_prompt=s.system_prompt,
                    policy=str(policy),
                    temperature=s.temperature,
                )
            except Exception as exc:
                batch = [exc] * len(probs)
            rows += [
                row("auto_batch", budget, p, order, r) for p, r in zip(probs, batch, strict=True)
            ]
        print(f"budget {budget}: done ({len(rows)} rows)", flush=True)
    return rows


async def live(
    pool: Any, policy: Path, n_problems: int, budget: int, out: Path
) -> list[dict[str, Any]]:
    """``auto`` and uniform maj@n live on the embedded engine (vLLM) for the first
    ``n_problems`` of the pool at one budget, the pool's sampling settings; rows appended to
    ``out`` as they finish (a rerun resumes)."""
    from ttscale.backends import CoalescingGenerator, make_backend
    from ttscale.budget import Budget
    from ttscale.evals.store import append_jsonl, read_jsonl
    from ttscale.strategies import make_strategy
    from ttscale.types import Problem
    from ttscale.verifiers.answers import grade

    s = pool.sampling
    probs = list(pool.problems.values())[:n_problems]
    done = {(r["method"], r["problem_id"]) for r in read_jsonl(out)} if out.exists() else set()
    n = min(s.k, budget // GREEDY_TOKENS)
    methods = {
        "bon": make_strategy(
            "best_of_n",
            n=n,
            round_size=n,
            adaptive=False,
            select="majority",
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
        ),
        "auto": make_strategy("auto", policy=str(policy), temperature=s.temperature),
    }
    engine = make_backend("vllm", seeding="engine", kv_cache_gib=6)
    gen = CoalescingGenerator(engine)

    async def one(method: str, p: Any) -> None:
        res = await methods[method].run(
            Problem(p.problem, s.system_prompt, id=p.id), gen, None, Budget(tokens=budget)
        )
        append_jsonl(
            out,
            [
                {
                    "method": method,
                    "budget_tokens": budget,
                    "problem_id": p.id,
                    "correct": bool(res.answer is not None and grade(res.answer, p.gold)),
                    "eflops": res.ledger.eflops,
                    "tokens": res.ledger.generated_tokens,
                    "engine": res.ledger.engine.get("seeding"),
                }
            ],
        )

    try:
        await asyncio.gather(*(one(m, p) for m in methods for p in probs if (m, p.id) not in done))
    finally:
        await engine.close()
    return [r for r in read_jsonl(out) if r["budget_tokens"] == budget]


def agreement(live_rows: list[dict[str, Any]], replay_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Live vs replay on the same problems and budget: accuracy and tokens with CIs."""
    from ttscale.evals.metrics import bootstrap_ci, hierarchical_bootstrap_ci

    out = {}
    for m in sorted({r["method"] for r in live_rows}):
        lv = [r for r in live_rows if r["method"] == m]
        ids = {r["problem_id"] for r in lv}
        rp = [
            r
            for r in replay_rows
            if r["method"] == m
            and r["problem_id"] in ids
            and r["budget_tokens"] == lv[0]["budget_tokens"]
        ]
        by_c: dict[str, list[float]] = defaultdict(list)
        by_t: dict[str, list[float]] = defaultdict(list)
        for r in rp:
            by_c[r["problem_id"]].append(float(r["correct"]))
            by_t[r["problem_id"]].append(float(r["tokens"]))
        live_acc = float(np.mean([r["correct"] for r in lv]))
        live_tok = float(np.mean([r["tokens"] for r in lv]))
        acc_ci = list(hierarchical_bootstrap_ci(list(by_c.values())))
        tok_ci = list(hierarchical_bootstrap_ci(list(by_t.values())))
        out[m] = {
            "problems": len(lv),
            "live_accuracy": live_acc,
            "live_accuracy_ci": list(bootstrap_ci([float(r["correct"]) for r in lv])),
            "replay_accuracy": float(np.mean([np.mean(v) for v in by_c.values()])),
            "replay_accuracy_ci": acc_ci,
            "live_tokens": live_tok,
            "live_tokens_ci": list(bootstrap_ci([float(r["tokens"]) for r in lv])),
            "replay_tokens": float(np.mean([np.mean(v) for v in by_t.values()])),
            "replay_tokens_ci": tok_ci,
            "accuracy_within_replay_ci": acc_ci[0] <= live_acc <= acc_ci[1],
            "tokens_within_replay_ci": tok_ci[0] <= live_tok <= tok_ci[1],
        }
    return out


def curves(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    from ttscale.evals.metrics import hierarchical_bootstrap_ci

    out: dict[str, list[dict[str, Any]]] = {}
    for m in sorted({r["method"] for r in rows}):
        pts = []
        for b in sorted({r["budget_tokens"] for r in rows if r["method"] == m}):
            sel = [r for r in rows if r["method"] == m and r["budget_tokens"] == b]
            by: dict[str, list[float]] = defaultdict(list)
            for r in sel:
                by[r["problem_id"]].append(float(r["correct"]))
            pts.append(
                {
                    "budget": b,
                    "accuracy": float(np.mean([np.mean(v) for v in by.values()])),
                    "ci": list(hierarchical_bootstrap_ci(list(by.values()))),
                    "eflops": float(np.mean([r["eflops"] for r in sel])),
                    "tokens": float(np.mean([r["tokens"] for r in sel])),
                    "errors": sum(1 for r in sel if r["error"]),
                }
            )
        out[m] = pts
    return out


def matched_ratio(
    auto: list[dict[str, Any]], bon: list[dict[str, Any]], cost: str = "eflops"
) -> dict[str, Any]:
    """uniform ``cost`` (eFLOPs or tokens) at auto's best accuracy (log-interpolated on the
    uniform curve) / auto's ``cost`` there."""
    best = max(auto, key=lambda p: (p["accuracy"], -p[cost]))
    pts = sorted((p[cost], p["accuracy"]) for p in bon)
    reach = [i for i, (_, a) in enumerate(pts) if a >= best["accuracy"]]
    if not reach:
        return {
            "ratio": pts[-1][0] / best[cost],
            "bound": "lower",
            "auto": best,
            "bon_acc": max(a for _, a in pts),
        }
    i = reach[0]
    if i == 0:
        f = pts[0][0]
    else:
        (f0, a0), (f1, a1) = pts[i - 1], pts[i]
        t = (best["accuracy"] - a0) / (a1 - a0) if a1 != a0 else 1.0
        f = math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0)))
    return {
        "ratio": f / best[cost],
        "bound": "exact" if i else "upper",
        "auto": best,
        "bon_acc": best["accuracy"],
    }


def plot(cv: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, cost, label in (
        (axes[0], "eflops", "mean eFLOPs per problem (spent)"),
        (axes[1], "tokens", "mean generated tokens per problem (spent)"),
    ):
        for m, pts in cv.items():
            pts = sorted(pts, key=lambda p: p[cost])  # a curve, even where cost is not monotone
            xs = [p[cost] for p in pts]
            ax.plot(
                xs,
                [p["accuracy"] for p in pts],
                marker="o",
                label=m,
                lw=2.5 if m in ("auto", "bon") else 1.2,
            )
            lo, hi = [p["ci"][0] for p in pts], [p["ci"][1] for p in pts]
            ax.fill_between(xs, lo, hi, alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (95% CI: problems x orders)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=Path, required=True, help="held-out MATH-500 pool")
    ap.add_argument("--calibration-pool", type=Path, required=True, help="math_train200 pool")
    ap.add_argument("--orders", type=int, default=5)
    ap.add_argument("--live", type=int, default=0, help="also run N problems live (vLLM)")
    ap.add_argument("--live-budget", type=int, default=GREEDY_TOKENS * 4)
    ap.add_argument(
        "--round-size",
        type=int,
        default=4,
        help="samples auto draws per engine call between saturation checks (0: all n at once)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "allocator_pool")
    args = ap.parse_args(argv)

    from ttscale.host import host_info
    from ttscale.pools import load_pool
    from ttscale.strategies.allocation.splits import assert_disjoint

    t0 = time.perf_counter()
    pool, train = load_pool(args.pool), load_pool(args.calibration_pool)
    assert_disjoint(
        [{"id": p.id, "problem": p.problem} for p in train.problems.values()],
        [{"id": p.id, "problem": p.problem} for p in pool.problems.values()],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    budgets = [GREEDY_TOKENS * m for _, m in LEVELS if m <= train.sampling.k]
    policy = asyncio.run(
        calibrate(
            train,
            Path(f"{args.out}_calibration_rows.jsonl"),
            budgets,
            Path(f"{args.out}_policy.json"),
            args.round_size or None,
        )
    )
    print(f"fitted {policy} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = asyncio.run(evaluate(pool, policy, args.orders))
    Path(f"{args.out}_rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    confirm = None
    if args.live:
        live_rows = asyncio.run(
            live(pool, policy, args.live, args.live_budget, Path(f"{args.out}_live_rows.jsonl"))
        )
        confirm = agreement(live_rows, rows)
        print(json.dumps({"live_vs_replay": confirm}, indent=2), flush=True)
    cv = curves(rows)
    matches = {
        f"{m}_{cost}": matched_ratio(cv[m], cv["bon"], cost)
        for m in ("auto", "auto_batch", "bon_adaptive", "bon_gated", "bon_gated50")
        if m in cv
        for cost in ("eflops", "tokens")
    }
    match = matches["auto_eflops"]
    k = pool.sampling.k
    top = max(p["budget"] for p in cv["bon"])
    bon_top = next(p for p in cv["bon"] if p["budget"] == top)
    gating = {}
    for tag in ("bon_gated", "bon_gated50"):
        gated = next((p for p in cv.get(tag, []) if p["budget"] == top), None)
        if gated:
            gating[tag] = {
                "gated": gated,
                "token_saving": 1 - gated["tokens"] / bon_top["tokens"],
                "acc_change": gated["accuracy"] - bon_top["accuracy"],
            }
    saving = gating["bon_gated"]["token_saving"] if "bon_gated" in gating else math.nan
    info = host_info()
    summary = {
        "pool": pool.name,
        "calibration_pool": train.name,
        "n_problems": len(pool.problems),
        "orders": args.orders,
        "isa": info.isa,
        "policy": str(policy),
        "curves": cv,
        "auto_round_size": args.round_size or "n",
        "matched": match,
        "matched_all": matches,
        "gating": {"budget": top, "k": k, "ungated": bon_top, **gating},
        "live_vs_replay": confirm,
        "seconds": time.perf_counter() - t0,
    }
    Path(f"{args.out}.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    plot(
        cv,
        Path(f"{args.out}.png"),
        f"replay on {pool.name} ({len(pool.problems)} held-out MATH-500 problems, "
        f"{args.orders} orders), policy fitted on {train.name}, isa={info.isa}",
    )
    for m, pts in cv.items():
        for p in pts:
            print(
                f"{m:14s} B={p['budget']:5d} acc={p['accuracy']:.3f} {p['ci']} "
                f"eflops={p['eflops']:.3g} tokens={p['tokens']:.0f}",
                flush=True,
            )
    for name, m in matches.items():
        print(
            f"matched {name:22s} ratio={m['ratio']:.3g} ({m['bound']}) at "
            f"acc={m['auto']['accuracy']:.3f}",
            flush=True,
        )
    print(
        f"RESULT compute_ratio_at_matched_acc={match['ratio']:.3g} "
        f"token_ratio_at_matched_acc={matches['auto_tokens']['ratio']:.3g} "
        f"auto_acc={match['auto']['accuracy']:.3f} bon_acc={match['bon_acc']:.3f} "
        f"bound={match['bound']} gating_token_saving={saving:.3f} "
        f"n_problems={len(pool.problems)} isa={info.isa}"
    )


if __name__ == "__main__":
    main()
