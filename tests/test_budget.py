"""Budget parsing and validation, and the Ledger's hard-cap guarantee.

The property tests drive BestOfN with random budgets on the scripted backend and check
that no reservable cap (tokens, rollouts, eFLOPs) is ever exceeded, and that a seconds
overshoot is reported rather than hidden.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale import Budget, BudgetError, ConfigError, GenerationRequest, Ledger
from ttscale.backends import ScriptedBackend
from ttscale.strategies import BestOfN
from ttscale.types import Problem


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tokens=20000,seconds=60", {"tokens": 20000, "seconds": 60.0}),
        ("tokens=20k", {"tokens": 20000}),
        (" rollouts = 8 ", {"rollouts": 8}),
        ("flops=3P", {"flops": 3e15}),
        ("flops=1.5e12,seconds=0.5", {"flops": 1.5e12, "seconds": 0.5}),
        (4000, {"tokens": 4000}),
        ({"rollouts": 4, "seconds": 10}, {"rollouts": 4, "seconds": 10.0}),
        (None, {}),
    ],
)
def test_parse_accepts(spec, expected):
    assert Budget.parse(spec).model_dump(exclude_none=True) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("tokens=-5", "tokens"),
        ("tokens=0", "tokens"),
        ("foo=3", "unknown budget field 'foo'"),
        ("tokens", "not 'unit=value'"),
        ("tokens=abc", "not a number"),
        ("tokens=1.5", "whole number"),
        ("tokens=1,tokens=2", "given twice"),
        ("", "empty"),
        ({"seconds": float("nan")}, "seconds"),
        ({"bogus": 1}, "bogus"),
        (True, "budget must be"),
        ([1, 2], "budget must be"),
    ],
)
def test_parse_rejects_with_named_field(spec, fragment):
    with pytest.raises(ConfigError) as info:
        Budget.parse(spec)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@given(
    tokens=st.one_of(st.none(), st.integers(1, 10**9)),
    rollouts=st.one_of(st.none(), st.integers(1, 10**6)),
    seconds=st.one_of(st.none(), st.floats(0.001, 1e6)),
)
def test_parse_roundtrips_str(tokens, rollouts, seconds):
    b = Budget(tokens=tokens, rollouts=rollouts, seconds=seconds)
    again = Budget.parse(str(b)) if not b.is_unlimited else Budget()
    assert again.tokens == b.tokens and again.rollouts == b.rollouts
    if seconds is not None:
        assert math.isclose(again.seconds, seconds, rel_tol=1e-5)


def test_ledger_refuses_call_whose_worst_case_exceeds_cap():
    gen = ScriptedBackend()
    ledger = Ledger(Budget(tokens=100))
    req = GenerationRequest((5, 6, 7), n=2, max_tokens=51)
    assert not ledger.affords([req], gen)
    with pytest.raises(BudgetError, match="tokens cap"):
        asyncio.run(ledger.generate(gen, [req]))
    assert gen.calls == []  # refused before reaching the engine
    ok = GenerationRequest((5, 6, 7), n=2, max_tokens=50)
    assert ledger.affords([ok], gen)


def test_ledger_counts_and_cache_hits():
    gen = ScriptedBackend()
    problem = Problem("What is 3+4?")
    ledger = Ledger(Budget())
    prompt = gen.render(problem)
    req = GenerationRequest(prompt, n=3, max_tokens=500, seed=1)
    out1 = asyncio.run(ledger.generate(gen, [req]))
    out2 = asyncio.run(ledger.generate(gen, [req]))
    assert ledger.engine_calls == 2 and ledger.rollouts == 6
    assert ledger.prompt_tokens == 2 * len(prompt)
    assert ledger.generated_tokens == sum(c.num_tokens for o in out1 + out2 for c in o.completions)
    assert out1[0].cached_tokens == 0
    assert out2[0].cached_tokens == len(prompt) // 16 * 16 > 0
    assert ledger.cached_tokens == out2[0].cached_tokens
    assert ledger.eflops > 0


@settings(max_examples=60, deadline=None)
@given(
    tokens=st.one_of(st.none(), st.integers(200, 6000)),
    rollouts=st.one_of(st.none(), st.integers(1, 40)),
    flops=st.one_of(st.none(), st.floats(5e8, 5e10)),
    n=st.integers(1, 24),
    round_size=st.integers(1, 9),
    max_tokens=st.integers(60, 400),
)
def test_best_of_n_never_exceeds_hard_caps(tokens, rollouts, flops, n, round_size, max_tokens):
    budget = Budget(tokens=tokens, rollouts=rollouts, flops=flops)
    strat = BestOfN(
        n=n, round_size=round_size, max_tokens=max_tokens, min_sample_tokens=50, adaptive=False
    )
    gen = ScriptedBackend()
    try:
        result = asyncio.run(strat.run(Problem("What is 17*3?"), gen, None, budget))
    except BudgetError:
        # Only allowed when not even one minimal sample fits.
        probe = GenerationRequest(gen.render(Problem("What is 17*3?")), n=1, max_tokens=50)
        assert not Ledger(budget).affords([probe], gen)
        return
    led = result.ledger
    assert tokens is None or led.generated_tokens <= tokens
    assert rollouts is None or led.rollouts <= rollouts
    assert flops is None or led.eflops <= flops
    assert led.rollouts <= n
    assert "tokens" not in led.overshoot and "rollouts" not in led.overshoot
    assert "flops" not in led.overshoot
    assert len(gen.calls) == len(result.trace)  # one engine call per round


def test_seconds_overshoot_is_reported():
    gen = ScriptedBackend(delay_s=0.15)
    strat = BestOfN(n=8, round_size=2, adaptive=False)
    result = asyncio.run(strat.run(Problem("What is 2+2?"), gen, None, Budget(seconds=0.1)))
    led = result.ledger
    assert led.engine_calls == 1  # the second round is not started once time is up
    assert led.stopped_by == "seconds"
    assert led.overshoot["seconds"] > 0


def test_flops_cap_between_halvings_still_gets_a_sample():
    """Regression: sizing used to halve the per-sample cap (60 -> 30) under an eFLOPs cap and
    skip the affordable range [50, 60), raising BudgetError though a 50-token sample fit."""
    gen = ScriptedBackend()
    prompt = gen.render(Problem("What is 17*3?"))
    cost = {
        m: Ledger().worst_case_eflops([GenerationRequest(prompt, max_tokens=m)], gen)
        for m in range(50, 61)
    }
    budget = Budget(flops=(cost[55] + cost[56]) / 2)
    strat = BestOfN(n=1, round_size=1, max_tokens=60, min_sample_tokens=50)
    result = asyncio.run(strat.run(Problem("What is 17*3?"), gen, None, budget))
    assert gen.calls[0][0].max_tokens == 55  # the largest cap the eFLOPs budget affords
    assert result.ledger.eflops <= budget.flops
