"""``ttscale mcp`` end to end, driven by the official MCP client over real transports.

stdio: the client spawns ``python -m ttscale.cli mcp --backend scripted`` as a desktop
client would. Streamable HTTP: the same command with ``--http`` on a free localhost port
(bearer key, ``/health``), and the server app in-process on a free port where a test needs
to look inside it (the engine's calls, the service's counters). ``ClientSession`` speaks the
2025-11-25 handshake; the SDK's high-level ``mcp.Client`` negotiates the 2026 protocol.

Covered: the tool list and schemas, the 84 answer with vote table, ledger and solution,
progress notifications, cancellation that stops the search (no engine call after it, the
server keeps serving), an over-cap budget and a bad strategy refused as tool errors naming
the fix, 20 concurrent calls sharing engine batches, and the bearer key. Slow solves come
from the scripted backend's ``delay_s``, and every wait is on an event (a progress callback,
a log line, a counter) under a generous deadline, never on a sleep of a guessed length.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import pytest

mcp = pytest.importorskip("mcp", reason="needs the mcp extra: pip install 'ttscale[mcp]'")

import httpx  # noqa: E402
import httpx2  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from ttscale.backends import ScriptedBackend  # noqa: E402
from ttscale.mcp import SolveService, build_server, http_app  # noqa: E402
from ttscale.server import ServerConfig, serve_in_thread  # noqa: E402
from ttscale.types import GenerationOutput, GenerationRequest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "mcp-test-key"
DEADLINE_S = 180  # generous: the CPU is shared; no test comes near it unless it is broken
CAPS = "tokens=65536,rollouts=64,seconds=120"
SLOW = {"n": 64, "round_size": 1, "adaptive": False}
"""A best-of-N that makes 64 engine calls (one sample each): with delay_s=0.5, 32 s."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


# -- helpers -----------------------------------------------------------------------------------
def _command(*extra: str, backend: str = "scripted") -> list[str]:
    return ["-m", "ttscale.cli", "mcp", "--backend", backend, "--max-budget", CAPS, *extra]


@asynccontextmanager
async def stdio_session(
    *extra: str, errlog: IO[str] | None = None, backend: str = "scripted"
) -> AsyncIterator[ClientSession]:
    """A client session with a fresh ``ttscale mcp`` subprocess over stdio."""
    params = StdioServerParameters(
        command=sys.executable,
        args=_command(*extra, backend=backend),
        env=dict(os.environ),
        cwd=str(ROOT),
    )
    async with (
        stdio_client(params, errlog=errlog or sys.stderr) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def http_session(url: str, key: str | None = KEY) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=600))
    async with (
        client,
        streamable_http_client(f"{url}/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def wait_until(check: Callable[[], bool], what: str) -> None:
    """Wait for a condition the server sets (a counter, a log line), up to DEADLINE_S."""
    with anyio.fail_after(DEADLINE_S):
        while not check():
            await anyio.sleep(0.05)


@dataclass
class Progress:
    """A progress callback that records events and signals the first one.

    The SDK runs each progress callback as its own task, so the last ones may run just after
    ``call_tool`` returns: ``reached`` waits for them instead of assuming they already ran.
    """

    events: list[tuple[float, float | None, str | None]] = field(default_factory=list)
    first: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))
        self.first.set()

    async def reached(self, progress: float) -> list[tuple[float, float | None, str | None]]:
        await wait_until(lambda: any(p >= progress for p, _, _ in self.events), "progress")
        return self.events


