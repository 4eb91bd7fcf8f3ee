"""LLM-as-judge verifier on ScriptedBackend (deterministic).

Verifies: P(yes) normalisation over yes/no token variants (and the neutral 0.5 when neither
appears); that all steps of all candidates go to the engine in ONE generate call, one prompt
per step prefix in order; ledger accounting of that call; outcome mode; empty candidates,
over-long prompts, backends without logprobs and bad options; and use inside best-of-N.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import pytest

from ttscale.backends import ScriptedBackend
from ttscale.budget import Budget, Ledger
from ttscale.errors import ConfigError, VerifierError
from ttscale.strategies import BestOfN
from ttscale.types import Completion, GenerationOutput, Problem
from ttscale.verifiers import LLMJudge, yes_probability
from ttscale.verifiers.llm_judge import NEUTRAL

BYTE_WORDS = dict(yes_words=("y",), no_words=("n",))  # the toy tokenizer emits one byte


def _last_step(judge_prompt: str) -> str:
    solution = judge_prompt.split("Solution so far:\n", 1)[-1].split("Solution:\n", 1)[-1]
    solution = solution.rsplit("\n\nIs ", 1)[0]
    return solution.split("\n\n")[-1]


def judge_script(judge_prompt: str) -> list[str]:
    """A judge that says No to any step containing 'WRONG' and shrugs at 'MAYBE'."""
    last = _last_step(judge_prompt)
    if "MAYBE" in last:
        return ["Maybe"]
    return ["No" if "WRONG" in last else "Yes"]


def _judge(**kw) -> tuple[LLMJudge, ScriptedBackend]:
    backend = ScriptedBackend(script=judge_script)
    return LLMJudge(backend, **{**BYTE_WORDS, **kw}), backend


P = Problem("What is 2+2?")
CANDS = [["Two plus two.", "So 4."], ["WRONG: 2+2=5.", "So 5."], ["Just 4."], ["MAYBE 4."]]


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"Yes": math.log(0.6), " No": math.log(0.2), "The": math.log(0.1)}, 0.75),
        ({" yes": math.log(0.3), "YES": math.log(0.3), "no": math.log(0.2)}, 0.75),
        ({"Yes.": math.log(0.5)}, 1.0),
        ({"**No**": math.log(0.4)}, 0.0),
        ({"Maybe": -0.1, "The": -2.0}, None),
        ({}, None),
    ],
)
def test_yes_probability_normalises_over_variants(top, expected):
    p = yes_probability(top)
    assert p == expected if expected is None else math.isclose(p, expected)


def test_all_steps_of_all_candidates_in_one_call():
    judge, backend = _judge()
    scores = asyncio.run(judge.score([P] * len(CANDS), CANDS))
    assert scores == [[1.0, 1.0], [0.0, 1.0], [1.0], [NEUTRAL]]
    assert len(backend.calls) == 1
    requests = backend.calls[0]
    assert len(requests) == sum(len(c) for c in CANDS)
    assert all(r.max_tokens == 1 and r.n == 1 and r.logprobs == 10 for r in requests)
    # step alignment: prompt k of a candidate shows exactly its steps 1..k, in order
    texts = [backend.decode(r.prompt_token_ids) for r in requests]
    expected = [
        judge.step_template.format(problem=P.prompt, solution="\n\n".join(c[:k]))
        for c in CANDS
        for k in range(1, len(c) + 1)
    ]
    assert all(e in t for e, t in zip(expected, texts, strict=True))


def test_ledger_accounts_the_judge_call():
    judge, backend = _judge()
    ledger = Ledger(Budget())
    asyncio.run(judge.score([P] * len(CANDS), CANDS, ledger=ledger))
    requests = backend.calls[0]
    assert ledger.engine_calls == 1
    assert ledger.rollouts == len(requests) == ledger.generated_tokens
    assert ledger.prompt_tokens == sum(len(r.prompt_token_ids) for r in requests)
    assert ledger.eflops > 0


def test_outcome_mode_scores_full_solutions_once():
    judge, backend = _judge(mode="outcome")
    scores = asyncio.run(judge.score([P] * len(CANDS), CANDS))
    assert scores == [[1.0], [1.0], [1.0], [NEUTRAL]]  # the last step decides in this script
    assert len(backend.calls) == 1 and len(backend.calls[0]) == len(CANDS)
    second = backend.decode(backend.calls[0][1].prompt_token_ids)
    assert "Solution:\nWRONG: 2+2=5.\n\nSo 5." in second


def test_empty_candidates_cost_nothing():
    judge, backend = _judge()
    assert asyncio.run(judge.score([P, P], [[], ["So 4."]])) == [[], [1.0]]
    assert len(backend.calls[0]) == 1
    assert asyncio.run(judge.score([P], [[]])) == [[]]
    assert len(backend.calls) == 1  # nothing to judge: no engine call at all


def test_over_long_prompt_is_neutral_or_an_error(caplog):
    long_step = "x" * 400
    judge, backend = _judge(max_model_len=400)
    with caplog.at_level("WARNING"):
        scores = asyncio.run(judge.score([P, P], [["So 4."], [long_step]]))
    assert scores == [[1.0], [NEUTRAL]] and "exceeds the window" in caplog.text
    assert len(backend.calls[0]) == 1
    strict, _ = _judge(max_model_len=400, overflow="error")
    with pytest.raises(VerifierError, match="context window of 400"):
        asyncio.run(strict.score([P], [[long_step]]))
    # the backend's own window is used when none is given
    small = ScriptedBackend(script=judge_script, max_model_len=400)
    assert asyncio.run(LLMJudge(small, **BYTE_WORDS).score([P], [[long_step]])) == [[NEUTRAL]]


def test_mismatched_inputs_and_bad_options():
    judge, _ = _judge()
    with pytest.raises(ConfigError, match="one problem per candidate"):
        asyncio.run(judge.score([P], CANDS))
    with pytest.raises(ConfigError, match="mode"):
        LLMJudge(ScriptedBackend(), mode="steps")
    with pytest.raises(ConfigError, match="top_k"):
        LLMJudge(ScriptedBackend(), top_k=0)
    with pytest.raises(ConfigError, match=r"\{solution\}"):
        LLMJudge(ScriptedBackend(), step_template="Is {problem} right?")


@dataclass
class NoLogprobs(ScriptedBackend):
    """A backend that ignores ``logprobs`` (like a server that does not return them)."""

    async def generate(self, requests):
        outs = await super().generate(requests)
        return [
            GenerationOutput(
                tuple(Completion(c.text, c.token_ids, c.finish_reason) for c in o.completions),
                o.prompt_tokens,
            )
            for o in outs
        ]


def test_backend_without_logprobs_is_a_clear_error():
    judge = LLMJudge(NoLogprobs(script=judge_script), **BYTE_WORDS)
    with pytest.raises(VerifierError, match="top_logprobs"):
        asyncio.run(judge.score([P], [["So 4."]]))


def test_custom_template_and_system_prompt_reach_the_engine():
    backend = ScriptedBackend(script=lambda _: ["Yes"])
    judge = LLMJudge(
        backend,
        step_template="Q: {problem}\nA: {solution}\nOK?",
        system_prompt="Judge.",
        **BYTE_WORDS,
    )
    asyncio.run(judge.score([P], [["So 4."]]))
    text = backend.decode(backend.calls[0][0].prompt_token_ids)
    assert "Judge." in text and "Q: What is 2+2?\nA: So 4.\nOK?" in text


def test_judge_inside_best_of_n_picks_the_endorsed_answer():
    """Policy: toy arithmetic (3 right, 2 off-by-one). Judge: endorses only 'gives 84'."""
    policy = ScriptedBackend()
    judge_backend = ScriptedBackend(script=lambda prompt: ["Yes" if "gives 84" in prompt else "No"])
    judge = LLMJudge(judge_backend, mode="outcome", **BYTE_WORDS)
    res = asyncio.run(
        BestOfN(n=8, round_size=8, adaptive=False, select="best").run(
            Problem("What is 12*7?"), policy, judge, Budget()
        )
    )
    assert res.answer == "84"
    assert len(judge_backend.calls) == 1 and res.ledger.engine_calls == 2
    assert res.ledger.verifier_calls == 1


def test_identical_prompts_in_one_call_are_judged_once():
    judge, backend = _judge()
    scores = asyncio.run(judge.score([P, P, P], [["So 4."], ["WRONG 5."], ["So 4."]]))
    assert scores == [[1.0], [0.0], [1.0]]
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 2


def test_a_run_reuses_its_own_judgements_and_only_its_own():
    """Step mode re-asks about every earlier prefix; within one ledger those come from the
    memo (nothing charged), a second ledger pays again, and ``reuse=False`` always asks."""
    judge, backend = _judge()
    ledger = Ledger(Budget())
    first = asyncio.run(judge.score([P], [["Two plus two."]], ledger=ledger))
    spent = ledger.generated_tokens
    grown = asyncio.run(judge.score([P], [["Two plus two.", "WRONG 5."]], ledger=ledger))
    assert first == [[1.0]] and grown == [[1.0, 0.0]]
    assert [len(c) for c in backend.calls] == [1, 1]  # only the new prefix went out
    assert ledger.generated_tokens == spent + 1 and ledger.engine_calls == 2
    # all known: no engine call at all
    assert asyncio.run(judge.score([P], [["Two plus two."]], ledger=ledger)) == [[1.0]]
    assert len(backend.calls) == 2
    other = Ledger(Budget())
    asyncio.run(judge.score([P], [["Two plus two.", "WRONG 5."]], ledger=other))
    assert len(backend.calls[-1]) == 2 and other.generated_tokens == 2
    fresh, fresh_backend = _judge(reuse=False)
    for _ in range(2):
        asyncio.run(fresh.score([P], [["Two plus two.", "WRONG 5."]], ledger=ledger))
    assert [len(c) for c in fresh_backend.calls] == [2, 2]


def test_beam_search_with_reuse_asks_less_and_decides_the_same():
    """Step-mode judging inside beam search: reuse sends only unseen prefixes, and the
    search keeps the same beams, candidates and scores as when every prefix is re-asked."""
    from itertools import product

    from ttscale.strategies import BeamSearch

    sols = [
        "\n\n".join(f"{c}{i}." for i, c in enumerate(combo))
        + f"\n\nSo \\boxed{{{combo.count('X')}}}."
        for combo in product("XY", repeat=3)
    ]

    def search(reuse: bool):
        judge_backend = ScriptedBackend(
            script=lambda p: ["No" if _last_step(p)[:1] == "Y" else "Yes"]
        )
        judge = LLMJudge(judge_backend, reuse=reuse, **BYTE_WORDS)
        beam = BeamSearch(n=4, beam_width=2, temperature=1.0)
        policy = ScriptedBackend(script={"chain": sols})
        res = asyncio.run(beam.run(Problem("Walk the chain."), policy, judge, Budget()))
        return res, sum(len(c) for c in judge_backend.calls)

    reused, asked = search(True)
    again, asked_again = search(False)
    assert reused.answer == again.answer == "3"
    assert [(c.text, c.step_scores) for c in reused.candidates] == [
        (c.text, c.step_scores) for c in again.candidates
    ]
    assert asked < asked_again, (asked, asked_again)
    assert reused.ledger.generated_tokens < again.ledger.generated_tokens
