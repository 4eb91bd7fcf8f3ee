"""Eval metrics with uncertainty: accuracy + bootstrap CI, maj@k, pass@k, weighted vote,
compute per problem, per-level breakdown, and a paired bootstrap test between two runs.

The unit of resampling is the **problem**: a problem's score is the mean over its seeds.
With one seed per problem the CI is the percentile bootstrap over problems; with several
(e.g. replay orders of a sample pool) it is a two-level bootstrap that resamples problems and
then seeds within each resampled problem, so the interval carries both the problem and the
order variance. Row fields used: ``problem_id``, ``strategy``, ``budget``, ``level``,
``correct``, ``candidates`` (``answer``, ``correct``, ``score``) and ``ledger``
(``generated_tokens``, ``eflops``, ``wall_seconds``).

Code rows (``domain: "code"``): ``correct`` is the selected program's hidden-test verdict
(pass@1 of the selection), each candidate's ``correct`` its own, so ``pass_n`` is the
oracle pass@n; their ``answer`` values are program ids, not answers, so the answer votes
(``maj``, ``weighted``) are ``None``.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ConfigSummary",
    "Comparison",
    "bootstrap_ci",
    "hierarchical_bootstrap_ci",
    "budget_order",
    "paired_bootstrap",
    "pareto_front",
    "compare",
    "majority_correct",
    "pass_at_k",
    "per_problem",
    "row_pass_at_k",
    "summarize",
    "weighted_correct",
]

Row = Mapping[str, Any]


def bootstrap_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (``scipy.stats.bootstrap``), deterministic by seed.

    Constant data (all right or all wrong) has a zero-width interval; an empty input gives
    ``(nan, nan)``.
    """
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def hierarchical_bootstrap_ci(
    groups: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    n_resamples: int = 4_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of the mean of per-group means, resampling groups (problems) and then
    members (seeds) within each drawn group; deterministic by seed.

    Reduces to ``bootstrap_ci`` over group means when every group has one member.
    """
    groups = [g for g in groups if len(g)]
    sizes = np.asarray([len(g) for g in groups])
    if sizes.size == 0:
        return (math.nan, math.nan)
    if np.all(sizes == 1):
        return bootstrap_ci([g[0] for g in groups], confidence=confidence, seed=seed)
    width = int(sizes.max())
    table = np.zeros((len(groups), width))
    for i, g in enumerate(groups):
        table[i, : len(g)] = g
    if np.all(table[sizes[:, None] > np.arange(width)] == table[0, 0]):
        return (float(table[0, 0]), float(table[0, 0]))
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    cols = np.arange(width)
    for lo in range(0, n_resamples, 250):  # chunks keep memory at ~250 x P x S
        b = min(250, n_resamples - lo)
        pick = rng.integers(0, len(groups), size=(b, len(groups)))
        n = sizes[pick]  # members of each drawn group
        member = np.floor(rng.random((b, len(groups), width)) * n[..., None]).astype(int)
        vals = table[pick[..., None], member] * (cols < n[..., None])
        means[lo : lo + b] = (vals.sum(axis=2) / n).mean(axis=1)
    alpha = (1 - confidence) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct (Chen et al. 2021, Codex):
    ``1 - C(n-c, k) / C(n, k)``, computed as a stable product."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def row_pass_at_k(row: Row, k: int) -> float | None:
    """pass@k of one row's candidates; ``None`` if it has fewer than ``k``."""
    cands = row.get("candidates") or []
    if len(cands) < k:
        return None
    return pass_at_k(len(cands), sum(bool(c["correct"]) for c in cands), k)


def majority_correct(row: Row, k: int | None = None) -> bool | None:
    """maj@k: is the majority answer of the first ``k`` candidates (all if ``None``) right?

    Answers are grouped by math-verify equivalence (``ttscale.verifiers.voting``), ties
    broken by first appearance; ``None`` if the row has no candidates.
    """
    from ttscale.verifiers.voting import group_answers

    cands = list(row.get("candidates") or [])[: k or None]
    if not cands or row.get("domain") == "code":
        return None
    groups = group_answers([c["answer"] for c in cands])
    return bool(groups and cands[groups[0].members[0]]["correct"])


def weighted_correct(row: Row) -> bool | None:
    """Is the verifier-score-weighted vote over the row's candidates right?

    ``None`` when no candidate has a score (no verifier ran); unscored candidates weigh 0.
    """
    from ttscale.verifiers.voting import group_answers

    cands = list(row.get("candidates") or [])
    if not cands or row.get("domain") == "code" or all(c.get("score") is None for c in cands):
        return None
    scores = [float(c["score"]) if c.get("score") is not None else 0.0 for c in cands]
    groups = group_answers([c["answer"] for c in cands], scores)
    return bool(groups and cands[groups[0].members[0]]["correct"])


def per_problem(rows: Iterable[Row], value: Any) -> dict[str, float]:
    """Mean over seeds of ``value(row)`` per problem id (rows where it is ``None`` skipped)."""
    acc: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = value(r)
        if v is not None:
            acc[r["problem_id"]].append(float(v))
    return {pid: sum(vs) / len(vs) for pid, vs in acc.items()}


@dataclass(slots=True)
class ConfigSummary:
    """Metrics of one (strategy, budget) cell, over problems (seeds averaged)."""

    strategy: str
    budget: str
    problems: int
    rows: int
    seeds: int
    accuracy: float
    ci: tuple[float, float]
    maj: float | None
    """maj@n: majority vote over each row's candidates."""
    weighted: float | None
    """Score-weighted vote accuracy (``None`` without verifier scores)."""
    pass1: float | None
    pass_n: float | None
    """Any candidate correct (coverage; the oracle-selection upper bound)."""
    candidates: float
    """Mean candidates per row (the ``n`` of maj@n / pass@n)."""
    tokens_mean: float
    tokens_median: float
    eflops_mean: float
    eflops_median: float
    wall_mean: float
    errors: int
    pass_at: dict[int, float] = field(default_factory=dict)
    """pass@k for k = 1, 2, 4, ... up to the smallest candidate count of any row."""
    level: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]