async def call_then_cancel(session: Any, question: str) -> Progress:
    """Start a slow solve, cancel it from the client once it reported progress."""
    progress = Progress()
    finished: list[Any] = []

    async def call() -> None:
        finished.append(
            await session.call_tool(
                "solve",
                {"question": question, "budget": "rollouts=64", "options": SLOW},
                progress_callback=progress,
            )
        )

    with anyio.fail_after(DEADLINE_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await progress.first.wait()
            tg.cancel_scope.cancel()
    assert finished == [], "the cancelled call returned a result"
    return progress


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GatedBackend(ScriptedBackend):
    """Scripted backend whose engine calls wait until the test opens ``gate``."""

    gate: threading.Event = field(default_factory=threading.Event)

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        while not self.gate.is_set():
            await anyio.sleep(0.01)
        return await super().generate(requests)


@asynccontextmanager
async def in_process(backend: ScriptedBackend, **settings: Any) -> AsyncIterator[Any]:
    """The streamable-HTTP app in a uvicorn thread on a free port: (url, service)."""
    service = SolveService(backend, ServerConfig(api_key=KEY, max_budget=CAPS, **settings))
    with serve_in_thread(http_app(build_server(service), api_key=KEY)) as url:
        yield url, service


def calls_for(backend: ScriptedBackend, text: str) -> int:
    return sum(1 for call in backend.calls if text in backend.decode(call[0].prompt_token_ids))


# -- stdio -------------------------------------------------------------------------------------
async def test_stdio_lists_tools_and_solves_84_with_progress() -> None:
    async with stdio_session("-B", "delay_s=0.05") as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"solve", "solve_batch", "strategies"}
        assert tools["solve"].input_schema["required"] == ["question"]
        assert {"answer", "votes", "ledger", "solution"} <= set(
            tools["solve"].output_schema["properties"]
        )

        progress = Progress()
        result = await session.call_tool(
            "solve",
            {
                "question": "What is 12*7?",
                "budget": "rollouts=8",
                "options": {"round_size": 2, "adaptive": False},
            },
            progress_callback=progress,
        )
    assert not result.is_error, result.content
    out = result.structured_content
    assert out["answer"] == "84"
    assert out["votes"][0]["answer"] == "84"
    assert out["votes"][0]["weight"] == out["votes"][0]["votes"]  # no verifier: one vote each
    assert sum(v["votes"] for v in out["votes"]) == 8
    assert out["ledger"]["rollouts"] == 8 and out["ledger"]["engine_calls"] == 4
    assert out["ledger"]["generated_tokens"] > 0 and out["ledger"]["eflops"] > 0
    assert "\\boxed{84}" in out["solution"]
    assert out["budget"] == "tokens=65536,rollouts=8,seconds=120.0"  # the caps fill the rest
    text = result.content[0].text
    assert text.startswith("answer: 84\n") and "ledger:" in text and "\\boxed{84}" in text
    # One notification per engine call: samples so far of the rollouts budget, tokens, leader.
    events = await progress.reached(8)
    assert [(p, t) for p, t, _ in events] == [(2, 8), (4, 8), (6, 8), (8, 8)]
    assert events[-1][2].startswith("8 samples, ")
    assert "tokens; leader 84 (" in events[-1][2]


async def test_stdio_refuses_bad_calls_with_the_fix_and_keeps_serving() -> None:
    async with stdio_session() as session:
        also_over = await session.call_tool(
            "solve", {"question": "What is 1+1?", "budget": "rollouts=65"}
        )
        bad = await session.call_tool("solve", {"question": "What is 1+1?", "strategy": "nope"})
        option = await session.call_tool(
            "solve", {"question": "What is 1+1?", "options": {"nope": 1}}
        )
        batch = await session.call_tool(
            "solve_batch", {"questions": ["What is 1+1?"], "budget": "rollouts=100"}
        )
        strategies = await session.call_tool("strategies", {})
        fine = await session.call_tool("solve", {"question": "What is 12*7?"})
    assert also_over.is_error
    assert "budget rollouts=65 exceeds this server's maximum rollouts=64" in (
        also_over.content[0].text
    )
    assert "ask for at most rollouts=64" in also_over.content[0].text
    assert bad.is_error and "unknown strategy 'nope'; choose one of best_of_n" in (
        bad.content[0].text
    )
    assert "the strategies tool lists them" in bad.content[0].text
    assert option.is_error and "has no option 'nope'; options: adaptive" in option.content[0].text
    assert batch.is_error and "ask for at most rollouts=64" in batch.content[0].text
    listed = strategies.structured_content
    assert listed["max_budget"] == "tokens=65536,rollouts=64,seconds=120.0"
    best = next(s for s in listed["strategies"] if s["name"] == "best_of_n")
    assert {"name": "n", "type": "int", "default": 16} in best["options"]
    assert {s["name"] for s in listed["strategies"]} >= {"best_of_n", "beam_search", "auto"}
    assert not fine.is_error and fine.structured_content["answer"] == "84"


