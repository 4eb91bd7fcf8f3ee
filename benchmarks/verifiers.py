"""Verifier quality on labelled candidates of the embedded model (MATH train, levels 1-4).

1. Sample ``--samples`` solutions per problem for ``--per-level`` problems of each level
   1-4 of ``math_train200.jsonl`` (stratified, fixed seeds) with the embedded model on
   VLLMBackend (one load), label each with math-verify against the gold answer, and cache
   them as JSONL (``benchmarks/results/verifier_candidates.jsonl``). The cache is resumable:
   problems already there (same sampling settings) are not sampled again. Judge scores are
   cached the same way (``verifier_candidates.judge.jsonl``).
2. Score every candidate with each embedded verifier: the LLM judge (outcome mode) on the
   same model; the implicit PRM when a policy model other than the reference is available
   (``--implicit-policy``; the 1.5B model is optional and not installed by default); the
   self-consistency agreement (fraction of the candidate's problem-mates with an equivalent
   answer); a seeded random score.
3. Report per verifier: AUROC (correct vs wrong candidates; 95% CI by bootstrapping whole
   problems), the false-positive rate at the threshold that keeps 50% of the correct
   candidates, best-of-N accuracy (highest-scoring candidate per problem) and
   weighted-vote accuracy, against majority vote and pass@N.
   Per-candidate scores go to ``benchmarks/results/verifier_scores.jsonl``, the table to
   ``verifiers.json``.

    LD_PRELOAD=/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4:.venv/lib/libiomp5.so \\
      .venv/bin/python benchmarks/verifiers.py > benchmarks/results/verifiers.log 2>&1

    # pipeline smoke test without a model (toy answers, seconds):
    .venv/bin/python benchmarks/verifiers.py --backend scripted --per-level 1 --samples 2

With ``--pool POOL --train-pool TRAIN_POOL`` it runs the pool protocol instead
(``benchmarks/verifiers_pool.py``: confidence statistics, the probe, a larger judge, by exact
replay on the held-out MATH-500 pool).

Last line: ``RESULT judge_auroc=<> implicit_auroc=<or na> agreement_auroc=<> random_auroc=<>
majority_acc=<> judge_bon_acc=<> n_problems=<> n_candidates=<> isa=<>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.budget import Budget, Ledger
from ttscale.host import host_info
from ttscale.protocols import Generator
from ttscale.types import GenerationRequest, Problem
from ttscale.verifiers import (
    ImplicitPRM,
    LLMJudge,
    aggregate,
    answers_equal,
    extract_answer,
    grade,
    vote,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "math_train200.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "verifier_candidates.jsonl"


# -- metrics -------------------------------------------------------------------------------
def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U); ties count one half."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_half_recall(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """FPR at the highest threshold that keeps >= 50% of the correct candidates (score >= t)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if not y.any() or y.all():
        return float("nan")
    pos = np.sort(s[y])[::-1]
    t = pos[math.ceil(len(pos) / 2) - 1]
    return float((s[~y] >= t).mean())


