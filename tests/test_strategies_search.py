"""The shared search machinery in ``strategies/_search.py``, without an engine: step
splitting, node extension by token ids, keep-top, softmax weights, ESS, multinomial and
systematic resampling (statistical checks with fixed seeds), prompt merging, step sizing
against the ledger, and ledger absorption for composed strategies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale import Budget
from ttscale.backends import ScriptedBackend
from ttscale.budget import Ledger
from ttscale.strategies.search import (
    Node,
    absorb,
    build_workspace,
    effective_sample_size,
    fit_step,
    keep_top,
    merge_prompts,
    multinomial_resample,
    select_answer,
    softmax,
    split_steps,
    systematic_resample,
)
from ttscale.types import Candidate, Completion, GenerationRequest


def comp(text: str, finish: str = "stop") -> Completion:
    return Completion(text, tuple(ord(c) for c in text), finish)  # type: ignore[arg-type]


def test_split_steps_drops_blank_pieces():
    assert split_steps("a\n\nb\n\n\n\nc", "\n\n") == ["a", "b", "c"]
    assert split_steps("", "\n\n") == []


def test_node_extend_by_token_ids_and_finish_rules():
    root = Node((1, 2, 3))
    step = root.extend(comp("x = 1\n\n"), id=1, delimiter="\n\n", max_tokens=100)
    assert step.ids == (1, 2, 3, *comp("x = 1\n\n").token_ids) and not step.done
    assert step.parent == 0 and step.text == "x = 1\n\n"
    eos = step.extend(comp("done."), id=2, delimiter="\n\n", max_tokens=100)
    assert eos.done and eos.finish_reason == "stop"  # stop without the delimiter = EOS
    boxed = step.extend(comp("So \\boxed{4}.\n\n"), id=3, delimiter="\n\n", max_tokens=100)
    assert boxed.done and boxed.finish_reason == "stop"
    cut = step.extend(comp("long", "length"), id=4, delimiter="\n\n", max_tokens=100)
    assert not cut.done  # a step cut by the step cap is continued
    full = step.extend(comp("long", "length"), id=5, delimiter="\n\n", max_tokens=10)
    assert full.done and full.finish_reason == "length"


def test_keep_top_is_stable_and_dedups():
    nodes = [Node((), (i % 3,), score=s, id=i) for i, s in enumerate([0.2, 0.9, 0.9, 0.5, 0.9])]
    # ids 1 (0.9), 2 (0.9), 4 (0.9): token ids (1,), (2,), (1,) -> 4 duplicates 1.
    assert [n.id for n in keep_top(nodes, 3)] == [1, 2, 3]
    assert [n.id for n in keep_top(nodes, 3, dedup=False)] == [1, 2, 4]
    assert keep_top(nodes, 0) == []


def test_softmax_and_ess():
    w = softmax([0.0, 0.0, 0.0, 0.0])
    assert np.allclose(w, 0.25) and effective_sample_size(w) == pytest.approx(4.0)
    sharp = softmax([1.0, 0.0], temperature=0.01)
    assert sharp[0] > 0.999 and effective_sample_size(sharp) == pytest.approx(1.0, abs=1e-3)
    assert np.isfinite(softmax([1e6, -1e6])).all()  # max-shifted: no overflow
    with pytest.raises(ValueError):
        softmax([1.0], temperature=0)


def test_multinomial_frequencies_match_weights():
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    draws = multinomial_resample(weights, 200_000, np.random.default_rng(0))
    freq = np.bincount(draws, minlength=4) / draws.size
    # std of each frequency is <= sqrt(0.25 / 200k) ~ 0.0011: 0.005 is > 4 sigma.
    assert np.abs(freq - weights).max() < 0.005
    # Chi-square goodness of fit, 3 degrees of freedom: 99.9% quantile is 16.27.
    counts = np.bincount(draws, minlength=4)
    expected = weights * draws.size
    assert float(((counts - expected) ** 2 / expected).sum()) < 16.27


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(st.floats(0.001, 10.0), min_size=1, max_size=12),
    n=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_systematic_counts_are_floor_or_ceil_of_n_w(raw, n, seed):
    weights = np.asarray(raw) / np.sum(raw)
    idx = systematic_resample(weights, n, np.random.default_rng(seed))
    counts = np.bincount(idx, minlength=len(weights))
    assert idx.size == n and counts.sum() == n and idx.max() < len(weights)
    assert np.all(counts >= np.floor(n * weights) - 1e-9)
    assert np.all(counts <= np.ceil(n * weights) + 1e-9)


def test_resampling_is_reproducible_per_seed():
    w = softmax([0.1, 0.5, 0.2, 0.9, 0.3])
    for fn in (multinomial_resample, systematic_resample):
        a = fn(w, 50, np.random.default_rng(7))
        b = fn(w, 50, np.random.default_rng(7))
        assert np.array_equal(a, b)


def test_merge_prompts_groups_identical_prefixes_in_order():
    assert merge_prompts([(1,), (2,), (1,), (3,), (2,)]) == [
        ((1,), [0, 2]),
        ((2,), [1, 4]),
        ((3,), [3]),
    ]


def test_fit_step_halves_then_drops_and_reserves():
    gen = ScriptedBackend()
    template = GenerationRequest((), seed=10)
    demands = [((1,), 4, 100), ((2,), 4, 100)]
    ledger = Ledger(Budget(tokens=800))
    reqs = fit_step(ledger, gen, demands, template, min_tokens=10)
    assert [r.max_tokens for r in reqs] == [100, 100] and [r.seed for r in reqs] == [10, 11]
    tight = Ledger(Budget(tokens=400))
    halved = fit_step(tight, gen, demands, template, min_tokens=10)
    assert [r.max_tokens for r in halved] == [50, 50]
    # 8 samples x 10 tokens = 80 > 60: cannot fit without dropping the second demand.
    tiny = Ledger(Budget(tokens=60))
    assert fit_step(tiny, gen, demands, template, min_tokens=10) == []
    dropped = fit_step(tiny, gen, demands, template, min_tokens=10, allow_drop=True)
    assert len(dropped) == 1 and dropped[0].prompt_token_ids == (1,)
    # The verifier reserve (tokens and rollouts) is held back.
    rolls = Ledger(Budget(rollouts=8))
    assert fit_step(rolls, gen, demands, template, min_tokens=10)
    assert fit_step(rolls, gen, demands, template, min_tokens=10, reserve=1) == []


def test_build_workspace_is_bounded_and_keeps_tails():
    gen = ScriptedBackend()
    texts = ["a" * 500 + " answer A", "b" * 300 + " answer B", "short"]
    ws = build_workspace(texts, 90, gen.encode, gen.decode)
    assert len(gen.encode(ws)) <= 90
    assert "answer A" in ws and "answer B" in ws and "short" in ws and "Attempt 3:" in ws
    assert build_workspace(["x" * 10], 1000, gen.encode, gen.decode) == "Attempt 1:\n" + "x" * 10


def test_absorb_adds_spending():
    parent, child = Ledger(), Ledger()
    parent.generated_tokens, child.generated_tokens = 5, 7
    child.rollouts, child.engine_calls, child.cached_tokens = 2, 1, 32
    absorb(parent, child)
    assert (
        parent.generated_tokens,
        parent.rollouts,
        parent.engine_calls,
        parent.cached_tokens,
    ) == (12, 2, 1, 32)


def test_select_answer_modes():
    cands = [
        Candidate("", "1", 1, "stop", score=0.1),
        Candidate("", "1", 1, "stop", score=0.1),
        Candidate("", "2", 1, "stop", score=0.9),
        Candidate("", None, 1, "length", score=1.0),
    ]
    assert select_answer(cands, "majority")[0] == "1"
    assert select_answer(cands, "weighted")[0] == "2"
    assert select_answer(cands, "best")[0] == "2"  # the answerless candidate cannot win
    assert select_answer(cands, "weighted", weights=[1, 1, 0.5, 0])[0] == "1"
