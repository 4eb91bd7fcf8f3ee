"""Implicit PRM: process rewards from the log-ratio of a policy and a reference model.

"Free Process Rewards without Process Labels" (Yuan et al. 2024, arXiv:2412.01981): with
the reward parameterised as ``r(y) = beta * log(pi(y) / pi_ref(y))``, the token-level
log-ratio is a process reward for free. For a step ``j`` with tokens ``T_j``::

    r_j = beta * sum_{t in T_j} (log pi(t | prefix) - log pi_ref(t | prefix))
    q_j = r_1 + ... + r_j                     # cumulative reward up to step j
    score_j = sigmoid(q_j)                    # in [0, 1]

``q_j`` is the paper's implicit Q-value of the partial solution; the sigmoid is the
probability model the implicit PRM is trained under (cross-entropy / DPO-style objectives),
so ``score_j`` reads as P(the solution so far leads to a correct answer). A step that adds
no evidence (equal logprobs) keeps the previous step's score; ``q_0 = 0`` maps to 0.5.

Token alignment is exact by construction: the sequence scored is
``render(problem) + encode(step_1 + delimiter) + ... + encode(step_k)``, built from token
ids with each step's boundary recorded, and both models score the very same ids (their
tokenizers must agree; this is checked). Each model gets **one** batched call holding every
candidate (``prompt_logprobs=True``, one generated token), through ``ledger.generate`` when a
ledger is given.

Overflow: the models are causal, so a sequence cut at the context window still scores the
steps before the cut exactly; steps past the cut score ``NEUTRAL`` (0.5) with a warning, or
raise with ``overflow="error"``. Logprobs are floored at ``logprob_floor`` so an infinite
value cannot turn into NaN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ttscale.budget import Ledger
from ttscale.errors import ConfigError, VerifierError
from ttscale.protocols import Generator
from ttscale.types import GenerationOutput, GenerationRequest, Problem
from ttscale.verifiers.base import check_scores

__all__ = ["ImplicitPRM", "NEUTRAL", "StepLayout", "layout_steps", "sigmoid"]

log = logging.getLogger(__name__)

NEUTRAL = 0.5
"""Score of a step that could not be scored (past the context window)."""

_PROBE = "Step 1: 3x + 5 = 17, so x = 4.\n\n$\\frac{1}{2} \\cdot 2^{10} = 512$ — done. 测试"


def sigmoid(x: float) -> float:
    """Numerically stable logistic function."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass(frozen=True, slots=True)
class StepLayout:
    """Token ids of one candidate and where each step's tokens lie."""

    token_ids: tuple[int, ...]
    """``render(problem)`` followed by every step's tokens."""
    prompt_len: int
    """Tokens of the rendered problem (never scored)."""
    bounds: tuple[tuple[int, int], ...]
    """Per step: ``[start, end)`` token positions in ``token_ids``."""


def layout_steps(gen: Generator, problem: Problem, steps: Sequence[str]) -> StepLayout:
    """Build a candidate's token ids step by step, recording step boundaries.

    Step ``j`` is encoded as ``steps[j] + problem.step_delimiter`` (no delimiter after the
    last step), so the delimiter's tokens belong to the step they close.
    """
    ids = list(gen.render(problem))
    prompt_len = len(ids)
    bounds = []
    for j, step in enumerate(steps):
        text = step if j == len(steps) - 1 else step + problem.step_delimiter
        start = len(ids)
        ids.extend(gen.encode(text))
        bounds.append((start, len(ids)))
    return StepLayout(tuple(ids), prompt_len, tuple(bounds))


