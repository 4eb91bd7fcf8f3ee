"""ETS vs beam search (and REBASE) at the same width, on the embedded model.

On a fixed slice of MATH-train problems (levels 3-5 by default, round-robin by level from
``math_train200.jsonl``, the same slice rule as ``benchmarks/strategies.py``) each strategy
samples ``--width`` continuations per step under the same token budget, with the LLM judge
on the policy model as step verifier (``DEFAULT_STEP_TEMPLATE``, one judgement per node):

- ``beam_search``: ``n = width`` samples per step, ``beam_width`` children per kept prefix;
- ``ets``: ``width`` samples per step, REBASE allocation over the leaves an ILP keeps
  (``lambda_kv``, ``lambda_div``);
- ``rebase``: the same tree search with ``lambda_kv = lambda_div = 0`` (no pruning).

Per run: accuracy (math-verify against gold), KV held per step recomputed from each trace
in the same way for every strategy (``ttscale.evals.trace.kv_profile``: distinct tokens of
the prompt, the expanded paths and the new samples, identical siblings once = a perfect
prefix-sharing cache; and the no-sharing count), the engine's prefix-cache hit rate on the
policy's requests (``cached_tokens / prompt_tokens`` of the trace), generated tokens and
throughput. Each strategy runs all problems of the slice at once through one
``CoalescingGenerator`` (as a server under load would), so vLLM batches across problems the
same way for every strategy; throughput = the group's generated tokens (judge included) /
its wall seconds.

Resumable: each (problem, strategy) appends one JSON row to ``--rows``; rows already there
are skipped. Run under the CPU lock::

    flock /tmp/ttscale-cpu.lock .venv/bin/python benchmarks/tree_search.py --problems 6 \
        --width 8 --budget 2500    # the committed results
    .venv/bin/python benchmarks/tree_search.py --report    # tables + RESULT line, no model

Writes ``benchmarks/results/tree_search.{json,md}`` (``--backend scripted``: a plumbing dry
run without the model, written to ``tree_search_scripted.*``); last line:
``RESULT kv_reduction=<beam_kv/ets_kv> throughput_ratio=<ets/beam> acc_ets=<> acc_beam=<>``
(KV: mean over problems of the per-step mean of distinct KV tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ttscale import Budget, Problem
from ttscale.evals.datasets import level_round_robin
from ttscale.evals.trace import kv_profile
from ttscale.host import host_info
from ttscale.strategies import ETS, BeamSearch
from ttscale.verifiers.answers import answers_equal

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ORDER = ["beam_search", "ets", "rebase"]


def configs(args: argparse.Namespace) -> dict[str, Any]:
    """Same width, step and solution caps for every strategy."""
    step = dict(
        step_tokens=args.step_tokens, max_tokens=args.max_tokens, min_step_tokens=32, seed=args.seed
    )
    tree = dict(width=args.width, expansions=args.max_steps, **step)
    return {
        "beam_search": BeamSearch(
            n=args.width, beam_width=args.beam_width, max_steps=args.max_steps, **step
        ),
        "ets": ETS(lambda_kv=args.lambda_kv, lambda_div=args.lambda_div, **tree),
        "rebase": ETS(lambda_kv=0.0, lambda_div=0.0, **tree),
    }


def done_keys(rows_path: Path) -> set[tuple[str, str]]:
    if not rows_path.exists():
        return set()
    rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()]
    return {(r["problem_id"], r["strategy"]) for r in rows}


def measure(res: Any, prompt_len: int) -> dict[str, Any]:
    """KV and cache figures of one run, from its trace (the same way for every strategy)."""
    data = res.to_dict()
    prof = kv_profile(data, prompt_len=prompt_len)
    kv = [p["kv_tree"] for p in prof] or [0]
    flat = [p["kv_no_sharing"] for p in prof] or [0]
    prompt = sum(p["prompt_tokens"] for p in prof)
    cached = sum(rec.get("cached_tokens") or 0 for rec in data["trace"])
    return {
        "kv_peak": max(kv),
        "kv_mean": statistics.mean(kv),
        "kv_no_sharing_peak": max(flat),
        "kv_no_sharing_mean": statistics.mean(flat),
        "policy_prompt_tokens": prompt,
        "policy_cached_tokens": cached,
        "policy_hit_rate": cached / prompt if prompt else None,
        "policy_generated_tokens": sum(rec.get("generated_tokens", 0) for rec in data["trace"]),
        "steps": len(prof),
        "kv_steps": kv,
    }


async def run_one(item, name, strat, args, backend, judge, rows_path, traces) -> int:
    """One (problem, strategy): run, grade, append its row; returns generated tokens."""
    problem = Problem(item["problem"], id=item["id"])
    prompt_len = len(backend.render(problem))
    t0 = time.perf_counter()
    res = await strat.run(problem, backend, judge, Budget(tokens=args.budget))
    wall = time.perf_counter() - t0
    led = res.ledger
    row = {
        "problem_id": item["id"],
        "level": item["level"],
        "subject": item["subject"],
        "strategy": name,
        "width": args.width,
        "budget_tokens": args.budget,
        "answer": res.answer,
        "gold": item["answer"],
        "correct": res.answer is not None and answers_equal(res.answer, item["answer"]),
        "coverage": any(
            c.answer is not None and answers_equal(c.answer, item["answer"]) for c in res.candidates
        ),
        "generated_tokens": led.generated_tokens,
        "prompt_tokens": led.prompt_tokens,
        "cached_tokens": led.cached_tokens,
        "engine_calls": led.engine_calls,
        "verifier_calls": led.verifier_calls,
        "rollouts": led.rollouts,
        "wall_seconds": round(wall, 3),
        "engine_seconds": round(led.engine_seconds, 3),
        "stop_reason": res.extras.get("stop_reason"),
        "prompt_len": prompt_len,
        "solver": res.extras.get("solver"),
        "engine": led.engine,
        **measure(res, prompt_len),
    }
    with rows_path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    if traces is not None:
        traces.mkdir(parents=True, exist_ok=True)
        safe = item["id"].replace("/", "_").replace(".json", "")
        (traces / f"{safe}.{name}.json").write_text(res.to_json())
    print(
        f"{item['id']} L{item['level']} {name:12s} ans={res.answer!r} "
        f"gold={item['answer']!r} ok={row['correct']} tok={led.generated_tokens} "
        f"kv_mean={row['kv_mean']:.0f} kv_peak={row['kv_peak']} "
        f"hit={row['policy_hit_rate'] or 0:.2f} wall={wall:.0f}s",
        flush=True,
    )
    return led.generated_tokens


async def run_group(items, name, args, backend, judge, rows_path, traces) -> None:
    """Every pending problem for one strategy, concurrently: their engine calls meet in the
    ``CoalescingGenerator`` so vLLM batches across problems, the same way for every
    strategy. The group's wall time and generated tokens give the strategy's throughput."""
    strat = configs(args)[name]
    t0 = time.perf_counter()
    tokens = await asyncio.gather(
        *(run_one(it, name, strat, args, backend, judge, rows_path, traces) for it in items)
    )
    wall = time.perf_counter() - t0
    group = {
        "strategy": name,
        "problems": [it["id"] for it in items],
        "wall_seconds": round(wall, 3),
        "generated_tokens": sum(tokens),
        "isa": host_info().isa,
    }
    with groups_path(rows_path).open("a") as f:
        f.write(json.dumps(group) + "\n")
    print(f"== {name}: {len(items)} problems in {wall:.0f} s ({sum(tokens) / wall:.1f} tok/s)")


def groups_path(rows_path: Path) -> Path:
    return rows_path.with_name(rows_path.stem + "_groups.jsonl")


def group_throughput(rows_path: Path, strategy: str, ids: set[str]) -> float | None:
    """Generated tokens / wall seconds over the strategy's groups that ran only ``ids``."""
    path = groups_path(rows_path)
    if not path.exists():
        return None
    gs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    gs = [g for g in gs if g["strategy"] == strategy and set(g["problems"]) <= ids]
    wall = sum(g["wall_seconds"] for g in gs)
    return sum(g["generated_tokens"] for g in gs) / wall if wall else None