def auroc_ci(
    scores: Sequence[float],
    labels: Sequence[bool],
    groups: Sequence[str],
    reps: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of AUROC, resampling whole problems (candidates of
    one problem are correlated)."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    blocks = list(by.values())
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        idx = np.concatenate([blocks[k] for k in rng.integers(0, len(blocks), len(blocks))])
        v = auroc(s[idx], y[idx])
        if not math.isnan(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def best_of_n_acc(rows: list[dict[str, Any]], scores: Sequence[float]) -> float:
    """Share of problems whose highest-scoring candidate is correct (first one on ties)."""
    best: dict[str, tuple[float, bool]] = {}
    for row, sc in zip(rows, scores, strict=True):
        pid = row["problem_id"]
        if pid not in best or sc > best[pid][0]:
            best[pid] = (sc, row["correct"])
    return sum(ok for _, ok in best.values()) / len(best)


def vote_acc(rows: list[dict[str, Any]], scores: Sequence[float] | None) -> float:
    """Share of problems whose (weighted) vote winner grades correct."""
    groups = _by_problem(rows)
    hits = 0
    for idx in groups.values():
        answers = [rows[i]["answer"] for i in idx]
        winner = vote(answers, None if scores is None else [scores[i] for i in idx])
        hits += winner is not None and grade(winner, rows[idx[0]]["gold"])
    return hits / len(groups)


def _by_problem(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row["problem_id"]].append(i)
    return groups


# -- data and sampling ---------------------------------------------------------------------
def load_problems(path: Path, per_level: int, levels: Sequence[int], seed: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    chosen = []
    for level in levels:
        pool = sorted((r for r in rows if int(r["level"]) == level), key=lambda r: r["id"])
        if len(pool) < per_level:
            sys.exit(f"only {len(pool)} level-{level} problems in {path}; lower --per-level")
        chosen += rng.sample(pool, per_level)
    return chosen


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """Steps as BestOfN sends them to verifiers: non-empty chunks between delimiters."""
    return [s for s in text.split(delimiter) if s.strip()]


async def sample(
    gen: Generator,
    problems: list[dict],
    args: argparse.Namespace,
    out: Path,
    config: dict[str, Any],
) -> list[dict[str, Any]]:
    """Cached, resumable sampling: one engine call per chunk of problems, appended to ``out``."""
    cached: dict[str, list[dict]] = defaultdict(list)
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            if row.get("config") == config:
                cached[row["problem_id"]].append(row)
    todo = [p for p in problems if len(cached[p["id"]]) < args.samples]
    print(
        f"candidates: {len(problems) - len(todo)} problems cached in {out}, {len(todo)} to sample",
        flush=True,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    t0, generated = time.perf_counter(), 0
    for c in range(0, len(todo), args.chunk):
        chunk = todo[c : c + args.chunk]
        reqs = [
            GenerationRequest(
                gen.render(Problem(p["problem"])),
                n=args.samples,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                seed=args.seed + problems.index(p),
            )
            for p in chunk
        ]
        outs = await gen.generate(reqs)
        new = []
        for p, req, o in zip(chunk, reqs, outs, strict=True):
            cached[p["id"]] = []  # a partial earlier write is replaced whole
            for j, comp in enumerate(o.completions):
                row = {
                    "problem_id": p["id"],
                    "level": int(p["level"]),
                    "subject": p.get("subject"),
                    "problem": p["problem"],
                    "gold": p["answer"],
                    "sample": j,
                    "seed": req.seed,
                    "seeding": gen.seeding,
                    "text": comp.text,
                    "answer": extract_answer(comp.text),
                    "tokens": comp.num_tokens,
                    "finish_reason": comp.finish_reason,
                    "correct": grade(comp.text, p["answer"]),
                    "config": config,
                }
                cached[p["id"]].append(row)
                new.append(row)
                generated += comp.num_tokens
        with out.open("a") as f:
            for row in new:
                f.write(json.dumps(row) + "\n")
        dt = time.perf_counter() - t0
        done = min(c + args.chunk, len(todo))
        print(
            f"  sampled {done}/{len(todo)} problems, {generated} tokens, {dt:.0f} s "
            f"({generated / max(dt, 1e-9):.1f} tok/s)",
            flush=True,
        )
    return [row for p in problems for row in cached[p["id"]][: args.samples]]


# -- verifiers -----------------------------------------------------------------------------
async def judge_scores(
    gen: Generator,
    rows: list[dict],
    mode: str,
    agg: str,
    cache: Path,
    config: dict[str, Any],
    per_call: int,
) -> tuple[list[float], Ledger]:
    """Judge scores, cached per candidate in ``cache`` and computed ``per_call`` candidates
    per engine call, so a killed run resumes where it stopped (judging every candidate costs
    about as much CPU as sampling them)."""
    judge = LLMJudge(gen, mode=mode)  # type: ignore[arg-type]
    key = {
        **config,
        "judge_mode": mode,
        "judge_template": judge.template,
        "judge_system": judge.system_prompt,
        "top_k": judge.top_k,
    }
    done: dict[tuple[str, int], list[float]] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            row = json.loads(line)
            if row.get("key") == key:
                done[(row["problem_id"], row["sample"])] = row["step_scores"]
    todo = [r for r in rows if (r["problem_id"], r["sample"]) not in done]
    print(f"  judge ({mode}): {len(rows) - len(todo)} cached, {len(todo)} to score", flush=True)
    ledger = Ledger(Budget())
    t0 = time.perf_counter()
    for b in range(0, len(todo), per_call):
        chunk = todo[b : b + per_call]
        steps = [split_steps(r["text"]) for r in chunk]
        raw = await judge.score([Problem(r["problem"]) for r in chunk], steps, ledger=ledger)
        with cache.open("a") as f:
            for r, sc in zip(chunk, raw, strict=True):
                done[(r["problem_id"], r["sample"])] = sc
                f.write(
                    json.dumps(
                        {
                            "problem_id": r["problem_id"],
                            "sample": r["sample"],
                            "step_scores": sc,
                            "key": key,
                        }
                    )
                    + "\n"
                )
        print(
            f"    judged {b + len(chunk)}/{len(todo)}: {ledger.prompt_tokens} prompt tokens, "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return [aggregate(done[(r["problem_id"], r["sample"])], agg) for r in rows], ledger


async def implicit_scores(
    policy: Generator, reference: Generator, rows: list[dict], per_call: int
) -> list[float]:
    """Outcome implicit-PRM scores, ``per_call`` candidates per engine call (HFBackend pads a
    whole call into one batch, so 192 long candidates at once would not fit in memory)."""
    prm = ImplicitPRM(policy, reference, mode="outcome")
    out: list[float] = []
    for b in range(0, len(rows), per_call):
        chunk = rows[b : b + per_call]
        steps = [split_steps(r["text"]) for r in chunk]
        raw = await prm.score([Problem(r["problem"]) for r in chunk], steps)
        out += [aggregate(s, "last") for s in raw]
    return out


def implicit_subset(rows: list[dict], problems: int) -> list[int]:
    """Row indices of ``problems`` problems (all if 0): those with a correct candidate first,
    so the subset's AUROC has positives, then the rest in slice order."""
    groups = _by_problem(rows)
    if problems <= 0 or problems >= len(groups):
        return list(range(len(rows)))
    order = sorted(groups, key=lambda p: not any(rows[i]["correct"] for i in groups[p]))
    keep = set(order[:problems])
    return [i for i, r in enumerate(rows) if r["problem_id"] in keep]


def agreement_scores(rows: list[dict]) -> list[float]:
    """Fraction of a candidate's problem-mates whose answer is equivalent to its own."""
    scores = [0.0] * len(rows)
    for idx in _by_problem(rows).values():
        for i in idx:
            a = rows[i]["answer"]
            mates = [j for j in idx if j != i]
            if a is None or not mates:
                continue
            same = sum(
                rows[j]["answer"] is not None and answers_equal(a, rows[j]["answer"]) for j in mates
            )
            scores[i] = same / len(mates)
    return scores


def _fmt(x: float | None) -> str:
    return "na" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _make_backend(args: argparse.Namespace) -> Generator:
    from ttscale.backends import make_backend

    if args.backend == "scripted":
        return make_backend("scripted")
    return make_backend("vllm", seed=args.seed, max_model_len=args.max_model_len)


def main() -> None:
    if "--pool" in sys.argv[1:]:  # the pool protocol: benchmarks/verifiers_pool.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from verifiers_pool import main as pool_main

        pool_main(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=None, help=f"candidate cache ({DEFAULT_OUT})")
    ap.add_argument("--backend", choices=("vllm", "scripted"), default="vllm")
    ap.add_argument("--per-level", type=int, default=6)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=4, help="problems per sampling call")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument(
        "--judge-chunk",
        type=int,
        default=16,
        help="candidates per judge engine call (scores are cached after each)",
    )
    ap.add_argument(
        "--judge-steps",
        action="store_true",
        help="also run the per-step judge (about twice the judge cost)",
    )
    ap.add_argument(
        "--implicit-problems",
        type=int,
        default=0,
        help="score the implicit PRM on this many problems only (those with a "
        "correct candidate first; 0 = all): the 1.5B policy costs ~3x the "
        "judge on CPU. Every verifier is then also reported on that subset.",
    )
    ap.add_argument(
        "--implicit-policy",
        default=None,
        help="embedded model name or HF dir for the implicit PRM policy (e.g. "
        "qwen2.5-coder-1.5b-instruct-q4km); the reference is the sampler",
    )
    args = ap.parse_args()
    out = args.out or (
        DEFAULT_OUT
        if args.backend == "vllm"
        else Path(tempfile.gettempdir()) / "ttscale_verifier_candidates.jsonl"
    )

    t_start = time.perf_counter()
    problems = load_problems(args.data, args.per_level, args.levels, args.seed)
    gen = _make_backend(args)
    profile = gen.profile()
    config = {
        "backend": args.backend,
        "model": profile.get("model"),
        "samples": args.samples,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
    }
    print(f"engine: {json.dumps(profile)}", flush=True)
    rows = asyncio.run(sample(gen, problems, args, out, config))
    labels = [bool(r["correct"]) for r in rows]
    print(
        f"labelled {len(rows)} candidates of {len(problems)} problems: "
        f"{sum(labels)} correct ({sum(labels) / len(rows):.1%}); "
        f"{sum(r['finish_reason'] == 'length' for r in rows)} hit max_tokens",
        flush=True,
    )

    results: dict[str, dict[str, Any]] = {}
    per_candidate: dict[str, list[float]] = {}

    def metrics(sub: list[dict], scores: list[float]) -> dict[str, Any]:
        labs = [bool(r["correct"]) for r in sub]
        return {
            "auroc": auroc(scores, labs),
            "auroc_ci95": auroc_ci(scores, labs, [r["problem_id"] for r in sub], seed=args.seed),
            "fpr_at_tpr50": fpr_at_half_recall(scores, labs),
            "bon_acc": best_of_n_acc(sub, scores),
            "weighted_acc": vote_acc(sub, scores),
        }

    def report(name: str, scores: list[float], seconds: float, note: str = "") -> None:
        per_candidate[name] = scores
        results[name] = {**metrics(rows, scores), "seconds": seconds, "note": note}
        print(f"  {name}: auroc={_fmt(results[name]['auroc'])} ({seconds:.0f} s)", flush=True)

    t0 = time.perf_counter()
    judge_cache = out.with_name(out.stem + ".judge.jsonl")
    judge, ledger = asyncio.run(
        judge_scores(gen, rows, "outcome", "last", judge_cache, config, args.judge_chunk)
    )
    report(
        "llm_judge (outcome)",
        judge,
        time.perf_counter() - t0,
        f"{ledger.prompt_tokens} prompt tokens, {ledger.cached_tokens} cached",
    )
    if args.judge_steps:
        t0 = time.perf_counter()
        step_min, _ = asyncio.run(
            judge_scores(gen, rows, "step", "min", judge_cache, config, args.judge_chunk)
        )
        report("llm_judge (step, min)", step_min, time.perf_counter() - t0)

    implicit: list[float] | None = None
    if args.implicit_policy:
        from ttscale.backends import make_backend

        t0 = time.perf_counter()
        if args.backend == "scripted":  # smoke test: a policy that prefers digits
            policy = make_backend(
                "scripted", logprob_fn=lambda ids, i: -0.1 if 51 <= ids[i] <= 60 else -0.5
            )
        else:
            policy = make_backend(
                "hf", model=args.implicit_policy, max_model_len=args.max_model_len
            )
        sub_idx = implicit_subset(rows, args.implicit_problems)
        implicit_sub = asyncio.run(
            implicit_scores(policy, gen, [rows[i] for i in sub_idx], args.samples)
        )
        seconds = time.perf_counter() - t0
        if len(sub_idx) == len(rows):
            implicit = implicit_sub
            report(
                "implicit_prm",
                implicit,
                seconds,
                f"policy {args.implicit_policy}, reference = sampler",
            )
    else:
        print("  implicit_prm: not run (no --implicit-policy; the 1.5B model is optional)")

    report("agreement", agreement_scores(rows), 0.0)
    rng = np.random.default_rng(args.seed)
    report("random", rng.random(len(rows)).tolist(), 0.0)
    subset: dict[str, Any] | None = None
    if args.implicit_policy and implicit is None:  # implicit PRM on a subset only
        sub = [rows[i] for i in sub_idx]
        subset = {
            "problems": sorted({r["problem_id"] for r in sub}),
            "candidates": len(sub),
            "correct": sum(r["correct"] for r in sub),
            "implicit_seconds": seconds,
            "policy": args.implicit_policy,
            "verifiers": {},
        }
        for name, sc in per_candidate.items():
            subset["verifiers"][name] = metrics(sub, [sc[i] for i in sub_idx])
        subset["verifiers"]["implicit_prm"] = metrics(sub, implicit_sub)
        per_candidate["implicit_prm"] = [
            implicit_sub[sub_idx.index(i)] if i in sub_idx else float("nan")
            for i in range(len(rows))
        ]

    majority = vote_acc(rows, None)
    groups = _by_problem(rows)
    pass_n = sum(any(rows[i]["correct"] for i in idx) for idx in groups.values()) / len(groups)
    mean_acc = sum(labels) / len(labels)

    print()
    print(
        f"| verifier | AUROC [95% CI] | FPR @ 50% TPR | best-of-{args.samples} acc "
        f"| weighted-vote acc |"
    )
    print("|---|---|---|---|---|")
    for name, m in results.items():
        lo, hi = m["auroc_ci95"]
        print(
            f"| {name} | {_fmt(m['auroc'])} [{_fmt(lo)}, {_fmt(hi)}] | "
            f"{_fmt(m['fpr_at_tpr50'])} | {_fmt(m['bon_acc'])} | {_fmt(m['weighted_acc'])} |"
        )
    if implicit is None:
        print(
            "| implicit_prm | "
            + ("on a subset only, see below" if subset else "not run (no --implicit-policy)")
            + " | | | |"
        )
    print(f"| majority vote | | | {_fmt(majority)} | |")
    print(f"| pass@{args.samples} (oracle) | | | {_fmt(pass_n)} | |")
    print(f"| single sample (mean) | | | {_fmt(mean_acc)} | |")
    if subset:
        print()
        print(
            f"Subset scored by the implicit PRM (policy {subset['policy']}, reference = the "
            f"sampler): {len(subset['problems'])} problems, {subset['candidates']} candidates, "
            f"{subset['correct']} correct; implicit PRM took {subset['implicit_seconds']:.0f} s"
        )
        print()
        print(
            "| verifier (subset) | AUROC [95% CI] | FPR @ 50% TPR | best-of-N acc "
            "| weighted-vote acc |"
        )
        print("|---|---|---|---|---|")
        for name, m in subset["verifiers"].items():
            lo, hi = m["auroc_ci95"]
            print(
                f"| {name} | {_fmt(m['auroc'])} [{_fmt(lo)}, {_fmt(hi)}] | "
                f"{_fmt(m['fpr_at_tpr50'])} | {_fmt(m['bon_acc'])} | "
                f"{_fmt(m['weighted_acc'])} |"
            )
    print()
    print("| level | problems | candidates | correct | majority acc |")
    print("|---|---|---|---|---|")
    for level in args.levels:
        sub = [r for r in rows if r["level"] == level]
        if sub:
            n_p = len({r["problem_id"] for r in sub})
            print(
                f"| {level} | {n_p} | {len(sub)} | {sum(r['correct'] for r in sub)} | "
                f"{_fmt(vote_acc(sub, None))} |"
            )
    print()
    print(
        f"{len(problems)} problems (levels {args.levels}, {args.per_level} each) x "
        f"{args.samples} samples; {sum(labels)} correct / {len(rows) - sum(labels)} wrong; "
        f"max_tokens={args.max_tokens}, T={args.temperature}, seed={args.seed}; "
        f"seeding={gen.seeding}; total {time.perf_counter() - t_start:.0f} s"
    )

    summary = {
        "config": config,
        "engine": profile,
        "n_problems": len(problems),
        "n_candidates": len(rows),
        "n_correct": sum(labels),
        "majority_acc": majority,
        f"pass@{args.samples}": pass_n,
        "verifiers": results,
        "implicit_subset": subset,
    }
    if args.backend == "vllm":
        (out.parent / "verifiers.json").write_text(json.dumps(summary, indent=2) + "\n")
        with (out.parent / "verifier_scores.jsonl").open("w") as f:
            for i, r in enumerate(rows):
                scores = {
                    name: None if math.isnan(sc[i]) else sc[i] for name, sc in per_candidate.items()
                }
                f.write(
                    json.dumps(
                        {
                            "problem_id": r["problem_id"],
                            "sample": r["sample"],
                            "correct": r["correct"],
                            "scores": scores,
                        }
                    )
                    + "\n"
                )
    judge_m = results["llm_judge (outcome)"]
    print(
        f"RESULT judge_auroc={_fmt(judge_m['auroc'])} "
        f"implicit_auroc={_fmt(results['implicit_prm']['auroc'] if implicit else None)} "
        + (
            f"implicit_auroc_subset={_fmt(subset['verifiers']['implicit_prm']['auroc'])} "
            f"judge_auroc_subset={_fmt(subset['verifiers']['llm_judge (outcome)']['auroc'])} "
            if subset
            else ""
        )
        + f"agreement_auroc={_fmt(results['agreement']['auroc'])} "
        f"random_auroc={_fmt(results['random']['auroc'])} "
        f"majority_acc={_fmt(majority)} judge_bon_acc={_fmt(judge_m['bon_acc'])} "
        f"n_problems={len(problems)} n_candidates={len(rows)} isa={host_info().isa}"
    )


if __name__ == "__main__":
    main()
