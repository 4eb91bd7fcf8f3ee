"""CoalescingGenerator: merge concurrent ``generate`` calls into one engine call.

A search step of one problem rarely fills the engine: on CPU, vLLM makes ~6 tok/s for one
sequence and ~40 tok/s for sixteen (DESIGN.md). Running many problems concurrently in one
event loop (``asyncio.gather`` over ``asolve``) only helps if their engine calls meet. This
wrapper queues the calls that arrive while the engine is busy (or within ``window_s`` of an
idle engine) and sends them as one batch, splitting the outputs back to each caller.

Each caller still sees exactly its own requests' outputs, in order, so strategies and
ledgers are unchanged; only the engine seconds a ledger records include time spent waiting
for the shared batch. With ``seeding == "per_request"`` samples do not depend on batch
layout, so coalescing changes no result (tested). If a merged call fails, each caller's
requests are retried alone so one malformed request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

from ttscale.backends.wrapper import GeneratorWrapper
from ttscale.errors import ConfigError
from ttscale.protocols import Generator
from ttscale.types import GenerationOutput, GenerationRequest

__all__ = ["CoalescingGenerator"]

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    requests: list[GenerationRequest]
    future: asyncio.Future[list[GenerationOutput]]

    @property
    def sequences(self) -> int:
        return sum(r.n for r in self.requests)


@dataclass
class _LoopState:
    """Queue and drain task of one event loop (a wrapper may serve several ``asyncio.run``)."""

    waiting: list[_Waiting] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class CoalescingGenerator(GeneratorWrapper):
    """A ``Generator`` that batches concurrent callers' requests into shared engine calls.

    Args:
        inner: The engine to call.
        max_sequences: Most sampled sequences (sum of ``n``) per merged call; a single
            caller above it still goes through, alone.
        window_s: How long an idle engine waits for more callers before starting a batch.

    Attributes:
        engine_calls: Merged calls made to ``inner``.
        caller_calls: ``generate`` calls served.
    """

    def __init__(
        self, inner: Generator, *, max_sequences: int = 256, window_s: float = 0.005
    ) -> None:
        if max_sequences < 1:
            raise ConfigError(f"max_sequences={max_sequences} must be >= 1")
        if window_s < 0:
            raise ConfigError(f"window_s={window_s} must be >= 0")
        super().__init__(inner)
        self.max_sequences = max_sequences
        self.window_s = window_s
        self.engine_calls = 0
        self.caller_calls = 0
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def profile(self) -> dict[str, Any]:
        return {**self.inner.profile(), "coalescing": True}

    # -- batching --------------------------------------------------------------------------
    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        state = self._states.setdefault(loop, _LoopState())
        waiting = _Waiting(list(requests), loop.create_future())
        state.waiting.append(waiting)
        self.caller_calls += 1
        if state.task is None or state.task.done():
            state.task = loop.create_task(self._drain(loop, state))
        return await waiting.future

    async def _drain(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        try:
            while state.waiting:
                await asyncio.sleep(self.window_s)
                batch = self._take(state)
                if batch:
                    await self._run(batch)
        finally:
            if not state.waiting:
                self._states.pop(loop, None)

    def _take(self, state: _LoopState) -> list[_Waiting]:
        """Oldest callers first, up to ``max_sequences`` (at least one caller)."""
        batch: list[_Waiting] = []
        total = 0
        while state.waiting:
            w = state.waiting[0]
            if w.future.done():  # caller cancelled while queued
                state.waiting.pop(0)
                continue
            if batch and total + w.sequences > self.max_sequences:
                break
            batch.append(state.waiting.pop(0))
            total += w.sequences
        return batch

    async def _run(self, batch: list[_Waiting]) -> None:
        merged = [r for w in batch for r in w.requests]
        self.engine_calls += 1
        try:
            outputs = await self.inner.generate(merged)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc=exc)
                return
            log.warning(
                "merged engine call of %d callers failed (%s); retrying each alone", len(batch), exc
            )
            for w in batch:
                self.engine_calls += 1
                try:
                    _settle(w, outputs=await self.inner.generate(w.requests))
                except Exception as one:
                    _settle(w, exc=one)
            return
        if len(outputs) != len(merged):
            exc = ConfigError(
                f"backend {self.name!r} returned {len(outputs)} outputs for {len(merged)} "
                "requests; it breaks the Generator contract (one output per request)"
            )
            for w in batch:
                _settle(w, exc=exc)
            return
        start = 0
        for w in batch:
            _settle(w, outputs=outputs[start : start + len(w.requests)])
            start += len(w.requests)


def _settle(
    w: _Waiting, *, outputs: list[GenerationOutput] | None = None, exc: Exception | None = None
) -> None:
    if w.future.done():  # the caller was cancelled meanwhile
        return
    if exc is not None:
        w.future.set_exception(exc)
    else:
        w.future.set_result(list(outputs or []))
