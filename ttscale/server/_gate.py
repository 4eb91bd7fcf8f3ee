"""Admission control for the server: a concurrency limit with a bounded waiting queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["AdmissionGate", "QueueFull"]


class QueueFull(Exception):
    """Every slot is busy and the waiting queue is full (the server answers 429)."""


class AdmissionGate:
    """At most ``max_concurrency`` requests run; at most ``max_queue`` more wait (FIFO).

    A request arriving when both are full is refused at once with ``QueueFull``, so the
    server never holds more than ``max_concurrency + max_queue`` requests. Waiting time
    counts against the request's timeout. One gate per event loop (not thread-safe).
    """

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._sem = asyncio.Semaphore(max_concurrency)
        self.running = 0
        self.waiting = 0

    def full(self) -> bool:
        """True if a new request would be refused now."""
        return self.running >= self.max_concurrency and self.waiting >= self.max_queue

    def check(self) -> None:
        """Raise ``QueueFull`` if a new request would be refused now; reserves nothing.

        Raises:
            QueueFull: Naming the limits and the fix.
        """
        if self.full():
            raise QueueFull(
                f"server at capacity: {self.running} requests running, {self.waiting} queued "
                f"(max_concurrency={self.max_concurrency}, max_queue={self.max_queue}); "
                f"retry later, or have the operator raise --max-queue / --max-concurrency"
            )

    def admit(self) -> None:
        """Take a place in the queue (synchronously: no other request can slip in between).

        Raises:
            QueueFull: See ``check``.
        """
        self.check()
        self.waiting += 1

    async def acquire(self) -> None:
        """Wait for a slot after ``admit``; cancelling frees the queue place."""
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._sem.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """``admit`` + ``acquire``; the slot is released on exit."""
        self.admit()
        await self.acquire()
        try:
            yield
        finally:
            self.release()
