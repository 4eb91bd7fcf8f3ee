"""Particle filtering over reasoning steps. Spends: tokens, rollouts, eFLOPs, seconds.

Puri, Sudalairaj, Xu, Xu & Srivastava 2025, "A Probabilistic Inference Approach to
Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods" (arXiv:2502.01618);
the reference implementation lives in Red-Hat-AI-Innovation-Team/its_hub.

Search is posed as sampling from the state-space model whose transitions are the policy's
steps and whose observations are a verifier's step rewards. With ``n`` = N particles:

1. All particles start at the prompt.
2. Every unfinished particle is extended by one step (text up to ``Problem.step_delimiter``)
   in **one** engine call; particles that share a prefix (copies made by resampling) go out
   as one request with ``n`` = copies, so the prefix is prefilled once and served from the
   engine's prefix cache (``Ledger.cached_tokens``, reported in ``extras``).
3. **One** verifier call scores the extended particles; a particle's reward is its step
   scores aggregated (``agg``), and its weight is ``softmax(reward / weight_temperature)``
   over the whole population.
4. Resample N ancestors from the weights (``multinomial`` or ``systematic``), every step or
   only when the effective sample size falls below ``ess_threshold * N``. Finished
   particles (EOS, closed ``\\boxed{}``, ``max_tokens``) stay in the population, keep their
   reward, are resampled like the others and are never extended again.
5. Stop when every particle is finished, after ``max_steps``, or when the budget cannot pay
   for a step of at least ``min_step_tokens`` per particle.
6. The answer is a weighted vote of the final population with its softmax weights.

Resampling draws from a ``numpy.random.Generator`` created per run from ``seed``, so one
instance can serve concurrent runs and a run is reproducible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from ttscale.budget import Budget, Ledger
from ttscale.errors import BudgetError, ConfigError, VerifierRequired
from ttscale.protocols import Generator, Verifier
from ttscale.strategies.search import (
    RESAMPLERS,
    Node,
    check_positive,
    check_sampling,
    effective_sample_size,
    fit_step,
    merge_prompts,
    score_nodes,
    search_result,
    softmax,
    step_logprobs,
    to_candidate,
)
from ttscale.types import GenerationRequest, Problem, Result

__all__ = ["ParticleFilter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ParticleFilter:
    """Particle filtering (sequential Monte Carlo) guided by a verifier's step rewards."""

    name: ClassVar[str] = "particle_filter"

    n: int = 8
    """N: particles."""
    max_steps: int = 40
    step_tokens: int = 256
    """Cap on generated tokens per step (a longer step is cut and continued)."""
    max_tokens: int = 1024
    """Cap on generated tokens per particle (a particle reaching it is finished)."""
    min_step_tokens: int = 32
    temperature: float = 0.8
    """Sampling temperature of the policy."""
    top_p: float = 1.0
    weight_temperature: float = 1.0
    """T in ``softmax(reward / T)``: lower concentrates the weights on the best particles."""
    resampling: Literal["multinomial", "systematic"] = "systematic"
    resample_when: Literal["always", "ess"] = "always"
    """``always``: every step (as in the paper); ``ess``: when ESS < ``ess_threshold * n``."""
    ess_threshold: float = 0.5
    agg: str = "last"
    """How step scores become a particle's reward."""
    select: Literal["weighted", "majority", "best"] = "weighted"
    verifier_reserve: int = 1
    """Tokens and rollouts held back per particle for the verifier's engine call (an LLM
    judge spends one of each per judgement; use 0 for verifiers that spend nothing)."""
    seed: int = 0
    """Seeds the resampling generator and the per-step sampling seeds."""

    def __post_init__(self) -> None:
        check_positive(self, "n", "max_steps", "step_tokens", "max_tokens", "min_step_tokens")
        if not self.weight_temperature > 0:
            raise ConfigError(
                f"weight_temperature={self.weight_temperature} must be > 0 "
                f"(e.g. 1.0; lower is greedier)"
            )
        if self.resampling not in RESAMPLERS:
            raise ConfigError(f"resampling={self.resampling!r}; use multinomial or systematic")
        if self.resample_when not in ("always", "ess"):
            raise ConfigError(f"resample_when={self.resample_when!r}; use always or ess")
        if not 0 < self.ess_threshold <= 1:
            raise ConfigError(f"ess_threshold={self.ess_threshold} must be in (0, 1]")
        check_sampling(self)
        if self.verifier_reserve < 0:
            raise ConfigError(f"verifier_reserve={self.verifier_reserve} must be >= 0")

    def verifier_requirement(self) -> VerifierRequired | None:
        """What running without a verifier would raise (checked before any engine work)."""
        return VerifierRequired(
            "particle_filter weights particles with a verifier",
            python_fix="use best_of_n",
            cli_fix="use --strategy best_of_n",
        )

    async def run(
        self, problem: Problem, generator: Generator, verifier: Verifier | None, budget: Budget
    ) -> Result:
        if verifier is None and (need := self.verifier_requirement()) is not None:
            raise need
        ledger = Ledger(budget)
        ledger.engine = generator.profile()
        rng = np.random.default_rng(self.seed)  # per run: the instance stays reentrant
        delim = problem.step_delimiter
        particles = [Node(generator.render(problem))] * self.n
        weights = np.full(self.n, 1.0 / self.n)
        trace: list[dict[str, Any]] = []
        stop, next_id = "all_finished", 1
        for step in range(self.max_steps):
            alive = [i for i, p in enumerate(particles) if not p.done]
            if not alive:
                break
            groups = merge_prompts([particles[i].ids for i in alive])
            room = [self.max_tokens - len(particles[alive[pos[0]]].token_ids) for _, pos in groups]
            demands = [
                (ids, len(pos), min(self.step_tokens, left))
                for (ids, pos), left in zip(groups, room, strict=True)
            ]
            template = GenerationRequest(
                (),
                temperature=self.temperature,
                top_p=self.top_p,
                stop=(delim,),
                include_stop=True,
                seed=self.seed + step * (self.n + 1),
                logprobs=step_logprobs(verifier),
            )
            reqs = fit_step(
                ledger,
                generator,
                demands,
                template,
                min_tokens=self.min_step_tokens,
                reserve=self.verifier_reserve * len(alive),
            )
            if not reqs:
                if step == 0:
                    raise BudgetError(
                        f"budget {budget} cannot pay for one particle_filter step "
                        f"of {self.n} x >= {self.min_step_tokens} tokens; raise the "
                        f"budget or lower n/min_step_tokens"
                    )
                stop = f"budget:{ledger.exhausted() or 'insufficient'}"
                break
            outs = await ledger.generate(generator, reqs)
            extended = []
            for (_, pos), out in zip(groups, outs, strict=True):
                for j, comp in zip(pos, out.completions, strict=True):
                    extended.append(
                        (
                            alive[j],
                            particles[alive[j]].extend(
                                comp, id=next_id, delimiter=delim, max_tokens=self.max_tokens
                            ),
                        )
                    )
                    next_id += 1
            fresh = [p for _, p in extended]
            scored = await score_nodes(problem, verifier, fresh, ledger, self.agg)
            particles = list(particles)
            for (i, _), p in zip(extended, scored or fresh, strict=True):
                particles[i] = p
            if scored is None:  # the verifier's own call did not fit the budget
                stop = f"budget:{ledger.exhausted() or 'verifier'}"
                break
            weights = softmax([p.score for p in particles], self.weight_temperature)
            ess = effective_sample_size(weights)
            resample = not all(p.done for p in particles) and (
                self.resample_when == "always" or ess < self.ess_threshold * self.n
            )
            before, before_weights = particles, weights
            ancestors = list(range(self.n))
            if resample:
                ancestors = [int(a) for a in RESAMPLERS[self.resampling](weights, self.n, rng)]
                particles = [particles[a] for a in ancestors]
                weights = softmax([p.score for p in particles], self.weight_temperature)
            trace.append(
                {
                    "step": step,
                    "alive": len(alive),
                    "requests": len(reqs),
                    "max_tokens": max(r.max_tokens for r in reqs),
                    "generated_tokens": sum(c.num_tokens for o in outs for c in o.completions),
                    "cached_tokens": sum(o.cached_tokens for o in outs),
                    "prompt_tokens": sum(o.prompt_tokens for o in outs),
                    "particles": [
                        p.record(weight=round(float(w), 6))
                        for p, w in zip(before, before_weights, strict=True)
                    ],
                    "ess": round(ess, 4),
                    "resampled": resample,
                    "ancestors": ancestors,
                }
            )
            log.debug(
                "step %d: alive=%d ess=%.2f resampled=%s %s",
                step,
                len(alive),
                ess,
                resample,
                ledger.brief(),
            )
        else:
            stop = "max_steps" if any(not p.done for p in particles) else stop
        return search_result(
            self.name,
            self.select,
            [to_candidate(p) for p in particles],
            trace,
            ledger,
            stop,
            vote_weights=None if self.select == "majority" else weights.tolist(),
            weights=[round(float(w), 6) for w in weights],
            resamples=sum(t["resampled"] for t in trace),
            cached_tokens=ledger.cached_tokens,
        )
