"""Hard caps for the search strategies (hypothesis): for random budgets in tokens, rollouts
and eFLOPs, random hyper-parameters, and both a free scripted verifier and a generative
judge that spends through the same ledger, no strategy ever exceeds a cap. A strategy
either returns a result within every cap or raises ``BudgetError`` before spending anything
(the budget cannot pay for its first step)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ttscale import Budget, BudgetError
from ttscale.backends import ScriptedBackend
from ttscale.strategies import DVTS, PDR, BeamSearch, BestOfN, ParticleFilter, SequentialRefine
from ttscale.types import Problem
from ttscale.verifiers import LLMJudge, ScriptedVerifier

SOLUTIONS = [
    "We set up.\n\nWe compute 6 * 7.\n\nSo \\boxed{42}.",
    "We guess.\n\nWe compute 6 * 8.\n\nThen we check it twice.\n\nSo \\boxed{48}.",
    "Let us think.\n\nSo \\boxed{42}.",
]


@st.composite
def strategies(draw):
    kind = draw(st.sampled_from(["beam", "dvts", "pf", "pdr", "sr", "pdr_bon"]))
    common = dict(seed=draw(st.integers(0, 5)))
    step = dict(
        step_tokens=draw(st.integers(4, 64)),
        min_step_tokens=draw(st.integers(1, 8)),
        max_tokens=draw(st.integers(16, 200)),
        max_steps=draw(st.integers(1, 8)),
    )
    if kind in ("beam", "dvts"):
        m = draw(st.integers(1, 4))
        cls = BeamSearch if kind == "beam" else DVTS
        return cls(
            n=m * draw(st.integers(1, 3)),
            beam_width=m,
            lookahead=draw(st.integers(0, 1)),
            **step,
            **common,
        )
    if kind == "pf":
        return ParticleFilter(
            n=draw(st.integers(1, 8)),
            resample_when=draw(st.sampled_from(["always", "ess"])),
            **step,
            **common,
        )
    draft = dict(
        max_tokens=draw(st.integers(16, 200)),
        min_draft_tokens=draw(st.integers(1, 16)),
        workspace_tokens=draw(st.integers(8, 64)),
        **common,
    )
    if kind == "sr":
        return SequentialRefine(drafts=(1,) * draw(st.integers(1, 4)), **draft)
    drafts = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    drafter = BestOfN(n=2, round_size=2, min_sample_tokens=1) if kind == "pdr_bon" else None
    return PDR(
        drafts=drafts,
        distill=draw(st.sampled_from(["select", "summary"])),
        drafter=drafter,
        **draft,
    )


budgets = st.builds(
    Budget,
    tokens=st.one_of(st.none(), st.integers(1, 3000)),
    rollouts=st.one_of(st.none(), st.integers(1, 40)),
    flops=st.one_of(st.none(), st.floats(8.0, 10.5).map(lambda e: 10.0**e)),
).map(lambda b: Budget(tokens=400) if b.is_unlimited else b)


def judge() -> LLMJudge:
    """A generative verifier on a scripted engine: one token and one rollout per judgement."""
    return LLMJudge(ScriptedBackend(script=lambda p: ["Yes"]), yes_words=("y",), no_words=("n",))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=strategies(), budget=budgets, generative=st.booleans())
def test_no_strategy_exceeds_a_hard_cap(strategy, budget, generative):
    gen = ScriptedBackend(script={"6": SOLUTIONS})
    verifier = judge() if generative else ScriptedVerifier(lambda p, s: [0.3] * len(s))
    try:
        res = asyncio.run(strategy.run(Problem("What is 6 times 7?"), gen, verifier, budget))
    except BudgetError:
        assert gen.calls == []  # refused before spending anything
        event("BudgetError before the first step")
        return
    event(f"ran: stopped_by={res.ledger.stopped_by}")
    led = res.ledger
    if budget.tokens is not None:
        assert led.generated_tokens <= budget.tokens
    if budget.rollouts is not None:
        assert led.rollouts <= budget.rollouts
    if budget.flops is not None:
        assert led.eflops <= budget.flops * (1 + 1e-9)
    assert "tokens" not in led.overshoot and "rollouts" not in led.overshoot
    assert "flops" not in led.overshoot
