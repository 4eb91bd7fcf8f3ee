"""``ttscale serve`` end to end, with real clients over real sockets.

Verifies that the official ``openai`` client works unchanged against the server (sync,
async and streaming; only ``base_url`` and ``api_key`` differ): answers, ``usage`` with
the ledger in ``usage.ttscale_ledger``, the vote table in the ``ttscale`` extension,
progress events while streaming, model aliases and ``extra_body`` (strategy, budget,
options), and the protection layer: 401 without the key, 422 on malformed bodies, 400 on
budgets over the operator's cap, 413 on large bodies, 429 when the queue is full, 504 on
timeout, 502/500 on engine failures with the server staying up, all in OpenAI's error
shape. Uses a uvicorn server on a free localhost port and ``ScriptedBackend`` (fast); the
one ``real_model`` test serves the embedded model through ``VLLMBackend``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import openai
import pytest

from ttscale import solve
from ttscale.backends import ScriptedBackend
from ttscale.budget import Budget
from ttscale.errors import BackendError, ConfigError
from ttscale.server import APIError, cap_budget, create_app, serve_in_thread
from ttscale.strategies import STRATEGIES
from ttscale.types import GenerationOutput, GenerationRequest

KEY = "test-key"
Q = [{"role": "user", "content": "What is 12*7?"}]


@dataclass
class FaultyBackend(ScriptedBackend):
    """Scripted backend that fails on demand, to test engine errors."""

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        prompt = self.decode(requests[0].prompt_token_ids)
        if "crash the engine" in prompt:
            raise BackendError("engine crashed (test)")
        if "raise a bug" in prompt:
            raise RuntimeError("unexpected bug (test)")
        return await super().generate(requests)


@pytest.fixture(scope="module")
def server():
    backend = FaultyBackend()
    app = create_app(
        backend, api_key=KEY, max_budget="tokens=20000,rollouts=16,seconds=30", timeout_s=60
    )
    with serve_in_thread(app) as url:
        yield SimpleNamespace(url=url, backend=backend)


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def _post(url: str, body: object, key: str | None = KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, bytes):
        return httpx.post(f"{url}/v1/chat/completions", content=body, headers=headers, **kw)
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, **kw)


def _error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "code"} <= set(body["error"]), body
    return body["error"]


# -- the happy path with the official client -----------------------------------------------
def test_models_lists_every_registered_strategy(client):
    ids = {m.id for m in client.models.list().data}
    assert ids == {"ttscale"} | {f"ttscale/{name}" for name in STRATEGIES}


def test_sync_client_answer_usage_and_ledger(client):
    r = client.chat.completions.create(model="ttscale/best_of_n", messages=Q)
    assert r.object == "chat.completion" and r.model == "ttscale/best_of_n"
    assert "\\boxed{84}" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    ext = r.model_extra["ttscale"]
    assert ext["answer"] == "84"
    assert ext["votes"][0]["answer"] == "84"
    assert len(ext["candidates"]) == sum(v["votes"] for v in ext["votes"])
    ledger = r.usage.model_extra["ttscale_ledger"]
    assert r.usage.completion_tokens == ledger["generated_tokens"] > 0
    assert r.usage.prompt_tokens == ledger["prompt_tokens"] > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert ledger["rollouts"] == 8  # the default budget, rollouts=8
    assert ledger["budget"] == {"tokens": 20000, "rollouts": 8, "seconds": 30.0}


def test_async_client_concurrent_requests(server):
    async def main():
        aclient = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        questions = [(a, b) for a in (3, 7, 12) for b in (4, 9)]
        resps = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model="ttscale", messages=[{"role": "user", "content": f"What is {a}*{b}?"}]
                )
                for a, b in questions
            )
        )
        await aclient.close()
        return questions, resps

    questions, resps = asyncio.run(main())
    for (a, b), r in zip(questions, resps, strict=True):  # same answers as in-process solve
        local = solve(f"What is {a}*{b}?", "rollouts=8", backend=ScriptedBackend())
        assert r.model_extra["ttscale"]["answer"] == local.answer
        assert r.model_extra["ttscale"]["votes"] == local.extras["votes"]


def test_streaming_progress_then_answer(client):
    plain = client.chat.completions.create(model="ttscale/best_of_n", messages=Q)
    chunks = list(
        client.chat.completions.create(
            model="ttscale/best_of_n",
            messages=Q,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    events = [c.model_extra.get("ttscale") or {} for c in chunks]
    progress = [e for e in events if e.get("event") == "progress"]
    assert progress and progress[-1]["samples"] == 8 and progress[-1]["leader"] == "84"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert finals[0].model_extra["ttscale"]["answer"] == "84"
    assert chunks[-1].choices == []  # the include_usage chunk, as OpenAI sends it
    assert chunks[-1].usage.model_extra["ttscale_ledger"]["rollouts"] == 8


def test_async_streaming(server):
    async def main():
        aclient = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        stream = await aclient.chat.completions.create(
            model="ttscale", messages=[{"role": "user", "content": "What is 6*7?"}], stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await aclient.close()
        return "".join(parts)

    assert "\\boxed{42}" in asyncio.run(main())


def test_alias_and_extra_body_choose_strategy_budget_options(client):
    r = client.chat.completions.create(model="ttscale/best_of_n/rollouts=3", messages=Q)
    assert r.usage.model_extra["ttscale_ledger"]["rollouts"] == 3
    r = client.chat.completions.create(
        model="ttscale",
        messages=Q,
        extra_body={
            "strategy": "best_of_n",
            "budget": "tokens=4000,rollouts=6",
            "options": {"n": 4, "round_size": 2, "adaptive": False},
        },
    )
    ledger = r.usage.model_extra["ttscale_ledger"]
    assert ledger["budget"] == {"tokens": 4000, "rollouts": 6, "seconds": 30.0}
    assert ledger["rollouts"] == 4 and ledger["engine_calls"] == 2


def test_openai_sampling_fields_reach_the_strategy(client, server):
    client.chat.completions.create(
        model="ttscale", messages=Q, max_tokens=200, temperature=0.3, top_p=0.9, seed=5
    )
    req = server.backend.calls[-1][0]
    assert (req.max_tokens, req.temperature, req.top_p, req.seed) == (200, 0.3, 0.9, 5)


def test_system_message_overrides_default_and_last_user_message_is_the_prompt(client, server):
    messages = [
        {"role": "system", "content": "Answer tersely in \\boxed{}."},
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": [{"type": "text", "text": "What is 12*7?"}]},
    ]
    r = client.chat.completions.create(model="ttscale", messages=messages)
    prompt = server.backend.decode(server.backend.calls[-1][0].prompt_token_ids)
    assert "Answer tersely" in prompt and "step by step" not in prompt
    assert "12*7" in prompt and "1+1" not in prompt
    assert r.model_extra["ttscale"]["answer"] is not None


def test_health_is_open(server):
    body = httpx.get(f"{server.url}/health").json()
    assert body["status"] == "ok" and body["backend"] == "scripted"


# -- protection -----------------------------------------------------------------------------
def test_missing_or_wrong_key_is_401(server):
    for key in (None, "wrong"):
        resp = _post(server.url, {"model": "ttscale", "messages": Q}, key=key)
        assert resp.status_code == 401
        assert _error(resp)["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_malformed_body_is_422(server, client):
    for body in ({"model": "ttscale"}, {"model": "ttscale", "messages": []}, b"{not json"):
        resp = _post(server.url, body)
        assert resp.status_code == 422, resp.text
        assert _error(resp)["type"] == "invalid_request_error"
    assert _error(_post(server.url, {"model": "ttscale"}))["param"] == "messages"
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="ttscale", messages=Q, temperature=7)


@pytest.mark.parametrize(
    ("extra", "code", "param"),
    [
        ({"budget": "tokens=1000000"}, "budget_exceeds_cap", "budget"),
        ({"budget": "rollouts=17"}, "budget_exceeds_cap", "budget"),
        ({"budget": "apples=3"}, "invalid_value", "budget"),
        ({"options": {"no_such_option": 1}}, "invalid_value", None),
        ({"options": {"n": 0}}, "invalid_value", None),
        ({"strategy": "no_such_strategy"}, None, "strategy"),
        ({"n": 2}, None, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, None, "tools"),
    ],
)
def test_client_mistakes_are_400_with_a_named_fix(server, extra, code, param):
    resp = _post(server.url, {"model": "ttscale", "messages": Q, **extra})
    assert resp.status_code == 400, resp.text
    err = _error(resp)
    assert (err["code"], err["param"]) == (code, param)
    assert len(err["message"]) > 20


def test_budget_cap_is_enforced_not_clamped(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="ttscale", messages=Q, extra_body={"budget": "rollouts=1000"}
        )
    assert "at most rollouts=16" in info.value.message


def test_unknown_model_is_404_and_conflicting_strategy_is_400(client, server):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=Q)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ttscale/nope", messages=Q)
    resp = _post(server.url, {"model": "ttscale/best_of_n", "strategy": "other", "messages": Q})
    assert resp.status_code == 400


def test_no_user_message_is_400(server):
    resp = _post(server.url, {"model": "ttscale", "messages": [{"role": "system", "content": "x"}]})
    assert resp.status_code == 400 and "user" in _error(resp)["message"]


def test_large_body_is_413(server):
    body = {"model": "ttscale", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    resp = _post(server.url, body)
    assert resp.status_code == 413 and _error(resp)["code"] == "request_too_large"


def test_engine_failures_are_5xx_json_and_the_server_stays_up(client, server):
    crash = [{"role": "user", "content": "Please crash the engine: 2*2?"}]
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="ttscale", messages=crash)
    assert info.value.status_code == 502 and "engine crashed" in info.value.message
    bug = [{"role": "user", "content": "Please raise a bug: 2*2?"}]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="ttscale", messages=bug)
    assert info.value.body["code"] == "internal"
    with pytest.raises(openai.APIError, match="engine crashed"):
        list(client.chat.completions.create(model="ttscale", messages=crash, stream=True))
    r = client.chat.completions.create(model="ttscale", messages=Q)
    assert r.model_extra["ttscale"]["answer"] == "84"


def test_saturated_queue_is_429_never_5xx():
    app = create_app(ScriptedBackend(delay_s=0.6), max_concurrency=1, max_queue=1, timeout_s=30)
    with serve_in_thread(app) as url:

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                return await asyncio.gather(
                    *(
                        http.post("/v1/chat/completions", json={"model": "ttscale", "messages": Q})
                        for _ in range(5)
                    )
                )

        codes = sorted(r.status_code for r in asyncio.run(main()))
        assert codes == [200, 200, 429, 429, 429]
        limited = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        async def stream_while_busy():
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                busy = [
                    asyncio.create_task(
                        http.post("/v1/chat/completions", json={"model": "ttscale", "messages": Q})
                    )
                    for _ in range(2)
                ]
                await asyncio.sleep(0.2)
                code = await asyncio.to_thread(_stream_status, limited)
                await asyncio.gather(*busy)
                return code

        assert asyncio.run(stream_while_busy()) == 429
        assert httpx.get(f"{url}/health").json()["running"] == 0


def _stream_status(client: openai.OpenAI) -> int:
    try:
        list(client.chat.completions.create(model="ttscale", messages=Q, stream=True))
    except openai.RateLimitError as exc:
        assert exc.body["code"] == "queue_full"
        return exc.status_code
    return 200


def test_timeout_is_504_and_the_server_stays_up():
    app = create_app(ScriptedBackend(delay_s=1.5), timeout_s=0.3)
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="ttscale", messages=Q)
        assert info.value.status_code == 504 and info.value.body["code"] == "timeout"
        with pytest.raises(openai.APIError, match="timed out"):
            list(client.chat.completions.create(model="ttscale", messages=Q, stream=True))
        assert httpx.get(f"{url}/health").json() == {
            "status": "ok",
            "backend": "scripted",
            "running": 0,
            "queued": 0,
            "max_concurrency": 4,
            "max_queue": 64,
        }


# -- pure parts -------------------------------------------------------------------------------
def test_cap_budget_fills_uncapped_units_and_refuses_more():
    cap = Budget.parse("tokens=1000,seconds=10")
    assert cap_budget(Budget.parse("rollouts=4"), cap) == Budget(
        tokens=1000, rollouts=4, seconds=10
    )
    assert cap_budget(Budget.parse("tokens=500"), cap).tokens == 500
    with pytest.raises(APIError) as info:
        cap_budget(Budget.parse("seconds=11"), cap)
    assert info.value.status == 400 and "at most seconds=10" in info.value.message


def test_bad_server_settings_name_the_problem():
    with pytest.raises(ConfigError, match="default_budget"):
        create_app(ScriptedBackend(), default_budget="rollouts=100", max_budget="rollouts=10")
    with pytest.raises(ConfigError, match="max_concurrency"):
        create_app(ScriptedBackend(), max_concurrency=0)
    with pytest.raises(ConfigError, match="unknown strategy"):
        create_app(ScriptedBackend(), default_strategy="nope")


# -- the CLI twin -----------------------------------------------------------------------------
def test_cli_serve_starts_and_answers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TTSCALE_API_KEY": "cli-key"}
    cmd = [
        sys.executable,
        "-m",
        "ttscale.cli",
        "serve",
        "--backend",
        "scripted",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "ttscale serve did not start in 60 s"
                time.sleep(0.2)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="cli-key", max_retries=0
        )
        r = client.chat.completions.create(model="ttscale/best_of_n", messages=Q)
        assert r.model_extra["ttscale"]["answer"] == "84"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


# -- the embedded model -----------------------------------------------------------------------
@pytest.mark.real_model
def test_serve_embedded_model_with_streaming(vllm_backend):
    with serve_in_thread(create_app(vllm_backend, api_key=KEY)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300)
        chunks = list(
            client.chat.completions.create(
                model="ttscale/best_of_n",
                messages=Q,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"options": {"n": 2, "round_size": 2, "max_tokens": 256}},
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    summary = final.model_extra["ttscale"]
    ledger = chunks[-1].usage.model_extra["ttscale_ledger"]
    assert text.strip()
    assert ledger["engine"]["backend"] == "vllm" and ledger["rollouts"] == 2
    assert chunks[-1].usage.completion_tokens == ledger["generated_tokens"] > 0
    assert len(summary["candidates"]) == 2
    if summary["answer"] is not None:  # the streamed text is the solution that gave it
        assert summary["answer"] in text
