"""GeneratorWrapper: the one base for wrappers around a ``Generator``.

A wrapper (call coalescing, recording in tests, logging or caching in user code) keeps the
wrapped engine's identity (``name``, ``model_spec``, ``seeding``) and passes every method
through; a subclass overrides only what it changes, usually ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttscale.protocols import Generator
from ttscale.types import GenerationOutput, GenerationRequest, Problem

__all__ = ["GeneratorWrapper"]


class GeneratorWrapper:
    """Delegates everything to ``inner``; itself a ``Generator``."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_spec = inner.model_spec

    @property
    def seeding(self) -> Any:
        """The wrapped engine's mode *now*: vLLM can fall back from per-request to engine
        seeding mid-run, and records (pools, ledgers) must say which one a sample had."""
        return self.inner.seeding

    @property
    def executor(self) -> Any:
        """The wrapped engine's program executor, if it has one (a replay backend over a
        program pool serves stored execution results; see ``strategies.program``)."""
        return getattr(self.inner, "executor", None)

    def render(self, problem: Problem) -> tuple[int, ...]:
        return self.inner.render(problem)

    def encode(self, text: str) -> tuple[int, ...]:
        return self.inner.encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.inner.decode(token_ids)

    def profile(self) -> dict[str, Any]:
        return self.inner.profile()

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        return await self.inner.generate(requests)

    async def close(self) -> None:
        await self.inner.close()