def _mean(d: Mapping[str, float]) -> float | None:
    return sum(d.values()) / len(d) if d else None


def _per_problem_lists(rows: Iterable[Row], value: Any) -> list[list[float]]:
    acc: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = value(r)
        if v is not None:
            acc[r["problem_id"]].append(float(v))
    return list(acc.values())


def summarize_cell(
    rows: Sequence[Row], *, strategy: str, budget: str, level: int | None = None, seed: int = 0
) -> ConfigSummary:
    acc = per_problem(rows, lambda r: bool(r["correct"]))
    by_seed = _per_problem_lists(rows, lambda r: bool(r["correct"]))
    tokens = per_problem(rows, lambda r: r["ledger"]["generated_tokens"])
    eflops = per_problem(rows, lambda r: r["ledger"]["eflops"])
    wall = per_problem(rows, lambda r: r["ledger"]["wall_seconds"])
    counts = [len(r.get("candidates") or []) for r in rows]
    kmax = min(counts) if counts else 0
    pass_at: dict[int, float] = {}
    k = 1
    while 0 < k <= kmax:
        val = _mean(per_problem(rows, lambda r, k=k: row_pass_at_k(r, k)))
        if val is not None:
            pass_at[k] = val
        k *= 2
    if kmax and kmax not in pass_at:
        val = _mean(per_problem(rows, lambda r: row_pass_at_k(r, kmax)))
        if val is not None:
            pass_at[kmax] = val
    return ConfigSummary(
        strategy=strategy,
        budget=budget,
        problems=len(acc),
        rows=len(rows),
        seeds=len({r["seed"] for r in rows}),
        accuracy=_mean(acc) or 0.0,
        ci=hierarchical_bootstrap_ci(by_seed, seed=seed),
        maj=_mean(per_problem(rows, majority_correct)),
        weighted=_mean(per_problem(rows, weighted_correct)),
        pass1=_mean(per_problem(rows, lambda r: row_pass_at_k(r, 1))),
        pass_n=_mean(
            per_problem(
                rows,
                lambda r: (
                    any(c["correct"] for c in r["candidates"]) if r.get("candidates") else None
                ),
            )
        ),
        candidates=sum(counts) / len(counts) if counts else 0.0,
        tokens_mean=_mean(tokens) or 0.0,
        tokens_median=statistics.median(tokens.values()) if tokens else 0.0,
        eflops_mean=_mean(eflops) or 0.0,
        eflops_median=statistics.median(eflops.values()) if eflops else 0.0,
        wall_mean=_mean(wall) or 0.0,
        errors=sum(1 for r in rows if r.get("error")),
        pass_at=pass_at,
        level=level,
    )


