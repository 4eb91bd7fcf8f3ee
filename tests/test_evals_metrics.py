"""Eval metrics against hand-computed values: pass@k, bootstrap CI, maj@k, weighted vote,
per-problem seed averaging, paired bootstrap, Pareto frontier."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ttscale.evals.metrics import (
    bootstrap_ci,
    compare,
    majority_correct,
    paired_bootstrap,
    pareto_front,
    pass_at_k,
    row_pass_at_k,
    summarize,
    weighted_correct,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 5, 3, 1 - 10 / 120),  # 1 - C(5,3)/C(10,3)
        (10, 3, 1, 0.3),  # pass@1 = c/n
        (4, 0, 2, 0.0),
        (4, 3, 2, 1.0),  # n - c < k: every k-subset holds a correct sample
        (8, 8, 8, 1.0),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_subset_enumeration():
    """The estimator is the fraction of k-subsets of the n samples with >= 1 correct."""
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                exact = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(
                    1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12
                )


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_bootstrap_ci_known_data():
    # 50 of 100 correct: normal approximation 0.5 +- 1.96 * sqrt(0.25 / 100) = [0.402, 0.598].
    lo, hi = bootstrap_ci([1] * 50 + [0] * 50)
    assert lo == pytest.approx(0.402, abs=0.015) and hi == pytest.approx(0.598, abs=0.015)
    assert bootstrap_ci([1] * 50 + [0] * 50) == (lo, hi)  # deterministic by seed
    # 90 of 100: [0.841, 0.959] by the normal approximation; percentile bootstrap is close.
    lo, hi = bootstrap_ci([1] * 90 + [0] * 10)
    assert 0.83 <= lo <= 0.86 and 0.95 <= hi <= 0.97
    # A wider interval at a higher level, and constant data has zero width.
    lo99, hi99 = bootstrap_ci([1] * 50 + [0] * 50, confidence=0.99)
    assert lo99 < 0.402 and hi99 > 0.598
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)
    assert bootstrap_ci([0.0]) == (0.0, 0.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_bootstrap_ci_matches_numpy_percentile_bootstrap():
    rng = np.random.default_rng(7)
    x = rng.random(40)
    boot = x[rng.integers(0, x.size, (20000, x.size))].mean(axis=1)
    ref = np.percentile(boot, [2.5, 97.5])
    lo, hi = bootstrap_ci(x)
    assert lo == pytest.approx(ref[0], abs=0.01) and hi == pytest.approx(ref[1], abs=0.01)


def _cands(*items):
    return [{"answer": a, "correct": ok, "score": s} for a, ok, s in items]


def test_majority_and_weighted_vote():
    row = {
        "candidates": _cands(
            ("3", False, 0.1),
            ("2", True, 0.9),
            ("2.0", True, 0.8),
            ("3", False, 0.1),
            ("3", False, 0.1),
            (None, False, 0.0),
        )
    }
    assert majority_correct(row) is False  # "3" x3 beats "2"/"2.0" x2
    assert majority_correct(row, k=3) is True  # "2" and "2.0" are one class (math-verify)
    assert weighted_correct(row) is True  # weight 1.7 vs 0.3
    assert row_pass_at_k(row, 2) == pytest.approx(pass_at_k(6, 2, 2))
    assert row_pass_at_k(row, 7) is None
    unscored = {"candidates": [{"answer": "1", "correct": True, "score": None}]}
    assert weighted_correct(unscored) is None
    assert majority_correct({"candidates": []}) is None


def _row(pid, strategy, budget, seed, correct, tokens=100, eflops=1e9, level=1, cands=None):
    return {
        "problem_id": pid,
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "correct": correct,
        "level": level,
        "error": None,
        "candidates": cands if cands is not None else _cands((str(int(correct)), correct, None)),
        "ledger": {"generated_tokens": tokens, "eflops": eflops, "wall_seconds": 1.0},
    }


def test_summarize_averages_seeds_per_problem():
    rows = [
        _row("p1", "s", "tokens=10", 0, True, tokens=100),
        _row("p1", "s", "tokens=10", 1, False, tokens=300),
        _row("p2", "s", "tokens=10", 0, True, tokens=50, level=2),
        _row("p2", "s", "tokens=10", 1, True, tokens=50, level=2),
        _row("p3", "s", "tokens=10", 0, False, tokens=10, level=2),
        _row("p3", "s", "tokens=10", 1, False, tokens=30, level=2),
    ]
    (cell,) = summarize(rows)
    assert (cell.problems, cell.rows, cell.seeds) == (3, 6, 2)
    assert cell.accuracy == pytest.approx((0.5 + 1 + 0) / 3)
    assert cell.tokens_mean == pytest.approx((200 + 50 + 20) / 3)
    assert cell.tokens_median == 50
    assert cell.ci[0] <= cell.accuracy <= cell.ci[1]
    by_level = {c.level: c for c in summarize(rows, by_level=True)}
    assert by_level[1].accuracy == 0.5 and by_level[2].accuracy == 0.5
    assert cell.pass_at == {1: pytest.approx(0.5)}


def test_summarize_orders_budgets_numerically_per_strategy():
    # completion order, not grid order: a big budget finished first
    rows = [
        _row("p1", "bon", "tokens=1200", 0, True),
        _row("p1", "greedy", "tokens=1200", 0, True),
        _row("p1", "bon", "tokens=600", 0, True),
        _row("p1", "bon", "tokens=600;seconds=9", 0, True),
    ]
    assert [(c.strategy, c.budget) for c in summarize(rows)] == [
        ("bon", "tokens=600"),
        ("bon", "tokens=600;seconds=9"),
        ("bon", "tokens=1200"),
        ("greedy", "tokens=1200"),
    ]
    rows.append(_row("p2", "bon", "tokens=600", 0, True, level=3))
    cells = summarize(rows, by_level=True)
    levels = [(c.budget, c.level) for c in cells if c.strategy == "bon"]
    assert levels[:2] == [("tokens=600", 1), ("tokens=600", 3)]


def test_paired_bootstrap():
    same = [1, 0, 1, 1, 0]
    assert paired_bootstrap(same, same)[::2] == (0.0, 1.0)
    delta, ci, p = paired_bootstrap([1] * 20, [0] * 20)
    assert (delta, ci, p) == (1.0, (1.0, 1.0), 0.0)
    # 15 problems improve, 5 regress: delta 0.5, clearly significant.
    delta, ci, p = paired_bootstrap([1] * 15 + [0] * 5, [0] * 15 + [1] * 5)
    assert delta == 0.5 and p < 0.05 and ci[0] > 0
    # Balanced wins and losses: no evidence of a difference.
    delta, _, p = paired_bootstrap([1, 0] * 10, [0, 1] * 10)
    assert delta == 0.0 and p == 1.0


def test_compare_pairs_on_problem_ids():
    a = [_row(f"p{i}", "s", "b", 0, True) for i in range(10)]
    b = [_row(f"p{i}", "s", "b", 0, i < 3) for i in range(12)]
    cmp = compare(a, b, strategy_a="s", budget_a="b")
    assert cmp.problems == 10 and cmp.accuracy_b == pytest.approx(0.3)
    assert cmp.delta == pytest.approx(0.7) and cmp.p_value < 0.01
    with pytest.raises(ValueError, match="share no problem"):
        compare(a, b, strategy_a="s", budget_a="other")


def test_pareto_front():
    pts = [(100, 0.3), (200, 0.5), (150, 0.2), (300, 0.5), (400, 0.6), (50, 0.1)]
    assert pareto_front(pts) == [5, 0, 1, 4]


def test_hierarchical_bootstrap_carries_order_variance():
    from ttscale.evals.metrics import bootstrap_ci, hierarchical_bootstrap_ci

    rng = np.random.default_rng(3)
    single = [[float(x)] for x in rng.random(60) < 0.4]
    assert hierarchical_bootstrap_ci(single) == bootstrap_ci([g[0] for g in single])
    assert hierarchical_bootstrap_ci([[1.0, 1.0], [1.0]]) == (1.0, 1.0)
    assert all(math.isnan(x) for x in hierarchical_bootstrap_ci([]))
    # every problem a coin flip per order: problem means all ~0.5, but few orders each
    flips = [[float(x) for x in rng.random(3) < 0.5] for _ in range(80)]
    lo, hi = hierarchical_bootstrap_ci(flips, seed=1)
    mlo, mhi = bootstrap_ci([float(np.mean(g)) for g in flips], seed=1)
    assert lo < np.mean(flips) < hi
    assert (hi - lo) >= 0.9 * (mhi - mlo)  # never tighter than the problem-only interval
    assert hierarchical_bootstrap_ci(flips, seed=1) == (lo, hi)  # deterministic
