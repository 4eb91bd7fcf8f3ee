"""Implicit PRM on two ScriptedBackends with different per-token logprobs.

The policy gives digits a higher logprob than the reference, so the exact step reward is
``beta * 0.1 * (digits in the step, delimiter included)``: any off-by-one in the token/step
alignment changes the scores. Verifies: that value for hand-written and generated steps
(hypothesis), ONE call per model for all candidates, ledger accounting of both calls,
outcome mode, the context-window cut (earlier steps exact, later ones neutral), NaN/inf
logprobs, empty candidates and mismatched tokenizers.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.backends import ScriptedBackend
from ttscale.budget import Budget, Ledger
from ttscale.errors import ConfigError, VerifierError
from ttscale.types import Problem
from ttscale.verifiers import ImplicitPRM
from ttscale.verifiers.implicit_prm import NEUTRAL, layout_steps, sigmoid

OFFSET = 3  # ScriptedBackend: byte b has token id b + 3


def _is_digit(token_id: int) -> bool:
    return chr(token_id - OFFSET).isdigit() if token_id >= OFFSET else False


def policy_lp(ids, i):
    return -0.1 if _is_digit(ids[i]) else -0.5


def reference_lp(ids, i):
    return -0.2 if _is_digit(ids[i]) else -0.5


def _pair(**kw):
    pol = ScriptedBackend(logprob_fn=policy_lp, **kw)
    ref = ScriptedBackend(logprob_fn=reference_lp, **kw)
    return pol, ref


def expected(steps, beta, delimiter="\n\n"):
    q, out = 0.0, []
    for j, step in enumerate(steps):
        text = step if j == len(steps) - 1 else step + delimiter
        q += beta * 0.1 * sum(ch.isdigit() for ch in text)
        out.append(sigmoid(q))
    return out


P = Problem("What is 7+5?")
CANDS = [["7 plus 5 is 12", "12 minus 0 is 12", "So 12"], ["Seven and five.", "Twelve."], ["1"]]


def test_step_rewards_are_exact_and_cumulative():
    pol, ref = _pair()
    prm = ImplicitPRM(pol, ref, beta=0.5)
    scores = asyncio.run(prm.score([P] * len(CANDS), CANDS))
    for steps, row in zip(CANDS, scores, strict=True):
        assert row == pytest.approx(expected(steps, 0.5), abs=1e-12)
    assert scores[1] == [0.5, 0.5]  # no digits: no evidence either way


def test_one_call_per_model_and_ledger():
    pol, ref = _pair()
    ledger = Ledger(Budget())
    asyncio.run(ImplicitPRM(pol, ref).score([P] * len(CANDS), CANDS, ledger=ledger))
    assert len(pol.calls) == len(ref.calls) == 1
    assert len(pol.calls[0]) == len(CANDS)
    assert [r.prompt_token_ids for r in pol.calls[0]] == [r.prompt_token_ids for r in ref.calls[0]]
    assert all(r.prompt_logprobs and r.max_tokens == 1 for r in pol.calls[0])
    prompt = sum(len(r.prompt_token_ids) for r in pol.calls[0])
    assert ledger.engine_calls == 2 and ledger.prompt_tokens == 2 * prompt
    assert ledger.rollouts == 2 * len(CANDS)  # one (discarded) 1-token sample per request
    assert ledger.generated_tokens <= 2 * len(CANDS)


def test_layout_records_exact_step_boundaries():
    pol, _ = _pair()
    lay = layout_steps(pol, P, CANDS[0])
    assert lay.token_ids[: lay.prompt_len] == pol.render(P)
    pieces = [pol.decode(lay.token_ids[a:b]) for a, b in lay.bounds]
    assert pieces == ["7 plus 5 is 12\n\n", "12 minus 0 is 12\n\n", "So 12"]
    assert lay.bounds[-1][1] == len(lay.token_ids)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.text(alphabet="ab1 2.\n", min_size=0, max_size=12), min_size=1, max_size=5),
    beta=st.floats(0.01, 2.0),
)
def test_any_steps_score_exactly(steps, beta):
    pol, ref = _pair()
    row = asyncio.run(ImplicitPRM(pol, ref, beta=beta).score([P], [steps]))[0]
    assert row == pytest.approx(expected(steps, beta), abs=1e-9)
    assert all(0.0 <= s <= 1.0 for s in row)


def test_outcome_mode_returns_the_final_score():
    pol, ref = _pair()
    scores = asyncio.run(ImplicitPRM(pol, ref, mode="outcome").score([P] * 3, CANDS))
    assert [len(r) for r in scores] == [1, 1, 1]
    assert scores[0][0] == pytest.approx(expected(CANDS[0], 0.05)[-1])


def test_context_cut_keeps_earlier_steps_exact(caplog):
    steps = CANDS[0]
    probe, _ = _pair()
    lay = layout_steps(probe, P, steps)
    window = lay.bounds[1][1] + 3  # steps 1-2 fit, step 3 does not
    pol, ref = _pair(max_model_len=window)
    with caplog.at_level("WARNING"):
        row = asyncio.run(ImplicitPRM(pol, ref, beta=0.5).score([P], [steps]))[0]
    assert row[:2] == pytest.approx(expected(steps, 0.5)[:2]) and row[2] == NEUTRAL
    assert "window" in caplog.text
    assert len(pol.calls[0][0].prompt_token_ids) == window - 1
    with pytest.raises(VerifierError, match="context window"):
        asyncio.run(ImplicitPRM(pol, ref, overflow="error").score([P], [steps]))
    tiny_pol, tiny_ref = _pair(max_model_len=10)  # not even the problem fits
    assert asyncio.run(ImplicitPRM(tiny_pol, tiny_ref).score([P], [steps])) == [[NEUTRAL] * 3]
    assert tiny_pol.calls == []


def test_infinite_and_nan_logprobs_stay_finite():
    pol = ScriptedBackend(logprob_fn=lambda ids, i: float("-inf"))
    ref = ScriptedBackend(logprob_fn=lambda ids, i: float("nan"))
    row = asyncio.run(ImplicitPRM(pol, ref).score([P], [["1 2"]]))[0]
    assert len(row) == 1 and math.isfinite(row[0]) and row[0] == 0.5  # both floored


def test_empty_candidates_and_mismatched_inputs():
    pol, ref = _pair()
    prm = ImplicitPRM(pol, ref)
    assert asyncio.run(prm.score([P, P], [[], ["1"]]))[0] == []
    assert asyncio.run(prm.score([P], [[]])) == [[]]
    with pytest.raises(ConfigError, match="problem per candidate"):
        asyncio.run(prm.score([P], CANDS))


@dataclass
class OtherTokenizer(ScriptedBackend):
    def encode(self, text):
        return tuple(b + 10 for b in text.encode())


def test_different_tokenizers_are_refused():
    with pytest.raises(ConfigError, match="tokenize differently"):
        ImplicitPRM(ScriptedBackend(), OtherTokenizer())
    with pytest.raises(ConfigError, match="beta"):
        ImplicitPRM(ScriptedBackend(), ScriptedBackend(), beta=0)
