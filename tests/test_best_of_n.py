"""BestOfN behaviour on the scripted backend: voting, selection modes, adaptive stopping,
batching (one engine call per round), verifier handling and budget errors."""

from __future__ import annotations

import asyncio

import pytest

from ttscale import Budget, BudgetError, ConfigError, VerifierError, solve
from ttscale.backends import ScriptedBackend
from ttscale.strategies import BestOfN, make_strategy
from ttscale.types import Problem
from ttscale.verifiers import ScriptedVerifier

RIGHT = "Compute.\n\nSo \\boxed{\\frac{1}{2}}."
RIGHT_DECIMAL = "Divide.\n\nSo \\boxed{0.5}."
WRONG = "Guess.\n\nSo \\boxed{3}."
NOBOX = "I am not sure."


def run(strategy, gen, verifier=None, budget=None, prompt="half of one?"):
    return asyncio.run(strategy.run(Problem(prompt), gen, verifier, Budget.parse(budget)))


def test_majority_groups_equivalent_answers():
    gen = ScriptedBackend(script={"half": [RIGHT, RIGHT_DECIMAL, WRONG]})
    res = run(BestOfN(n=12, round_size=12, adaptive=False), gen)
    table = {row["answer"]: row["votes"] for row in res.extras["votes"]}
    # 1/2 and 0.5 vote together through math-verify.
    assert res.answer in ("\\frac{1}{2}", "0.5")
    assert sum(table.values()) == 12 and len(table) == 2
    assert len(gen.calls) == 1 and gen.calls[0][0].n == 12  # one batched call


def test_one_engine_call_per_round_and_seeds_advance():
    gen = ScriptedBackend(script={"half": [RIGHT, WRONG]})
    res = run(BestOfN(n=10, round_size=4, adaptive=False), gen)
    assert [len(c) for c in gen.calls] == [1, 1, 1]
    assert [c[0].n for c in gen.calls] == [4, 4, 2]
    assert [c[0].seed for c in gen.calls] == [0, 1, 2]
    assert res.ledger.engine_calls == 3 and len(res.candidates) == 10


def test_adaptive_stop_when_unanimous():
    gen = ScriptedBackend(script={"half": [RIGHT]})
    res = run(BestOfN(n=64, round_size=4, confidence=0.95), gen)
    # 4 votes to 0: P = 1 - 1/32 > 0.95 after the first round.
    assert res.extras["stop_reason"] == "confident"
    assert res.ledger.rollouts == 4 and res.extras["confidence"] >= 0.95


def test_adaptive_keeps_sampling_when_split():
    gen = ScriptedBackend(script={"half": [RIGHT, WRONG]})
    res = run(BestOfN(n=8, round_size=2, confidence=0.99), gen)
    assert res.ledger.rollouts > 2


def test_weighted_vote_follows_verifier():
    gen = ScriptedBackend(script={"half": [RIGHT, RIGHT, WRONG]})
    likes_three = ScriptedVerifier(
        lambda p, steps: [0.01] * (len(steps) - 1) + [1.0 if "{3}" in steps[-1] else 0.01]
    )
    res = run(BestOfN(n=12, round_size=12, adaptive=False), gen, likes_three)
    assert res.extras["select"] == "weighted" and res.answer == "3"
    assert res.ledger.verifier_calls == 1
    assert all(c.score is not None and c.step_scores for c in res.candidates)
    majority = run(BestOfN(n=12, round_size=12, adaptive=False, select="majority"), gen)
    assert majority.answer != "3"


def test_best_select_takes_top_candidate():
    gen = ScriptedBackend(script={"half": [RIGHT, WRONG]})
    ver = ScriptedVerifier(lambda p, steps: [0.9 if "{3}" in "".join(steps) else 0.2])
    res = run(BestOfN(n=6, round_size=6, adaptive=False, select="best", agg="min"), gen, ver)
    assert res.answer == "3"


def test_no_boxed_answer_gives_none():
    res = run(BestOfN(n=4, round_size=4), ScriptedBackend(script={"half": [NOBOX]}))
    assert res.answer is None and all(c.answer is None for c in res.candidates)


def test_nan_scores_raise_verifier_error():
    gen = ScriptedBackend(script={"half": [RIGHT]})
    bad = ScriptedVerifier(lambda p, steps: [float("nan")] * len(steps), name="bad")
    with pytest.raises(VerifierError, match="'bad'.*non-finite"):
        run(BestOfN(n=2, round_size=2), gen, bad)


def test_budget_too_small_for_one_sample():
    with pytest.raises(BudgetError, match="cannot pay for one sample"):
        run(BestOfN(min_sample_tokens=128), ScriptedBackend(), budget="tokens=100")


def test_token_budget_splits_per_sample_cap():
    gen = ScriptedBackend()
    res = run(
        BestOfN(n=8, round_size=4, max_tokens=1024, min_sample_tokens=64, adaptive=False),
        gen,
        budget="tokens=1000",
        prompt="What is 6*7?",
    )
    assert gen.calls[0][0].max_tokens == 250  # 1000 tokens / 4 samples
    assert res.ledger.generated_tokens <= 1000


def test_truncated_samples_are_marked_length():
    gen = ScriptedBackend(script={"half": ["x" * 500 + "\\boxed{1}"]})
    res = run(BestOfN(n=2, round_size=2, max_tokens=100, min_sample_tokens=10), gen)
    assert all(c.finish_reason == "length" and c.answer is None for c in res.candidates)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"n": 0}, "n=0"),
        ({"round_size": -1}, "round_size"),
        ({"confidence": 0.3}, "confidence"),
        ({"select": "magic"}, "select"),
        ({"agg": "max"}, "agg"),
        ({"min_sample_tokens": 2000}, "min_sample_tokens"),
        ({"bogus": 1}, "no option 'bogus'"),
    ],
)
def test_bad_options(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make_strategy("best_of_n", **options)


def test_weighted_without_verifier_is_config_error():
    with pytest.raises(ConfigError, match="needs a verifier"):
        run(BestOfN(select="weighted"), ScriptedBackend())


def test_solve_front_door_scripted():
    res = solve("What is 12*7?", budget="rollouts=8", backend="scripted")
    assert res.answer == "84" and res.strategy == "best_of_n"
    assert res.ledger.rollouts == 8 and res.ledger.engine["backend"] == "scripted"
    assert '"answer": "84"' in res.to_json()


@pytest.mark.parametrize("prompt", ["", "   ", None, 42])
def test_solve_rejects_bad_prompt(prompt):
    with pytest.raises(ConfigError, match="prompt"):
        solve(prompt, backend="scripted")


def test_solve_inside_running_loop_points_to_asolve():
    async def inner():
        solve("What is 1+1?", backend="scripted")

    with pytest.raises(ConfigError, match="asolve"):
        asyncio.run(inner())