async def test_stdio_budget_under_one_sample_is_a_tool_error() -> None:
    async with stdio_session() as session:
        tiny = await session.call_tool("solve", {"question": "What is 12*7?", "budget": 10})
        fine = await session.call_tool("solve", {"question": "What is 12*7?"})
    assert tiny.is_error and "cannot pay for one sample" in tiny.content[0].text
    assert fine.structured_content["answer"] == "84"


async def test_stdio_cancel_stops_the_search() -> None:
    with tempfile.TemporaryFile("w+") as errlog:

        def logged() -> str:
            errlog.seek(0)
            return errlog.read()

        async with stdio_session("-B", "delay_s=0.5", errlog=errlog) as session:
            progress = await call_then_cancel(session, "What is 12*7?")
            await wait_until(lambda: "cancelled after" in logged(), "the cancel log line")
            after = await session.call_tool("solve", {"question": "What is 3*7?"})
        line = next(x for x in logged().splitlines() if "cancelled after" in x)
    assert progress.events[0][:2] == (1, 64)
    calls = int(line.split("cancelled after ")[1].split()[0])
    assert 1 <= calls < 64, line  # stopped long before the 64 calls it asked for
    assert "search stopped" in line
    assert not after.is_error and after.structured_content["answer"] == "21"


async def test_stdio_engine_that_fails_to_load_is_a_tool_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-pool"
    async with stdio_session("--pool", str(missing), backend="replay") as session:
        listed = await session.list_tools()  # the server is up although the engine is not
        failed = await session.call_tool("solve", {"question": "What is 12*7?"})
        strategies = await session.call_tool("strategies", {})
    assert len(listed.tools) == 3 and not strategies.is_error
    assert failed.is_error
    text = failed.content[0].text
    assert "the engine failed to load" in text and "is not a sample pool" in text
    assert "restart the server" in text


async def test_stdio_solve_batch_shares_one_budget() -> None:
    questions = ["What is 2+3?", "What is 12*7?", "What is 9*9?"]
    async with stdio_session() as session:
        progress = Progress()
        result = await session.call_tool(
            "solve_batch",
            {"questions": questions, "budget": "rollouts=48"},
            progress_callback=progress,
        )
    assert not result.is_error, result.content
    out = result.structured_content
    assert [r["question"] for r in out["results"]] == questions
    assert all(r["strategy"] == "auto" and r["answer"] for r in out["results"])
    assert out["total"]["rollouts"] == sum(r["ledger"]["rollouts"] for r in out["results"]) <= 48
    events = await progress.reached(1)
    assert all(t == 48 for _, t, _ in events)


# -- streamable HTTP ---------------------------------------------------------------------------
async def test_http_cli_with_bearer_key() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TTSCALE_API_KEY": KEY}
    cmd = [sys.executable, *_command("--http", "--port", str(port))]
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2)
                if health.json()["engine"] == "ready":
                    break
            except httpx.TransportError:
                assert proc.poll() is None, log.seek(0) or log.read()
                assert time.monotonic() < deadline, "ttscale mcp --http did not start"
                await anyio.sleep(0.2)
        assert health.json()["status"] == "ok" and health.json()["backend"] == "scripted"
        no_key = httpx.post(f"{url}/mcp", json={}, timeout=10)
        wrong = httpx.post(f"{url}/mcp", json={}, headers={"Authorization": "Bearer x"})
        assert no_key.status_code == wrong.status_code == 401
        assert "Authorization: Bearer <key>" in no_key.json()["error"]

        async with http_session(url) as session:
            assert len((await session.list_tools()).tools) == 3
            progress = Progress()
            result = await session.call_tool(
                "solve", {"question": "What is 12*7?"}, progress_callback=progress
            )
        assert result.structured_content["answer"] == "84"
        assert (await progress.reached(8))[-1][:2] == (8, 8)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