def report(rows_path: Path, ids: list[str], out_stem: str, results: Path = RESULTS) -> None:
    rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["problem_id"] in ids]
    info = host_info()
    per = {s: {r["problem_id"] for r in rows if r["strategy"] == s} for s in ORDER}
    present = [s for s in ORDER if per[s]]
    common = set.intersection(*(per[s] for s in present)) if present else set()
    table: dict[str, dict[str, Any]] = {}
    for s in present:
        rs = [r for r in rows if r["strategy"] == s and r["problem_id"] in common]
        if not rs:
            continue
        prompt = sum(r["policy_prompt_tokens"] for r in rs)
        table[s] = {
            "n": len(rs),
            "acc": sum(r["correct"] for r in rs) / len(rs),
            "coverage": sum(r["coverage"] for r in rs) / len(rs),
            "kv_mean": statistics.mean(r["kv_mean"] for r in rs),
            "kv_peak": statistics.mean(r["kv_peak"] for r in rs),
            "kv_no_sharing_mean": statistics.mean(r["kv_no_sharing_mean"] for r in rs),
            "hit_rate": sum(r["policy_cached_tokens"] for r in rs) / prompt if prompt else None,
            "tokens": statistics.mean(r["generated_tokens"] for r in rs),
            "policy_tokens": statistics.mean(r["policy_generated_tokens"] for r in rs),
            "throughput": group_throughput(rows_path, s, common),
            "wall_s": statistics.mean(r["wall_seconds"] for r in rs),
            "calls": statistics.mean(r["engine_calls"] for r in rs),
        }
    width = sorted({r["width"] for r in rows}) or ["?"]
    backend = sorted({(r.get("engine") or {}).get("backend", "?") for r in rows})
    summary = {
        "host": {"cpu": info.cpu_model, "isa": info.isa, "cores": info.cores},
        "problems": sorted(common),
        "width": width,
        "backend": backend,
        "table": table,
    }
    md = [
        "# ETS vs beam search at the same width",
        "",
        f"Host: {info.cpu_model} ({info.isa}, {info.cores} cores). Backend: {backend}; "
        f"width {width}; verifier: LLM judge on the policy model; {len(common)} problems.",
        "",
        "| strategy | acc | coverage | KV mean | KV peak | KV no-sharing | cache hit | "
        "gen tokens | policy tokens | tok/s | wall s | calls |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, t in table.items():
        hit = "-" if t["hit_rate"] is None else f"{t['hit_rate']:.2f}"
        tps = "-" if t["throughput"] is None else f"{t['throughput']:.1f}"
        md.append(
            f"| {s} | {t['acc']:.3f} ({round(t['acc'] * t['n'])}/{t['n']}) | "
            f"{t['coverage']:.2f} | {t['kv_mean']:.0f} | {t['kv_peak']:.0f} | "
            f"{t['kv_no_sharing_mean']:.0f} | {hit} | {t['tokens']:.0f} | "
            f"{t['policy_tokens']:.0f} | {tps} | {t['wall_s']:.0f} | {t['calls']:.1f} |"
        )
    md += [
        "",
        "KV: distinct tokens a perfect prefix-sharing cache holds per step (prompt, "
        "expanded paths, new samples; identical siblings once), mean over steps then over "
        "problems; peak = per-problem maximum, averaged. KV no-sharing: every sample holding "
        "its own sequence. Cache hit: the engine's cached/prompt tokens on the policy's "
        "requests. tok/s: all generated tokens (judge included) / wall time of the strategy's "
        "run over all problems at once; wall s: per problem, inside that concurrent run. "
        "coverage: some candidate was right.",
        "",
    ]
    beam, ets = table.get("beam_search"), table.get("ets")

    def ratio(a: float | None, b: float | None) -> float:
        return a / b if a and b else float("nan")

    kv_red = ratio(beam and beam["kv_mean"], ets and ets["kv_mean"])
    tp = ratio(ets and ets["throughput"], beam and beam["throughput"])
    summary.update(
        kv_reduction=kv_red,
        throughput_ratio=tp,
        kv_peak_reduction=ratio(beam and beam["kv_peak"], ets and ets["kv_peak"]),
    )
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{out_stem}.json").write_text(json.dumps(summary, indent=2))
    (results / f"{out_stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    nan = float("nan")
    print(
        f"RESULT kv_reduction={kv_red:.3f} throughput_ratio={tp:.3f} "
        f"acc_ets={(ets or {}).get('acc', nan):.3f} acc_beam={(beam or {}).get('acc', nan):.3f} "
        f"kv_peak_reduction={summary['kv_peak_reduction']:.3f} "
        f"acc_rebase={table.get('rebase', {}).get('acc', nan):.3f} n_problems={len(common)} "
        f"width={','.join(map(str, width))} isa={info.isa} backend={','.join(backend)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="math_train200", help="packaged dataset name or JSONL path")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--levels", default="3,4,5")
    ap.add_argument("--width", type=int, default=8, help="samples per step, every strategy")
    ap.add_argument("--beam-width", type=int, default=2, help="beam search: children per beam")
    ap.add_argument("--lambda-kv", type=float, default=1.0)
    ap.add_argument("--lambda-div", type=float, default=1.5)
    ap.add_argument("--budget", type=int, default=8000, help="token cap per run (judge incl.)")
    ap.add_argument("--max-tokens", type=int, default=512, help="cap per solution")
    ap.add_argument("--step-tokens", type=int, default=192)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default=",".join(ORDER))
    ap.add_argument("--results", type=Path, default=RESULTS, help="where rows/md/json go")
    ap.add_argument(
        "--rows",
        type=Path,
        default=None,
        help="rows JSONL (default RESULTS/tree_search[_scripted]_rows.jsonl)",
    )
    ap.add_argument(
        "--traces",
        type=Path,
        default=None,
        help="also save each Result JSON here (for `ttscale trace show`)",
    )
    ap.add_argument("--only", type=int, default=None, help="run only problem INDEX of the slice")
    ap.add_argument("--report", action="store_true", help="only build tables from --rows")
    ap.add_argument(
        "--backend",
        default="vllm",
        choices=["vllm", "scripted"],
        help="scripted: a plumbing dry run without the model",
    )
    args = ap.parse_args()
    args.strategies = set(args.strategies.split(","))
    stem = "tree_search" if args.backend == "vllm" else "tree_search_scripted"
    rows_path = args.rows or args.results / f"{stem}_rows.jsonl"
    items = level_round_robin(args.data, args.problems, [int(x) for x in args.levels.split(",")])
    ids = [it["id"] for it in items]
    if not args.report:
        from ttscale.backends import CoalescingGenerator, ScriptedBackend, VLLMBackend
        from ttscale.verifiers import LLMJudge
        from ttscale.verifiers.llm_judge import DEFAULT_STEP_TEMPLATE

        engine = VLLMBackend(seed=0) if args.backend == "vllm" else ScriptedBackend()
        backend = CoalescingGenerator(engine)
        judge = LLMJudge(backend, mode="outcome", outcome_template=DEFAULT_STEP_TEMPLATE)
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        todo = items if args.only is None else [items[args.only]]
        for name in ORDER:
            if name not in args.strategies:
                continue
            done = done_keys(rows_path)
            pending = [it for it in todo if (it["id"], name) not in done]
            if pending:
                asyncio.run(run_group(pending, name, args, backend, judge, rows_path, args.traces))
        asyncio.run(backend.close())
        if args.only is not None:
            return
    if not rows_path.exists():
        sys.exit(f"no rows at {rows_path}; run without --report first")
    report(rows_path, ids, stem, args.results)


if __name__ == "__main__":
    main()
