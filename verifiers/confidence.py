"""Confidence verifiers: score a sample from the token logprobs it came with, no extra call.

Per token, DeepConf's *token confidence* is ``C_i = -mean(top-k logprobs at i)`` (Fu et al.
2025, "Deep Think with Confidence", eq. 2; ``ttscale.types.topk_confidence``): high where
the model put its mass on few tokens. A sample's score is a statistic of the C_i:

- ``mean``: average trace confidence (with top-k only, Kang et al.'s self-certainty
  ``KL(U || p)`` reduces to this up to the constant ``log k``, so it is the same ranking);
- ``lowest_group``: the lowest mean of C over a sliding window of ``window`` tokens
  (DeepConf's "lowest group confidence": one shaky stretch sinks the trace);
- ``bottom10``: the mean of the lowest 10% of the sliding-window means;
- ``tail``: the mean of C over the last ``tail`` tokens (where the answer is written).

DeepConf uses windows of 2048 tokens on 10-30k-token traces. The embedded model writes
~450 tokens, so the defaults were chosen on the ``math_train200`` training pool by
within-problem AUROC (``benchmarks/verifiers.py --pool``): see the README's Verifiers
section for the figures. A trace shorter than the window has one group, its mean.

These verifiers read tokens, not texts. Whole samples (``score_candidates``,
``ttscale.protocols.CandidateVerifier``) score raw confidences (positive, unbounded): as vote
weights they tilt a vote toward confident traces; DeepConf's offline method also *filters*
(best-of-N ``select="filtered"`` keeps the top fraction by score, then votes weighted by
it). Step searches (``score_token_steps``, ``ttscale.protocols.TokenStepVerifier``) get the
statistic of each step's prefix, squashed to [0, 1] by ``sigmoid((c - center) / spread)``
like any step verifier's score; ``center`` and ``spread`` default to the mean and standard
deviation of the per-sample mean confidence on the ``math_train200`` training pool of the
embedded 0.5B model (11.6 and 1.06, top-20). The prefix value is the only step signal
measured above chance on that model: mean confidence of the first 128-384 tokens has
within-problem AUROC 0.58-0.60 on the training pool (0.54-0.58 held out), the probe's
prefix head 0.51.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ttscale.budget import Ledger
from ttscale.errors import ConfigError
from ttscale.types import Candidate, Problem

__all__ = [
    "STATISTICS",
    "ConfidenceVerifier",
    "bottom_fraction_confidence",
    "group_confidences",
    "lowest_group_confidence",
    "tail_confidence",
    "trace_confidence",
]

Statistic = Literal["mean", "lowest_group", "bottom10", "tail"]
STATISTICS: tuple[str, ...] = ("mean", "lowest_group", "bottom10", "tail")


def group_confidences(conf: Sequence[float], window: int) -> np.ndarray:
    """Mean token confidence of every window of ``window`` consecutive tokens (a trace
    shorter than the window is one group)."""
    c = np.asarray(conf, dtype=np.float64)
    if c.size == 0:
        return np.zeros(1)
    if c.size <= window:
        return np.array([c.mean()])
    sums = np.concatenate(([0.0], np.cumsum(c)))
    return (sums[window:] - sums[:-window]) / window


def lowest_group_confidence(conf: Sequence[float], window: int) -> float:
    """DeepConf's lowest group confidence: min over sliding windows."""
    return float(group_confidences(conf, window).min())


def bottom_fraction_confidence(conf: Sequence[float], window: int, fraction: float = 0.1) -> float:
    """Mean of the lowest ``fraction`` of sliding-window confidences (at least one)."""
    groups = np.sort(group_confidences(conf, window))
    return float(groups[: max(1, int(len(groups) * fraction))].mean())


def tail_confidence(conf: Sequence[float], tail: int) -> float:
    """Mean token confidence over the last ``tail`` tokens."""
    c = np.asarray(conf, dtype=np.float64)
    return float(c[-tail:].mean()) if c.size else 0.0


def trace_confidence(
    conf: Sequence[float], stat: str, *, window: int = 128, tail: int = 128
) -> float:
    """One trace's score under ``stat`` (see module docstring)."""
    if stat == "mean":
        c = np.asarray(conf, dtype=np.float64)
        return float(c.mean()) if c.size else 0.0
    if stat == "lowest_group":
        return lowest_group_confidence(conf, window)
    if stat == "bottom10":
        return bottom_fraction_confidence(conf, window, 0.1)
    if stat == "tail":
        return tail_confidence(conf, tail)
    raise ConfigError(f"unknown confidence statistic {stat!r}; use one of {', '.join(STATISTICS)}")


@dataclass(frozen=True, slots=True)
class ConfidenceVerifier:
    """Scores candidates by a statistic of their token confidences (no engine call).

    Attributes:
        stat: ``mean``, ``lowest_group``, ``bottom10`` or ``tail``.
        window: Sliding-window size in tokens for the group statistics.
        tail: Tokens at the end for ``tail``.
        logprobs: Top-k logprobs per token the candidates must carry (DeepConf: 20).
        center: Step scores are ``sigmoid((c - center) / spread)`` of the prefix statistic.
        spread: See ``center`` (> 0).
    """

    stat: Statistic = "lowest_group"
    window: int = 128
    tail: int = 128
    logprobs: int = 20
    center: float = 11.6
    spread: float = 1.06

    def __post_init__(self) -> None:
        if self.stat not in STATISTICS:
            raise ConfigError(
                f"stat={self.stat!r}; use one of {', '.join(STATISTICS)} (DeepConf statistics)"
            )
        for name in ("window", "tail", "logprobs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not (np.isfinite(self.center) and np.isfinite(self.spread) and self.spread > 0):
            raise ConfigError(
                f"center={self.center}, spread={self.spread}: need finite values, spread > 0"
            )

    @property
    def name(self) -> str:
        extra = f"_w{self.window}" if "group" in self.stat or self.stat == "bottom10" else ""
        extra = f"_t{self.tail}" if self.stat == "tail" else extra
        return f"confidence_{self.stat}{extra}"

    async def score_candidates(
        self,
        problems: Sequence[Problem],
        candidates: Sequence[Candidate],
        *,
        ledger: Ledger | None = None,
    ) -> list[float]:
        out = []
        for i, c in enumerate(candidates):
            if c.token_confidence is None:
                raise ConfigError(
                    f"{self.name}: candidate {i} carries no token confidences; the strategy must "
                    f"request logprobs={self.logprobs} (best_of_n does when given this verifier) "
                    f"from a backend that returns them"
                )
            out.append(
                trace_confidence(c.token_confidence, self.stat, window=self.window, tail=self.tail)
            )
        return out

    async def score(
        self,
        problems: Sequence[Problem],
        step_lists: Sequence[Sequence[str]],
        *,
        ledger: Ledger | None = None,
    ) -> list[list[float]]:
        raise ConfigError(
            f"{self.name} scores token confidences, not texts: best_of_n and the step searches "
            f"(beam_search, dvts, particle_filter, ets) give it those; PDR and refine judge "
            f"texts, so use llm_judge or probe there"
        )

    def score_token_steps(
        self, confidences: Sequence[Sequence[float]], step_ends: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Per step: the statistic of the tokens up to the step's end, squashed to [0, 1]."""
        out = []
        for conf, ends in zip(confidences, step_ends, strict=True):
            c = np.asarray(conf, dtype=np.float64)
            raw = [
                trace_confidence(c[:e], self.stat, window=self.window, tail=self.tail) for e in ends
            ]
            out.append([float(1.0 / (1.0 + np.exp(-(r - self.center) / self.spread))) for r in raw])
        return out
