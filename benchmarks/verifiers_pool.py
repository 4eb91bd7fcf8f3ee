"""Which verifier pays on the embedded model? Measured on sample pools, by exact replay.

``benchmarks/verifiers.py --pool POOL ...`` runs this. Protocol:

1. **Choose on the training pool** (``--train-pool``, ``math_train200``, never MATH-500):
   window sizes of the DeepConf group statistics (16-256 tokens) and the tail length, by
   within-problem AUROC. Our traces are ~450 tokens, not DeepConf's 10-30k, so its 2048
   window would be the whole trace.
2. **Score the held-out pool** (``--pool``, the MATH-500 slice): every sample with every
   verifier: the confidence statistics at the chosen sizes, the probe (``--probe DIR``), the
   larger judge (``--judge-model``, e.g. the 1.5B embedded model judging the 0.5B's samples,
   prefill only), self-consistency agreement (share of the problem's other samples with an
   equivalent answer) and a seeded random score. Expensive scores are cached per sample
   (``CachedVerifier``, JSONL beside the output), so a rerun resumes.
3. **Choose on the training pool**: the verifier with the best within-problem AUROC there
   (the probe's from its grouped CV; the judge scores the training pool too) and the vote
   that replays better there; the RESULT line reports that choice's held-out figures, so no
   choice is made on the test set. ``--judge-subset mixed`` judges only problems with both
   right and wrong samples, on both pools: exact for within-problem AUROC and for every
   vote (on the other problems every vote gives the same outcome); their eFLOPs are imputed
   from the judged samples' mean.
4. **Report** per verifier: within-problem AUROC (mean over problems with both right and
   wrong samples) and pooled AUROC, each with a bootstrap 95% CI over problems; then
   best-of-N by replay (``ReplayGenerator`` + ``best_of_n``, ``--orders`` orders per problem)
   at n in ``--ns``: weighted vote and DeepConf-filtered vote (``keep``) against maj@n, with
   two-level CIs (problems, orders), the paired difference to maj@n, and eFLOPs per problem
   with the verifier's cost included.

Last line: ``RESULT best_verifier=<> auroc_within=<> weighted_at16=<> maj_at16=<>
gain_pts=<> pass_at16=<> n_problems=<> isa=<>``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = (16, 32, 64, 128, 256)


def _ci(xs: list[float]) -> list[float]:
    if not xs:
        return [math.nan, math.nan]
    return [float(np.quantile(xs, 0.025)), float(np.quantile(xs, 0.975))]


def within_and_pooled(
    groups: list[str], labels: np.ndarray, scores: np.ndarray, seed: int = 0, resamples: int = 2000
) -> dict[str, Any]:
    """Within-problem and pooled AUROC with bootstrap CIs over problems."""
    from sklearn.metrics import roc_auc_score

    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    per = {}
    for g, idx in by.items():
        y = labels[idx]
        if 0 < y.sum() < len(y):
            per[g] = roc_auc_score(y, scores[idx])
    names = list(by)
    rng = np.random.default_rng(seed)
    within_bs, pooled_bs = [], []
    mixed = list(per)
    for _ in range(resamples):
        if mixed:
            within_bs.append(
                np.mean([per[mixed[i]] for i in rng.integers(0, len(mixed), len(mixed))])
            )
        pick = [i for j in rng.integers(0, len(names), len(names)) for i in by[names[j]]]
        y = labels[pick]
        if 0 < y.sum() < len(y):
            pooled_bs.append(roc_auc_score(y, scores[pick]))
    return {
        "within": float(np.mean(list(per.values()))) if per else math.nan,
        "within_ci": _ci(within_bs),
        "mixed_problems": len(per),
        "pooled": float(roc_auc_score(labels, scores))
        if 0 < labels.sum() < len(labels)
        else math.nan,
        "pooled_ci": _ci(pooled_bs),
    }


def confidence_scores(pool: Any, stat: str, size: int) -> np.ndarray:
    from ttscale.verifiers.confidence import trace_confidence

    return np.array(
        [
            trace_confidence(s.confidence.astype(float), stat, window=size, tail=size)
            for p in pool.problems.values()
            for s in p.samples
        ]
    )


def choose_sizes(train: Any) -> dict[str, Any]:
    """Best window (group stats) and tail length on the training pool."""
    groups = [p.id for p in train.problems.values() for _ in p.samples]
    labels = np.array([bool(s.correct) for p in train.problems.values() for s in p.samples])
    table: dict[str, dict[int, float]] = {}
    for stat in ("lowest_group", "bottom10", "tail"):
        table[stat] = {
            w: within_and_pooled(groups, labels, confidence_scores(train, stat, w), resamples=1)[
                "within"
            ]
            for w in WINDOWS
        }
    best = {stat: max(rows, key=lambda w: np.nan_to_num(rows[w])) for stat, rows in table.items()}
    mean = within_and_pooled(groups, labels, confidence_scores(train, "mean", 1), resamples=1)
    return {"table": table, "best": best, "mean_within": mean["within"]}


def agreement_scores(pool: Any) -> np.ndarray:
    from ttscale.verifiers.answers import answers_equal

    out = []
    for p in pool.problems.values():
        ans = [s.answer for s in p.samples]
        for i, a in enumerate(ans):
            others = [b for j, b in enumerate(ans) if j != i]
            out.append(
                0.0
                if a is None
                else sum(b is not None and answers_equal(a, b) for b in others)
                / max(len(others), 1)
            )
    return np.array(out)


def pool_candidates(pool: Any) -> tuple[list[Any], list[Any]]:
    """(problem, candidate) per pooled sample, in pool order."""
    from ttscale.types import Candidate, Problem

    probs, cands = [], []
    for p in pool.problems.values():
        prob = Problem(p.problem, pool.sampling.system_prompt, id=p.id)
        for s in p.samples:
            probs.append(prob)
            cands.append(
                Candidate(
                    s.text,
                    s.answer,
                    s.num_tokens,
                    s.finish_reason,
                    token_confidence=tuple(s.confidence.astype(float).tolist()),
                )
            )
    return probs, cands


async def score_pool(pool: Any, verifier: Any, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Every pooled sample's score and per-use eFLOPs from a ``CachedVerifier``, in pool
    order; ``chunk`` samples per call so the engine batches across problems."""
    from ttscale.verifiers.cached import candidate_key

    probs, cands = pool_candidates(pool)
    for i in range(0, len(cands), chunk):
        await verifier.score_candidates(probs[i : i + chunk], cands[i : i + chunk])
    keys = [candidate_key(p, c.text) for p, c in zip(probs, cands, strict=True)]
    return (
        np.array([verifier.table[k][0] for k in keys]),
        np.array([verifier.table[k][1] for k in keys]),
    )


