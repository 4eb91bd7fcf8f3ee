"""Streaming for ``ttscale serve``: chat.completion.chunk events the openai client parses.

Order of events (each ``data: <chunk>``, then ``data: [DONE]``):

1. the role chunk (``delta.role = "assistant"``), with ``ttscale.event = "accepted"``;
2. ``started`` once a slot is free (with the queue wait);
3. one ``progress`` chunk per engine call while the strategy searches: samples and tokens so
   far, the answers of this call and the current leader; its ``delta.content`` is ``""`` so
   clients that concatenate content are unaffected;
4. the chosen solution, one chunk per reasoning step;
5. the final chunk with ``finish_reason`` and ``ttscale.event = "done"`` (answer, vote table,
   candidates, ledger);
6. with ``stream_options.include_usage``, a usage chunk with ``choices: []``, as OpenAI sends.

An error after the response started (queue full in a race, timeout, engine failure) is a
last ``data: {"error": {...}}`` event, which the openai client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel

from ttscale.errors import TTScaleError
from ttscale.protocols import Generator
from ttscale.server._gate import AdmissionGate, QueueFull
from ttscale.server.errors import APIError, from_ttscale_error, queue_full_error, timeout_error
from ttscale.server.plan import Plan
from ttscale.server.schemas import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    completion_id,
    content,
    jsonable,
    summary,
    usage,
)
from ttscale.types import GenerationOutput, GenerationRequest, Result
from ttscale.verifiers.answers import extract_answer

__all__ = ["Observed", "pieces", "sse", "stream_completion"]

log = logging.getLogger(__name__)


class Observed:
    """Generator proxy that reports each engine call (for streamed progress events)."""

    def __init__(self, inner: Generator, report: Callable[[dict[str, Any]], None]) -> None:
        self._inner, self._report = inner, report
        self._calls = self._samples = self._tokens = 0
        self._votes: Counter[str] = Counter()
        self._t0 = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        outputs = await self._inner.generate(requests)
        answers = [extract_answer(c.text) for o in outputs for c in o.completions]
        self._calls += 1
        self._samples += len(answers)
        self._tokens += sum(c.num_tokens for o in outputs for c in o.completions)
        self._votes.update(a for a in answers if a is not None)
        leader = self._votes.most_common(1)
        self._report(
            {
                "event": "progress",
                "engine_calls": self._calls,
                "samples": self._samples,
                "generated_tokens": self._tokens,
                "answers": answers,
                "leader": leader[0][0] if leader else None,
                "leader_votes": leader[0][1] if leader else 0,
                "elapsed_s": round(time.perf_counter() - self._t0, 3),
            }
        )
        return outputs


def _sse(data: BaseModel | dict[str, Any]) -> str:
    """One server-sent event; ``None`` fields are left out, as OpenAI does."""
    if isinstance(data, BaseModel):
        return f"data: {data.model_dump_json(exclude_none=True)}\n\n"
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse(data: BaseModel | dict[str, Any]) -> str:
    """One server-sent event; ``None`` fields are left out, as OpenAI does."""
    if isinstance(data, BaseModel):
        return f"data: {data.model_dump_json(exclude_none=True)}\n\n"
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def pieces(text: str, delimiter: str) -> list[str]:
    """Split the answer into reasoning steps for streaming; joining gives ``text`` back."""
    parts = text.split(delimiter)
    return [p + delimiter for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


async def stream_completion(
    plan: Plan,
    *,
    solve: Callable[[Plan, Generator], Awaitable[Result]],
    generator: Generator,
    gate: AdmissionGate,
    timeout_s: float,
    arrived: float,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events of one streamed completion, in the order the module docstring lists.

    Admission and the timeout are handled here (the response has already started):
    failures become a final ``data: {"error": ...}`` event.
    """
    cid, created = completion_id(), int(time.time())
    deadline = asyncio.get_running_loop().time() + timeout_s - (time.perf_counter() - arrived)

    def chunk(choices: Sequence[ChunkChoice], **extra: Any) -> str:
        return sse(
            ChatCompletionChunk(
                id=cid, created=created, model=plan.model, choices=list(choices), **extra
            )
        )

    def remaining() -> float:
        return deadline - asyncio.get_running_loop().time()

    accepted = {"event": "accepted", "strategy": plan.strategy, "budget": str(plan.budget)}
    yield chunk([ChunkChoice(delta=Delta(role="assistant", content=""))], ttscale=accepted)
    try:
        gate.admit()
    except QueueFull as exc:
        yield sse(queue_full_error(exc).body())
        return
    try:
        await asyncio.wait_for(gate.acquire(), max(remaining(), 0))
    except TimeoutError:
        yield sse(timeout_error(timeout_s, False).body())
        return
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    task = asyncio.create_task(solve(plan, Observed(generator, events.put_nowait)))  # type: ignore[arg-type]
    task.add_done_callback(lambda _: events.put_nowait(None))
    try:
        started = {
            "event": "started",
            "queue_ms": round((time.perf_counter() - arrived) * 1e3, 3),
        }
        yield chunk([ChunkChoice(delta=Delta(content=""))], ttscale=started)
        while (event := await asyncio.wait_for(events.get(), max(remaining(), 0))) is not None:
            yield chunk([ChunkChoice(delta=Delta(content=""))], ttscale=event)
        result = task.result()
    except TimeoutError:
        yield sse(timeout_error(timeout_s, True).body())
        return
    except TTScaleError as exc:
        yield sse(from_ttscale_error(exc).body())
        return
    except Exception as exc:  # the stream's boundary: report it to the client, log it here
        log.exception("stream failed")
        yield sse(APIError(500, f"internal error: {exc}", type="server_error").body())
        return
    finally:
        task.cancel()
        gate.release()
    text, finish = content(result)
    for piece in pieces(text, plan.problem.step_delimiter):
        yield chunk([ChunkChoice(delta=Delta(content=piece))])
    done = {"event": "done", **summary(result), "ledger": jsonable(result.ledger.to_dict())}
    yield chunk([ChunkChoice(delta=Delta(), finish_reason=finish)], ttscale=done)  # type: ignore[arg-type]
    if include_usage:
        yield chunk([], usage=usage(result))
    yield "data: [DONE]\n\n"
