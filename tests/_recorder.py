"""Test helpers shared by the real-model test modules (plain module, not a fixture file)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttscale.types import GenerationOutput, GenerationRequest, Problem


class Recorder:
    """Delegates to a real Generator and records each ``generate`` call's requests, so the
    policy's calls can be counted apart from the judge's."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []
        self.name, self.model_spec, self.seeding = inner.name, inner.model_spec, inner.seeding

    def render(self, problem: Problem) -> tuple[int, ...]:
        return self.inner.render(problem)

    def encode(self, text: str) -> tuple[int, ...]:
        return self.inner.encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.inner.decode(token_ids)

    def profile(self) -> dict[str, Any]:
        return self.inner.profile()

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        self.calls.append(list(requests))
        return await self.inner.generate(requests)

    async def close(self) -> None:
        return None