@dataclass(frozen=True)
class ImplicitPRM:
    """Implicit process reward from ``policy`` vs ``reference`` prompt logprobs.

    Args:
        policy: The model whose log-likelihood is rewarded (e.g. the bigger 1.5B model, or
            an implicit PRM checkpoint served by any backend with ``prompt_logprobs``).
        reference: The reference model; must share the policy's tokenizer.
        beta: Reward scale (the paper trains with 0.05).
        mode: ``"step"``: one score per step; ``"outcome"``: only the final score.
        max_model_len: Context window; ``None`` uses the smaller ``max_model_len`` of the
            two backends when they expose one.
        overflow: Steps past the window score ``NEUTRAL`` (``"neutral"``) or raise.
        logprob_floor: Logprobs below this (including ``-inf``) are raised to it.
        name: Verifier name in traces.

    Raises:
        ConfigError: Bad option, or the two backends tokenize differently.
    """

    policy: Generator
    reference: Generator
    beta: float = 0.05
    mode: Literal["step", "outcome"] = "step"
    max_model_len: int | None = None
    overflow: Literal["neutral", "error"] = "neutral"
    logprob_floor: float = -100.0
    name: str = "implicit_prm"

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, int | float) and math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"beta={self.beta!r} must be a positive finite number (e.g. 0.05)")
        if self.mode not in ("step", "outcome"):
            raise ConfigError(f"mode={self.mode!r}; use 'step' or 'outcome'")
        if self.overflow not in ("neutral", "error"):
            raise ConfigError(f"overflow={self.overflow!r}; use 'neutral' or 'error'")
        if not math.isfinite(self.logprob_floor) or self.logprob_floor >= 0:
            raise ConfigError(f"logprob_floor={self.logprob_floor} must be a negative number")
        if self.policy.encode(_PROBE) != self.reference.encode(_PROBE):
            raise ConfigError(
                f"policy {self.policy.name!r} and reference {self.reference.name!r} tokenize "
                f"differently; the implicit PRM compares logprobs token by token, so pick two "
                f"models of one family (e.g. Qwen2.5 1.5B and 0.5B)"
            )

    def _limit(self) -> int | None:
        if self.max_model_len is not None:
            return self.max_model_len
        lens = [getattr(g, "max_model_len", None) for g in (self.policy, self.reference)]
        known = [n for n in lens if isinstance(n, int)]
        return min(known) if known else None

    async def score(
        self,
        problems: Sequence[Problem],
        step_lists: Sequence[Sequence[str]],
        *,
        ledger: Ledger | None = None,
    ) -> list[list[float]]:
        """Score every step of every candidate: one batched call per model.

        Args:
            problems: The problem of each candidate.
            step_lists: Each candidate's steps; a candidate with no steps scores ``[]``.
            ledger: Records both engine calls when given.

        Returns:
            Per candidate: ``sigmoid(q_j)`` per step, or ``[sigmoid(q_last)]`` in outcome mode.

        Raises:
            ConfigError: ``problems`` and ``step_lists`` differ in length.
            VerifierError: A backend returned no prompt logprobs, or a candidate overflows
                with ``overflow="error"``.
        """
        if len(problems) != len(step_lists):
            raise ConfigError(
                f"got {len(problems)} problems for {len(step_lists)} step lists; pass one "
                f"problem per candidate"
            )
        limit = self._limit()
        # Per candidate: None (no steps) or (layout, index into `requests` or None).
        plan: list[tuple[StepLayout, int | None] | None] = []
        requests: list[GenerationRequest] = []
        for i, (problem, steps) in enumerate(zip(problems, step_lists, strict=True)):
            if not steps:
                plan.append(None)
                continue
            lay = layout_steps(self.policy, problem, steps)
            ids = lay.token_ids
            if limit is not None and len(ids) + 1 > limit:
                if self.overflow == "error":
                    raise VerifierError(
                        f"{self.name}: candidate {i} has {len(ids)} tokens, over the context "
                        f"window of {limit}; raise max_model_len or use overflow='neutral'"
                    )
                log.warning(
                    "%s: candidate %d has %d tokens > window %d; steps past the cut score %.1f",
                    self.name,
                    i,
                    len(ids),
                    limit,
                    NEUTRAL,
                )
                ids = ids[: limit - 1]
                if len(ids) <= lay.prompt_len:  # not even the problem fits: nothing to score
                    plan.append((lay, None))
                    continue
            plan.append((lay, len(requests)))
            requests.append(
                GenerationRequest(ids, n=1, max_tokens=1, temperature=0.0, prompt_logprobs=True)
            )
        pol = await self._call(self.policy, requests, ledger)
        ref = await self._call(self.reference, requests, ledger)
        scores: list[list[float]] = []
        for entry in plan:
            if entry is None:
                scores.append([])
                continue
            lay, k = entry
            if k is None:
                row = [NEUTRAL] * len(lay.bounds)
            else:
                scored = len(requests[k].prompt_token_ids)
                row = self._step_scores(lay, scored, pol[k], ref[k])
            scores.append(row if self.mode == "step" else row[-1:])
        return check_scores(self.name, scores, step_lists)

    def _step_scores(
        self, lay: StepLayout, scored: int, pol: GenerationOutput, ref: GenerationOutput
    ) -> list[float]:
        lp_pol, lp_ref = self._logprobs(pol, scored), self._logprobs(ref, scored)
        q, row = 0.0, []
        for start, end in lay.bounds:
            if end > scored:
                row.append(NEUTRAL)  # cut off by the context window
                continue
            q += self.beta * sum(lp_pol[t] - lp_ref[t] for t in range(start, end))
            row.append(sigmoid(q))
        return row

    def _logprobs(self, out: GenerationOutput, n: int) -> list[float]:
        lps = out.prompt_logprobs
        if lps is None or len(lps) != n:
            raise VerifierError(
                f"{self.name}: expected {n} prompt logprobs, got "
                f"{'none' if lps is None else len(lps)}; use a backend that returns "
                f"prompt_logprobs (vllm, hf, scripted)"
            )
        floor = self.logprob_floor
        # Position 0 has no logprob (nothing precedes it); it is never inside a step.
        return [floor if v is None or not v > floor else float(v) for v in lps]

    async def _call(
        self, gen: Generator, requests: list[GenerationRequest], ledger: Ledger | None
    ) -> list[GenerationOutput]:
        if not requests:
            return []
        outs = await (ledger.generate(gen, requests) if ledger else gen.generate(requests))
        if len(outs) != len(requests):
            raise VerifierError(
                f"{self.name}: backend {gen.name!r} returned {len(outs)} outputs for "
                f"{len(requests)} requests"
            )
        return outs