def mixed_ids(pool: Any) -> list[str]:
    """Problems with both right and wrong samples: the only ones a verifier can change."""
    return [pid for pid, p in pool.problems.items() if 0 < sum(p.correct) < len(p.correct)]


async def score_mixed(pool: Any, verifier: Any) -> tuple[np.ndarray, np.ndarray]:
    """``score_pool`` on the mixed problems only, spread back to pool order. On a problem whose
    samples are all right (or all wrong) every vote gives the same outcome, so the others score
    a neutral 0.5 and are charged the judged samples' mean eFLOPs (imputed, not measured)."""
    sub = dataclasses.replace(pool, problems={i: pool.problems[i] for i in mixed_ids(pool)})
    sub_scores, sub_costs = await score_pool(sub, verifier)
    order = [(pid, i) for pid, p in sub.problems.items() for i in range(len(p.samples))]
    judged = dict(zip(order, zip(sub_scores, sub_costs, strict=True), strict=True))
    fill = float(np.mean(sub_costs)) if len(sub_costs) else 0.0
    keys = [(pid, i) for pid, p in pool.problems.items() for i in range(len(p.samples))]
    return (
        np.array([judged[k][0] if k in judged else 0.5 for k in keys]),
        np.array([judged[k][1] if k in judged else fill for k in keys]),
    )


