"""Step-score aggregation and validation shared by every verifier and strategy."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ttscale.budget import Ledger
from ttscale.errors import ConfigError, VerifierError
from ttscale.types import Problem

__all__ = ["AGGREGATIONS", "Aggregation", "ScriptedVerifier", "aggregate", "check_scores"]

Aggregation = Literal["last", "min", "prod", "mean"]
AGGREGATIONS: tuple[str, ...] = ("last", "min", "prod", "mean")


def aggregate(step_scores: Sequence[float], how: str = "last") -> float:
    """Collapse per-step scores into one: ``last``, ``min``, ``prod`` or ``mean``.

    An empty list aggregates to 0.0 (a candidate with no scored step has no support).
    """
    if how not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {how!r}; use one of {', '.join(AGGREGATIONS)}")
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    return float(sum(step_scores) / len(step_scores))


def check_scores(
    name: str, scores: Sequence[Sequence[float]], step_lists: Sequence[Sequence[str]]
) -> list[list[float]]:
    """Validate a verifier's output: one finite score per step (or one per candidate).

    Raises:
        VerifierError: Wrong count, NaN or inf, naming the verifier and the candidate.
    """
    if len(scores) != len(step_lists):
        raise VerifierError(
            f"verifier {name!r} returned {len(scores)} score lists for {len(step_lists)} candidates"
        )
    out = []
    for i, (row, steps) in enumerate(zip(scores, step_lists, strict=True)):
        if len(row) not in (len(steps), 1) and steps:
            raise VerifierError(
                f"verifier {name!r}: candidate {i} has {len(steps)} steps but {len(row)} scores"
            )
        for s in row:
            if not math.isfinite(s):
                raise VerifierError(
                    f"verifier {name!r} returned a non-finite score ({s}) for candidate {i}; "
                    f"fix the verifier or its inputs (NaN usually means an empty or over-long step)"
                )
        out.append([float(s) for s in row])
    return out


@dataclass(frozen=True)
class ScriptedVerifier:
    """Deterministic verifier for tests: ``fn(problem, steps) -> per-step scores``."""

    fn: Callable[[Problem, Sequence[str]], Sequence[float]]
    name: str = "scripted"

    async def score(
        self,
        problems: Sequence[Problem],
        step_lists: Sequence[Sequence[str]],
        *,
        ledger: Ledger | None = None,
    ) -> list[list[float]]:
        return [list(self.fn(p, s)) for p, s in zip(problems, step_lists, strict=True)]
