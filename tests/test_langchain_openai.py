"""LangChain's own OpenAI chat model (``langchain_openai.ChatOpenAI``) against ``ttscale
serve``: only ``base_url``, ``api_key`` and the model alias change. Invoke and stream give the
chosen solution and OpenAI usage (with ttscale's ledger); ``extra_body`` sets the budget; the
server's 401 and over-cap 400 reach LangChain as its own errors, with the fix in the message.
Runs on ``ScriptedBackend`` in-process on a free localhost port.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

langchain_openai = pytest.importorskip(
    "langchain_openai", reason="needs langchain-openai: pip install 'ttscale[langchain]'"
)
import openai  # noqa: E402

from ttscale.backends import ScriptedBackend  # noqa: E402
from ttscale.server import create_app, serve_in_thread  # noqa: E402

ChatOpenAI = langchain_openai.ChatOpenAI
KEY = "lc-key"


@pytest.fixture(scope="module")
def server():
    backend = ScriptedBackend()
    app = create_app(backend, api_key=KEY, max_budget="tokens=20000,rollouts=16,seconds=60")
    with serve_in_thread(app) as url:
        yield SimpleNamespace(url=f"{url}/v1", backend=backend)


def chat(server, **kw) -> ChatOpenAI:
    kw.setdefault("model", "ttscale")
    kw.setdefault("api_key", KEY)
    return ChatOpenAI(base_url=server.url, max_retries=0, timeout=120, **kw)


def test_invoke_returns_the_chosen_solution_and_the_ledger(server) -> None:
    msg = chat(server).invoke("What is 12*7?")
    assert msg.content.endswith("The answer is \\boxed{84}.")
    usage = msg.response_metadata["token_usage"]
    ledger = usage["ttscale_ledger"]
    assert ledger["rollouts"] == 8 and ledger["engine"]["backend"] == "scripted"
    assert msg.usage_metadata["output_tokens"] == ledger["generated_tokens"] > 0
    assert msg.response_metadata["finish_reason"] == "stop"


def test_stream_yields_the_solution_step_by_step(server) -> None:
    llm = chat(server, model="ttscale/best_of_n", stream_usage=True)
    chunks = list(llm.stream([("system", "Be brief."), ("user", "What is 12*7?")]))
    steps = [c.content for c in chunks if c.content]
    assert len(steps) >= 2  # one chunk per reasoning step (progress chunks carry "")
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert whole.content == "".join(steps) and "\\boxed{84}" in whole.content
    assert whole.usage_metadata["output_tokens"] > 0
    assert whole.response_metadata["finish_reason"] == "stop"


def test_extra_body_sets_the_budget(server) -> None:
    llm = chat(server, extra_body={"budget": "rollouts=4", "options": {"round_size": 2}})
    msg = llm.invoke("What is 12*7?")
    ledger = msg.response_metadata["token_usage"]["ttscale_ledger"]
    assert ledger["rollouts"] == 4 and ledger["engine_calls"] == 2


def test_async_invoke_and_stream(server) -> None:
    async def both() -> tuple[str, str]:
        llm = chat(server)
        msg = await llm.ainvoke("What is 6*7?")
        streamed = "".join([c.content async for c in llm.astream("What is 6*7?")])
        return msg.content, streamed

    invoked, streamed = asyncio.run(both())
    assert invoked == streamed and "\\boxed{42}" in invoked


def test_server_errors_reach_langchain_with_the_fix(server) -> None:
    with pytest.raises(openai.AuthenticationError, match="Authorization: Bearer <key>"):
        chat(server, api_key="wrong").invoke("What is 12*7?")
    over = chat(server, extra_body={"budget": "rollouts=100"})
    with pytest.raises(openai.BadRequestError, match="ask for at most rollouts=16"):
        over.invoke("What is 12*7?")