class TableVerifier:
    """Serves precomputed per-sample scores (and their per-use cost) during replay."""

    def __init__(
        self, name: str, pool: Any, scores: np.ndarray, costs: np.ndarray | None = None
    ) -> None:
        from ttscale.types import Problem
        from ttscale.verifiers.cached import candidate_key

        self.name, self.logprobs = name, None
        self.table: dict[str, tuple[float, float]] = {}
        i = 0
        for p in pool.problems.values():
            prob = Problem(p.problem, pool.sampling.system_prompt)
            for s in p.samples:
                self.table[candidate_key(prob, s.text)] = (
                    float(scores[i]),
                    0.0 if costs is None else float(costs[i]),
                )
                i += 1

    async def score_candidates(self, problems, candidates, *, ledger=None):  # noqa: ANN001
        from ttscale.verifiers.cached import candidate_key

        keys = [candidate_key(p, c.text) for p, c in zip(problems, candidates, strict=True)]
        if ledger is not None:
            ledger.charge_verifier(sum(self.table[k][1] for k in keys), 0)
        return [self.table[k][0] for k in keys]

    async def score(self, problems, step_lists, *, ledger=None):  # noqa: ANN001
        raise TypeError("whole candidates only")


async def replay_grid(
    pool: Any, verifier: Any | None, ns: Sequence[int], orders: int, keep: float
) -> dict[str, dict[int, list[list[float]]]]:
    """{select: {n: [[correct per order] per problem]}} and eFLOPs alongside."""
    from ttscale import asolve
    from ttscale.pools import ReplayGenerator
    from ttscale.verifiers.answers import grade

    s = pool.sampling
    selects = ["majority"] if verifier is None else ["weighted", "filtered"]
    acc: dict[str, dict[int, list[list[float]]]] = {sel: {n: [] for n in ns} for sel in selects}
    flops: dict[str, dict[int, list[float]]] = {sel: {n: [] for n in ns} for sel in selects}
    for p in pool.problems.values():
        for sel in selects:
            for n in ns:
                row, cost = [], []
                for o in range(orders):
                    r = await asolve(
                        p.problem,
                        f"rollouts={n}",
                        backend=ReplayGenerator(pool, order_seed=o),
                        verifier=verifier,
                        system_prompt=s.system_prompt,
                        n=n,
                        round_size=n,
                        temperature=s.temperature,
                        top_p=s.top_p,
                        max_tokens=s.max_tokens,
                        adaptive=False,
                        select=sel,
                        keep=keep,
                    )
                    row.append(float(r.answer is not None and grade(r.answer, p.gold)))
                    cost.append(r.ledger.eflops)
                acc[sel][n].append(row)
                flops[sel][n].append(float(np.mean(cost)))
    return {
        "acc": acc,
        "eflops": {sel: {n: float(np.mean(v)) for n, v in d.items()} for sel, d in flops.items()},
    }


def cell(rows: list[list[float]]) -> dict[str, Any]:
    from ttscale.evals.metrics import hierarchical_bootstrap_ci

    lo, hi = hierarchical_bootstrap_ci(rows)
    return {"acc": float(np.mean([np.mean(r) for r in rows])), "ci": [lo, hi]}


def paired(a: list[list[float]], b: list[list[float]], seed: int = 0) -> dict[str, Any]:
    """Mean difference a - b over problems (orders averaged) with a bootstrap CI."""
    d = np.array([np.mean(x) - np.mean(y) for x, y in zip(a, b, strict=True)])
    rng = np.random.default_rng(seed)
    bs = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(4000)]
    return {
        "diff": float(d.mean()),
        "ci": [float(np.quantile(bs, 0.025)), float(np.quantile(bs, 0.975))],
    }