async def test_http_cancel_stops_the_search_and_makes_no_further_engine_call() -> None:
    backend = ScriptedBackend(delay_s=0.5)
    async with in_process(backend) as (url, service), http_session(url) as session:
        await call_then_cancel(session, "What is 12*7?")
        stopped = service.counters
        await wait_until(lambda: stopped.cancelled == 1 and stopped.running == 0, "the stop")
        made = calls_for(backend, "12*7")
        assert 1 <= made < 64
        # Another solve runs through engine calls of its own; the cancelled one makes none.
        after = await session.call_tool("solve", {"question": "What is 3*7?"})
        assert after.structured_content["answer"] == "21"
        assert calls_for(backend, "12*7") == made
        assert service.counters.completed == 1


async def test_http_modern_protocol_client_progress_and_cancel() -> None:
    """The SDK's high-level ``mcp.Client`` negotiates the 2026 protocol (``server/discover``,
    no session; cancelling aborts the request's own POST) and gets the same behaviour."""
    backend = ScriptedBackend(delay_s=0.5)
    async with in_process(backend) as (url, service):
        client = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {KEY}"}, timeout=httpx2.Timeout(60, read=600)
        )
        transport = streamable_http_client(f"{url}/mcp", http_client=client)
        async with client, mcp.Client(transport) as session:
            assert session.session.protocol_version >= "2026"
            progress = Progress()
            done = await session.call_tool(
                "solve", {"question": "What is 12*7?"}, progress_callback=progress
            )
            assert done.structured_content["answer"] == "84"
            assert (await progress.reached(8))[-1][:2] == (8, 8)
            await call_then_cancel(session, "What is 5*7?")
            await wait_until(lambda: service.counters.cancelled == 1, "the search to stop")
            made = calls_for(backend, "5*7")
            after = await session.call_tool("solve", {"question": "What is 3*7?"})
        assert 1 <= made < 64 and calls_for(backend, "5*7") == made
        assert after.structured_content["answer"] == "21"


async def test_http_20_concurrent_calls_share_the_engine() -> None:
    backend = GatedBackend()
    async with in_process(backend, max_concurrency=8) as (url, service):
        results: dict[int, Any] = {}
        async with http_session(url) as session:

            async def one(i: int) -> None:
                results[i] = await session.call_tool(
                    "solve", {"question": f"What is {i}*7?", "budget": "rollouts=8"}
                )

            with anyio.fail_after(DEADLINE_S):
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(one, i)
                    # Hold the engine until 8 calls (the concurrency limit) wait on it.
                    await wait_until(lambda: service.engine.caller_calls >= 8, "8 engine callers")
                    assert service.counters.running == 8
                    backend.gate.set()
    assert sorted(results) == list(range(20))
    for i, result in results.items():
        assert not result.is_error, result.content
        assert result.structured_content["answer"] in {str(i * 7 + d) for d in (-1, 0, 1)}
    assert service.counters.completed == 20 and service.counters.failed == 0
    # Concurrent calls met in shared engine batches.
    assert service.engine.engine_calls < service.engine.caller_calls


# -- the embedded model ------------------------------------------------------------------------
@pytest.mark.real_model
async def test_stdio_solve_on_the_embedded_model() -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ttscale.cli", "mcp"],  # the default backend: vLLM, embedded model
        env=dict(os.environ),
        cwd=str(ROOT),
    )
    progress = Progress()
    with anyio.fail_after(1500):
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool(
                "solve",
                {"question": "What is 12*7?", "budget": "rollouts=4"},
                progress_callback=progress,
            )
    assert not result.is_error, result.content
    out = result.structured_content
    assert out["ledger"]["rollouts"] == 4 and out["ledger"]["generated_tokens"] > 0
    assert out["solution"].strip() and progress.events
    assert sum(v["votes"] for v in out["votes"]) <= 4
    if out["answer"] is not None:  # the solution shown is one that gave the answer
        assert out["answer"] in out["solution"]