def _cells(rows: Iterable[Row], by_level: bool) -> dict[tuple[Any, ...], list[Row]]:
    cells: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        key = (
            (r["strategy"], r["budget"], r.get("level"))
            if by_level
            else (r["strategy"], r["budget"])
        )
        cells[key].append(r)
    return cells


def budget_order(budget: str) -> list[Any]:
    """Natural sort key: ``tokens=600`` before ``tokens=1200``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", budget)]


def summarize(rows: Iterable[Row], *, by_level: bool = False, seed: int = 0) -> list[ConfigSummary]:
    """One ``ConfigSummary`` per (strategy, budget) (and level): strategies in first-seen
    order, each one's budgets ascending (rows arrive in completion order, not grid order)."""
    cells = _cells(rows, by_level)
    first = {k[0]: i for i, k in reversed(list(enumerate(cells)))}
    keys = sorted(
        cells,
        key=lambda k: (
            first[k[0]],
            budget_order(k[1]),
            *((k[2] is None, k[2] or 0) if by_level else ()),
        ),
    )
    out = []
    for key in keys:
        cell = cells[key]
        level = key[2] if by_level else None
        out.append(summarize_cell(cell, strategy=key[0], budget=key[1], level=level, seed=seed))
    return out


@dataclass(frozen=True, slots=True)
class Comparison:
    """Paired difference ``a - b`` in accuracy over the problems both runs solved."""

    strategy_a: str
    strategy_b: str
    budget_a: str
    budget_b: str
    problems: int
    accuracy_a: float
    accuracy_b: float
    delta: float
    ci: tuple[float, float]
    p_value: float


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, tuple[float, float], float]:
    """Paired bootstrap over problems: mean difference, its 95% CI, two-sided p-value.

    The p-value tests "no difference" with the shifted bootstrap distribution (Efron &
    Tibshirani 1993, ch. 16): ``(1 + #{|d* - d| >= |d|}) / (B + 1)``.
    """
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if x.size == 0:
        raise ValueError("no paired problems to compare")
    delta = float(x.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    boot = x[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    if np.all(x == x[0]):
        return delta, (delta, delta), 1.0 if delta == 0 else 0.0
    extreme = np.count_nonzero(np.abs(boot - delta) >= abs(delta) - 1e-12)
    return delta, (float(lo), float(hi)), float((1 + extreme) / (n_resamples + 1))


def compare(
    rows_a: Iterable[Row],
    rows_b: Iterable[Row],
    *,
    strategy_a: str,
    budget_a: str,
    strategy_b: str | None = None,
    budget_b: str | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare one (strategy, budget) cell of run A with one of run B (same by default),
    paired on problem id.

    Raises:
        ValueError: The cells share no problem.
    """
    strategy_b = strategy_b or strategy_a
    budget_b = budget_b or budget_a
    a = per_problem(
        (r for r in rows_a if r["strategy"] == strategy_a and r["budget"] == budget_a),
        lambda r: bool(r["correct"]),
    )
    b = per_problem(
        (r for r in rows_b if r["strategy"] == strategy_b and r["budget"] == budget_b),
        lambda r: bool(r["correct"]),
    )
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(
            f"{strategy_a}@{budget_a} and {strategy_b}@{budget_b} share no problem to pair on"
        )
    xa, xb = [a[p] for p in common], [b[p] for p in common]
    delta, ci, p = paired_bootstrap(xa, xb, n_resamples=n_resamples, seed=seed)
    return Comparison(
        strategy_a,
        strategy_b,
        budget_a,
        budget_b,
        len(common),
        float(np.mean(xa)),
        float(np.mean(xb)),
        delta,
        ci,
        p,
    )


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (no other point costs <= and scores >=, one strictly),
    sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
