"""OpenAIBackend end to end through the official ``openai`` client.

The server is an in-process FastAPI double of ``vllm serve``'s endpoints that the backend
uses (``/v1/models``, ``/tokenize``, ``/detokenize``, ``/v1/completions`` with token-id
prompts and ``return_token_ids``), answering from ScriptedBackend. Verifies request
mapping (n, stop, include_stop, seed, max_tokens), conversion (token ids, finish reasons,
cached tokens), best-of-N through the backend, and error mapping (unreachable server,
context length, 5xx).
"""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ttscale import (
    BackendError,
    BackendUnavailable,
    ContextLengthError,
    GenerationRequest,
    Problem,
    solve,
)
from ttscale.backends import OpenAIBackend, ScriptedBackend
from ttscale.server.runner import serve_in_thread


def vllm_error(code: int, message: str) -> JSONResponse:
    body = {"object": "error", "message": message, "type": "BadRequestError", "code": code}
    return JSONResponse(body, status_code=code)


def fake_vllm_server(engine: ScriptedBackend, seen: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "toy", "object": "model"}]}

    @app.post("/tokenize")
    async def tokenize(body: dict):
        if "messages" in body:
            msgs = {m["role"]: m["content"] for m in body["messages"]}
            ids = engine.render(Problem(msgs["user"], msgs.get("system")))
        else:
            ids = engine.encode(body["prompt"])
        return {"tokens": list(ids), "count": len(ids)}

    @app.post("/detokenize")
    async def detokenize(body: dict):
        return {"prompt": engine.decode(body["tokens"])}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        seen.append(body)
        if body["max_tokens"] > 10_000:  # vLLM's error body shape
            return vllm_error(400, "This model's maximum context length is 32768 tokens")
        if body.get("seed") == 666:
            return vllm_error(500, "engine died")
        stop = body.get("stop") or []
        req = GenerationRequest(
            tuple(body["prompt"]),
            n=body.get("n", 1),
            max_tokens=body["max_tokens"],
            stop=tuple([stop] if isinstance(stop, str) else stop),
            include_stop=body.get("include_stop_str_in_output", False),
            seed=body.get("seed"),
        )
        out = (await engine.generate([req]))[0]
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": "toy",
            "choices": [
                {
                    "index": i,
                    "text": c.text,
                    "token_ids": list(c.token_ids),
                    "finish_reason": c.finish_reason,
                    "logprobs": None,
                }
                for i, c in enumerate(out.completions)
            ],
            "usage": {
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": sum(c.num_tokens for c in out.completions),
                "total_tokens": 0,
                "prompt_tokens_details": {"cached_tokens": out.cached_tokens},
            },
        }

    return app


@pytest.fixture(scope="module")
def server():
    seen: list[dict] = []
    engine = ScriptedBackend(script={"nine": ["Step.\n\nSo \\boxed{9}."]})
    with serve_in_thread(fake_vllm_server(engine, seen)) as url:
        yield url, seen, engine


def test_generate_maps_request_and_response(server):
    url, seen, engine = server
    backend = OpenAIBackend(f"{url}/v1")
    assert backend.model == "toy"
    prompt = backend.render(Problem("nine?"))
    assert prompt == engine.render(Problem("nine?"))
    req = GenerationRequest(prompt, n=3, max_tokens=64, stop=("\n\n",), include_stop=True, seed=5)
    (out,) = asyncio.run(backend.generate([req]))
    body = seen[-1]
    assert body["prompt"] == list(prompt) and body["n"] == 3 and body["seed"] == 5
    assert body["stop"] == ["\n\n"] and body["include_stop_str_in_output"] is True
    assert [c.text for c in out.completions] == ["Step.\n\n"] * 3
    assert all(
        c.finish_reason == "stop" and c.token_ids == engine.encode("Step.\n\n")
        for c in out.completions
    )
    assert out.prompt_tokens == len(prompt)
    assert backend.decode(engine.encode("héllo")) == "héllo"
    asyncio.run(backend.close())


def test_best_of_n_through_openai_backend_reports_cache_hits(server):
    url, _, _ = server
    backend = OpenAIBackend(f"{url}/v1", model="toy", max_concurrency=2)
    res = solve("nine?", budget="rollouts=8", backend=backend, n=8, round_size=4, adaptive=False)
    assert res.answer == "9" and res.ledger.engine_calls == 2 and res.ledger.rollouts == 8
    assert res.ledger.cached_tokens > 0  # second round re-sends the same prompt
    asyncio.run(backend.close())


def test_error_mapping(server):
    url, _, _ = server
    backend = OpenAIBackend(f"{url}/v1", model="toy", max_retries=0)
    prompt = backend.render(Problem("nine?"))
    with pytest.raises(ContextLengthError, match="context"):
        asyncio.run(backend.generate([GenerationRequest(prompt, max_tokens=20_000)]))
    with pytest.raises(BackendError, match="500"):
        asyncio.run(backend.generate([GenerationRequest(prompt, seed=666)]))
    asyncio.run(backend.close())


def test_unreachable_server_names_the_fix():
    with pytest.raises(
        BackendUnavailable, match="cannot reach the server at http://127.0.0.1:9/v1.*fix"
    ):
        OpenAIBackend("http://127.0.0.1:9/v1")
