"""Test helpers shared by the real-model test modules (plain module, not a fixture file)."""

from __future__ import annotations

from ttscale.backends import GeneratorWrapper
from ttscale.protocols import Generator
from ttscale.types import GenerationOutput, GenerationRequest


class Recorder(GeneratorWrapper):
    """Delegates to a real Generator and records each ``generate`` call's requests, so the
    policy's calls can be counted apart from the judge's."""

    def __init__(self, inner: Generator) -> None:
        super().__init__(inner)
        self.calls: list[list[GenerationRequest]] = []

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        self.calls.append(list(requests))
        return await self.inner.generate(requests)

    async def close(self) -> None:
        """Leaves the wrapped engine open: it is the session-wide test engine."""
