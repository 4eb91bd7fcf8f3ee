"""Best-of-N and self-consistency with adaptive early stopping. Spends: rollouts, tokens.

Samples up to ``n`` full solutions in rounds of ``round_size`` (one batched engine call per
round: the prompt is sent once with ``n=round_size``, so its KV is shared), extracts each
final answer, and selects:

- ``majority``: self-consistency (Wang et al. 2023), the most frequent answer class;
- ``weighted``: the answer class with the largest summed verifier score (Li et al. 2023);
- ``best``: the single highest-scoring candidate (classic best-of-N with a verifier);
- ``filtered``: DeepConf's offline selection (Fu et al. 2025): keep the ``keep`` fraction of
  candidates with the highest scores, then a score-weighted vote among them.

A verifier that scores whole candidates (``CandidateVerifier``, e.g. the confidence
verifiers) gets them with their per-token confidences: each round then asks the engine for
the verifier's ``logprobs`` top-k logprobs.

``gate=True`` adds DeepConf's *online* early termination (Fu et al. 2025): the first
``gate_warmup`` samples run to the end and set a threshold (the ``1 - gate_keep`` quantile
of their lowest group confidence); every later sample ends as soon as a window of
``gate_window`` tokens falls below it (checked every ``gate_every`` tokens; see
``ConfidenceStop``). Stopped samples cast no vote; the tokens they did not write stay in the
budget. On a sample pool the cut is replayed exactly.

Answers are grouped by math-verify equivalence. With ``adaptive=True`` sampling stops once
the leader is decided: P(leader share > runner-up share) >= ``confidence`` under a Beta
posterior (Adaptive-Consistency, Aggarwal et al. 2023). Unused budget stays in the ledger.

Each round is sized to the budget left: never more samples than rollouts remain, and
``max_tokens`` per sample lowered so the round's worst case fits the token cap, but never
below ``min_sample_tokens`` (a sample that cannot finish is wasted compute).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ttscale.budget import Budget, Ledger
from ttscale.errors import BudgetError, ConfigError, VerifierRequired
from ttscale.protocols import CandidateVerifier, Generator, Verifier
from ttscale.strategies.search import (
    SELECTS,
    check_positive,
    check_sampling,
    finish_ledger,
    generate_with_stop,
    size_sample_round,
)
from ttscale.types import Candidate, ConfidenceStop, GenerationRequest, Problem, Result
from ttscale.verifiers.answers import extract_answer
from ttscale.verifiers.base import aggregate, check_scores
from ttscale.verifiers.confidence import lowest_group_confidence
from ttscale.verifiers.voting import filter_top, group_answers, vote_state

__all__ = ["BestOfN"]

log = logging.getLogger(__name__)

GATE_LOGPROBS = 20
"""Top-k logprobs per token the gate asks for (DeepConf's k)."""


@dataclass(frozen=True, slots=True)
class BestOfN:
    """Best-of-N / self-consistency.

    Attributes docstrings name the symbol used in the literature where there is one.
    """

    n: int = 16
    """N: most samples drawn (fewer if the budget or the stopping rule ends it first)."""
    max_tokens: int = 1024
    """Cap on generated tokens per sample."""
    temperature: float = 0.5
    """Sampling temperature. Measured on the embedded 0.5B model ("What is 12*7?", 16
    samples each): 75% of samples right at 0.3, 69% at 0.5, 38% at 0.7; hotter sampling
    scatters a small model's answers faster than it adds useful diversity."""
    top_p: float = 1.0
    round_size: int = 8
    """Samples per engine call; the stopping rule is checked between rounds."""
    adaptive: bool = True
    """Stop early once the vote is decided (Beta stopping rule)."""
    confidence: float = 0.95
    """Stopping threshold on P(leader > runner-up)."""
    select: Literal["auto", "majority", "weighted", "best", "filtered"] = "auto"
    """``auto``: ``weighted`` with a verifier, ``majority`` without."""
    keep: float = 0.9
    """``filtered``: fraction of candidates kept by score before the weighted vote (DeepConf's
    eta: 0.9 keeps all but the least confident tenth, 0.1 only the most confident)."""
    agg: str = "last"
    """How a verifier's step scores become one candidate score."""
    gate: bool = False
    """DeepConf online: end unconfident samples early after a warm-up (see module doc)."""
    gate_warmup: int = 4
    """Samples drawn to the end first; their confidences set the gate's threshold."""
    gate_keep: float = 0.9
    """Fraction of the warm-up samples that would have passed the gate (DeepConf-high: 0.9;
    DeepConf-low, aggressive: 0.1)."""
    gate_window: int = 128
    """Tokens per confidence group (DeepConf: 2048 on traces ~20x longer than ours)."""
    gate_every: int = 16
    """Tokens between checks (live engines generate in chunks of this many tokens)."""
    min_sample_tokens: int = 128
    """Smallest per-sample token cap worth launching."""
    seed: int = 0
    """Round r uses seed ``seed + r``."""

    def __post_init__(self) -> None:
        check_positive(
            self,
            "n",
            "max_tokens",
            "round_size",
            "min_sample_tokens",
            "gate_warmup",
            "gate_window",
            "gate_every",
        )
        if not 0 < self.gate_keep <= 1:
            raise ConfigError(f"gate_keep={self.gate_keep} must be in (0, 1]")
        if self.min_sample_tokens > self.max_tokens:
            raise ConfigError(
                f"min_sample_tokens={self.min_sample_tokens} exceeds max_tokens={self.max_tokens}; "
                f"lower min_sample_tokens"
            )
        if not 0.5 < self.confidence <= 1.0:
            raise ConfigError(f"confidence={self.confidence} must be in (0.5, 1]")
        check_sampling(self, ("auto", *SELECTS, "filtered"))
        if not 0 < self.keep <= 1:
            raise ConfigError(f"keep={self.keep} must be in (0, 1] (the fraction kept)")

    def verifier_requirement(self) -> VerifierRequired | None:
        """What running without a verifier would raise (``select='auto'`` falls back to
        majority, so only an explicit weighted/best selection needs one)."""
        if self.select in ("auto", "majority"):
            return None  # auto without a verifier is majority
        return VerifierRequired(
            f"select={self.select!r} needs a verifier",
            python_fix="use select='majority'",
            cli_fix="use -o select=majority",
        )

    async def run(
        self, problem: Problem, generator: Generator, verifier: Verifier | None, budget: Budget
    ) -> Result:
        select = self.select if self.select != "auto" else ("weighted" if verifier else "majority")
        if verifier is None and (need := self.verifier_requirement()) is not None:
            raise need
        ledger = Ledger(budget)
        ledger.engine = generator.profile()
        prompt = generator.render(problem)
        logprobs = getattr(verifier, "logprobs", None) if verifier is not None else None
        if self.gate:
            logprobs = max(logprobs or 0, GATE_LOGPROBS)
        gate: ConfidenceStop | None = None
        cands: list[Candidate] = []
        trace: list[dict[str, Any]] = []
        stop_reason, confidence = "n_reached", 0.0
        rnd = 0
        while len(cands) < self.n:
            left = self.n - len(cands)
            if self.gate and gate is None:
                left = min(left, self.gate_warmup - len(cands))
            req = self._size_round(ledger, generator, prompt, left, rnd, logprobs=logprobs)
            if req is None:
                if not cands:
                    raise BudgetError(
                        f"budget {budget} cannot pay for one sample of >= "
                        f"{self.min_sample_tokens} tokens; raise the budget or lower "
                        f"min_sample_tokens/max_tokens"
                    )
                stop_reason = f"budget:{ledger.exhausted() or 'insufficient'}"
                break
            if gate is not None:
                req = dataclasses.replace(req, stop_below=gate)
            out = await generate_with_stop(ledger, generator, req)
            new = [
                Candidate(
                    c.text,
                    # a sample the gate stopped casts no vote (DeepConf discards it)
                    None if c.finish_reason == "confidence" else extract_answer(c.text),
                    c.num_tokens,
                    c.finish_reason,
                    token_confidence=c.confidence,
                )
                for c in out.completions
            ]
            if verifier is not None:
                await self._score(problem, verifier, new, ledger)
            cands.extend(new)
            if self.gate and gate is None and len(cands) >= self.gate_warmup:
                gate = self._threshold(cands)
            groups, confidence = vote_state([c.answer for c in cands])
            trace.append(
                {
                    "round": rnd,
                    "samples": req.n,
                    "max_tokens": req.max_tokens,
                    "seed": req.seed,
                    "generated_tokens": sum(c.tokens for c in new),
                    "cached_tokens": out.cached_tokens,
                    "answers": [c.answer for c in new],
                    "leader": groups[0].answer if groups else None,
                    "confidence": round(confidence, 6),
                }
            )
            log.debug("round %d: %d samples, conf=%.3f, %s", rnd, req.n, confidence, ledger.brief())
            rnd += 1
            if self.adaptive and confidence >= self.confidence:
                stop_reason = "confident"
                break
        answer, table = self._select(select, cands)
        finish_ledger(ledger, stop_reason)
        return Result(
            answer=answer,
            candidates=cands,
            trace=trace,
            ledger=ledger,
            strategy="best_of_n",
            extras={
                "select": select,
                "votes": table,
                "confidence": confidence,
                "stop_reason": stop_reason,
                **({"gate": self._gate_record(gate, cands)} if self.gate else {}),
            },
        )

    def _threshold(self, cands: list[Candidate]) -> ConfidenceStop:
        """The gate from the warm-up samples' lowest group confidences."""
        lows = [lowest_group_confidence(c.token_confidence or (), self.gate_window) for c in cands]
        threshold = float(np.quantile(lows, 1 - self.gate_keep)) if lows else 0.0
        return ConfidenceStop(self.gate_window, threshold, self.gate_every)

    @staticmethod
    def _gate_record(gate: ConfidenceStop | None, cands: list[Candidate]) -> dict[str, Any]:
        stopped = [c for c in cands if c.finish_reason == "confidence"]
        return {
            "threshold": None if gate is None else gate.threshold,
            "window": None if gate is None else gate.window,
            "stopped": len(stopped),
            "stopped_tokens": sum(c.tokens for c in stopped),
        }

    def _size_round(
        self,
        ledger: Ledger,
        gen: Generator,
        prompt: tuple[int, ...],
        left: int,
        rnd: int,
        *,
        logprobs: int | None = None,
    ) -> GenerationRequest | None:
        return size_sample_round(
            ledger,
            gen,
            prompt,
            left=left,
            round_size=self.round_size,
            max_tokens=self.max_tokens,
            min_sample_tokens=self.min_sample_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed + rnd,
            logprobs=logprobs,
        )

    async def _score(
        self, problem: Problem, verifier: Verifier, new: list[Candidate], ledger: Ledger
    ) -> None:
        if isinstance(verifier, CandidateVerifier):
            values = await verifier.score_candidates([problem] * len(new), new, ledger=ledger)
            ledger.record_verifier()
            rows = check_scores(verifier.name, [[v] for v in values], [[c.text] for c in new])
            for cand, row in zip(new, rows, strict=True):
                cand.step_scores, cand.score = row, row[0]
            return
        steps = [[s for s in c.text.split(problem.step_delimiter) if s.strip()] for c in new]
        raw = await verifier.score([problem] * len(new), steps, ledger=ledger)
        ledger.record_verifier()
        for cand, row in zip(new, check_scores(verifier.name, raw, steps), strict=True):
            cand.step_scores = row
            cand.score = aggregate(row, self.agg)

    def _select(
        self, select: str, cands: list[Candidate]
    ) -> tuple[str | None, list[dict[str, Any]]]:
        answers = [c.answer for c in cands]
        scores = None if select == "majority" else [c.score or 0.0 for c in cands]
        if select == "filtered":
            answers, scores = filter_top(answers, scores or [], self.keep)
        groups = group_answers(answers, scores)
        table = [{"answer": g.answer, "votes": g.votes, "weight": g.weight} for g in groups]
        if select == "best":
            scored = [c for c in cands if c.answer is not None]
            if not scored:
                return None, table
            best = max(scored, key=lambda c: c.score or 0.0)  # max keeps the first on ties
            return best.answer, table
        return (groups[0].answer if groups else None), table
