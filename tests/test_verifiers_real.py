"""LLM judge on the embedded model (Qwen2.5-Coder-0.5B) through VLLMBackend.

Verifies that two short candidates for "What is 12*7?" (right and wrong) are judged in one
engine call, that the yes/no tokens are found among the top-10 logprobs (scores are not
all the neutral 0.5) and that scores are probabilities. Uses the session engine
(``tests/conftest.py``). Marked ``real_model`` (~30 s load);
run with ``pytest -m real_model tests/test_verifiers_real.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from ttscale.budget import Budget, Ledger
from ttscale.types import Problem
from ttscale.verifiers import LLMJudge

pytestmark = pytest.mark.real_model


def test_judge_on_embedded_model(vllm_backend):
    problem = Problem("What is 12*7?")
    candidates = [
        ["12*7 = 10*7 + 2*7 = 70 + 14 = 84.", "The answer is \\boxed{84}."],
        ["12*7 = 10*7 + 2*7 = 70 + 15 = 85.", "The answer is \\boxed{85}."],
    ]
    ledger = Ledger(Budget())
    judge = LLMJudge(vllm_backend)
    scores = asyncio.run(judge.score([problem] * 2, candidates, ledger=ledger))
    assert [len(r) for r in scores] == [2, 2]
    assert all(0.0 <= s <= 1.0 for row in scores for s in row)
    assert any(s != 0.5 for row in scores for s in row), "no Yes/No token in the top-10"
    assert ledger.engine_calls == 1 and ledger.rollouts == 4
    outcome = asyncio.run(LLMJudge(vllm_backend, mode="outcome").score([problem] * 2, candidates))
    assert [len(r) for r in outcome] == [1, 1]