def choose_on_train(
    train: Any,
    sizes: dict[str, Any],
    args: argparse.Namespace,
    scored: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[str, str, dict[str, float]]:
    """Pick the verifier (and vote) on the training pool, never on the held-out one: the
    highest within-problem AUROC (the probe's from its grouped CV; ``scored``: other
    verifiers' (scores, eFLOPs) on the training pool, e.g. the judge), then the vote that
    replays better there at n = the training pool's K (the probe, whose training-pool scores
    are in-sample, takes the weighted vote)."""
    scored = scored or {}
    groups = [p.id for p in train.problems.values() for _ in p.samples]
    labels = np.array([bool(s.correct) for p in train.problems.values() for s in p.samples])
    quality = {
        "confidence_mean": within_and_pooled(
            groups, labels, confidence_scores(train, "mean", 1), resamples=1
        )["within"]
    }
    for st in ("lowest_group", "bottom10", "tail"):
        quality[f"confidence_{st}"] = within_and_pooled(
            groups, labels, confidence_scores(train, st, sizes["best"][st]), resamples=1
        )["within"]
    if args.probe:
        manifest = json.loads((args.probe / "manifest.json").read_text())
        quality["probe"] = manifest["cv"]["best"]["auroc_within"]
    for name, (sc, _) in scored.items():
        quality[name] = within_and_pooled(groups, labels, sc, resamples=1)["within"]
    best = max(quality, key=lambda n: np.nan_to_num(quality[n]))
    if best == "probe":
        return best, "weighted", quality
    if best in scored:
        v = TableVerifier(best, train, *scored[best])
    else:
        stat = best.removeprefix("confidence_")
        v = TableVerifier(best, train, confidence_scores(train, stat, sizes["best"].get(stat, 1)))
    k = train.sampling.k
    grid = asyncio.run(replay_grid(train, v, [k], args.orders, args.keep))
    sel = max(
        ("weighted", "filtered"), key=lambda s: np.mean([np.mean(r) for r in grid["acc"][s][k]])
    )
    return best, sel, quality


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=Path, required=True, help="held-out MATH-500 pool")
    ap.add_argument("--train-pool", type=Path, required=True, help="math_train200 pool")
    ap.add_argument("--probe", type=Path, help="probe directory (ttscale train-verifier)")
    ap.add_argument("--judge-model", help="embedded model name of a larger judge")
    ap.add_argument(
        "--judge-subset",
        choices=("all", "mixed"),
        default="all",
        help="mixed: judge only problems with both right and wrong samples (exact for "
        "within-problem AUROC and for every vote; others score neutral, eFLOPs imputed)",
    )
    ap.add_argument("--ns", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "verifiers_pool.json"
    )
    args = ap.parse_args(argv)

    from ttscale.host import host_info
    from ttscale.pools import load_pool
    from ttscale.verifiers import load_verifier
    from ttscale.verifiers.cached import CachedVerifier

    t0 = time.perf_counter()
    pool, train = load_pool(args.pool), load_pool(args.train_pool)
    sizes = choose_sizes(train)
    print(
        f"chosen on {train.name}: {sizes['best']} (mean conf within {sizes['mean_within']:.3f})",
        flush=True,
    )
    groups = [p.id for p in pool.problems.values() for _ in p.samples]
    labels = np.array([bool(s.correct) for p in pool.problems.values() for s in p.samples])
    scores: dict[str, np.ndarray] = {
        "confidence_mean": confidence_scores(pool, "mean", 1),
        **{
            f"confidence_{st}": confidence_scores(pool, st, sizes["best"][st])
            for st in ("lowest_group", "bottom10", "tail")
        },
        "agreement": agreement_scores(pool),
        "random": np.array([random.Random(i).random() for i in range(len(labels))]),
    }
    costs: dict[str, np.ndarray] = {}
    train_scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cache_dir = args.out.with_suffix("")
    for name, build in (
        ("probe", (lambda: load_verifier(str(args.probe))) if args.probe else None),
        (
            "judge",
            (lambda: load_verifier("llm_judge", model=args.judge_model, mode="outcome"))
            if args.judge_model
            else None,
        ),
    ):
        if build is None:
            continue
        inner = build()
        cached = CachedVerifier(inner, cache_dir / f"{name}_scores.jsonl")
        if name == "judge" and args.judge_subset == "mixed":
            scores[name], costs[name] = asyncio.run(score_mixed(pool, cached))
        else:
            scores[name], costs[name] = asyncio.run(score_pool(pool, cached))
        print(f"scored {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if name == "judge":  # chosen on the training pool like the others, so score it there
            on_train = CachedVerifier(inner, cache_dir / f"{name}_train_scores.jsonl")
            train_scored[name] = asyncio.run(
                score_mixed(train, on_train)
                if args.judge_subset == "mixed"
                else score_pool(train, on_train)
            )
            print(f"scored {name} on {train.name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    quality: dict[str, dict[str, Any]] = {}
    for name, sc in scores.items():
        if name == "judge" and args.judge_subset == "mixed":  # pooled AUROC over the judged
            keep = set(mixed_ids(pool))
            m = np.array([g in keep for g in groups])
            sub = [g for g, judged in zip(groups, m, strict=True) if judged]
            quality[name] = {**within_and_pooled(sub, labels[m], sc[m]), "subset": "mixed"}
        else:
            quality[name] = within_and_pooled(groups, labels, sc)
    for name, q in quality.items():
        print(
            f"{name:26s} within {q['within']:.3f} {q['within_ci']}  pooled {q['pooled']:.3f}",
            flush=True,
        )
    base = asyncio.run(replay_grid(pool, None, args.ns, args.orders, args.keep))
    votes: dict[str, Any] = {
        "maj": {n: cell(base["acc"]["majority"][n]) for n in args.ns},
        "maj_eflops": base["eflops"]["majority"],
    }
    for name in scores:
        if name in ("random", "agreement"):  # agreement over all K would leak unseen samples;
            continue  # weighting by agreement within the n drawn is the majority vote itself
        v = TableVerifier(name, pool, scores[name], costs.get(name))
        grid = asyncio.run(replay_grid(pool, v, args.ns, args.orders, args.keep))
        votes[name] = {
            sel: {
                n: {
                    **cell(grid["acc"][sel][n]),
                    "vs_maj": paired(grid["acc"][sel][n], base["acc"]["majority"][n]),
                    "eflops": grid["eflops"][sel][n],
                }
                for n in args.ns
            }
            for sel in ("weighted", "filtered")
        }
        print(
            f"{name}: "
            + ", ".join(
                f"{sel}@{n} {votes[name][sel][n]['acc']:.3f}"
                for sel in ("weighted", "filtered")
                for n in args.ns
            ),
            flush=True,
        )
    k = max(args.ns)
    pass_k = float(np.mean([any(p.correct[:k]) for p in pool.problems.values()]))
    best, best_sel, train_quality = choose_on_train(train, sizes, args, train_scored)
    print(
        f"chosen on the training pool: {best} ({best_sel}); train within-AUROC {train_quality}",
        flush=True,
    )
    summary = {
        "pool": pool.name,
        "train_pool": train.name,
        "n_problems": len(pool.problems),
        "isa": host_info().isa,
        "sizes": sizes,
        "train_quality": train_quality,
        "quality": quality,
        "votes": votes,
        "pass_at_k": pass_k,
        "orders": args.orders,
        "keep": args.keep,
        "best": {"verifier": best, "select": best_sel},
        "seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    top = votes[best][best_sel][k]["acc"]
    maj = votes["maj"][k]["acc"]
    diff = votes[best][best_sel][k]["vs_maj"]
    print(
        f"RESULT best_verifier={best}:{best_sel} auroc_within={quality[best]['within']:.3f} "
        f"weighted_at{k}={top:.3f} maj_at{k}={maj:.3f} gain_pts={100 * (top - maj):.1f} "
        f"gain_ci=[{100 * diff['ci'][0]:.1f},{100 * diff['ci'][1]:.1f}] "
        f"pass_at{k}={pass_k:.3f} n_problems={len(pool.problems)} isa={host_info().isa}"
    )


if __name__ == "__main__":
    main()
