"""``strategy="auto"``: probe -> difficulty bin -> policy -> strategy, with early stopping.

1. **Probe** (``allocator.run_probe``): ``k`` short samples in one engine call, optionally
   verifier-scored, charged to this run's ledger; they become candidates.
2. **Saturation**: if the probe's vote is already decided (Beta rule confidence >=
   ``saturation``, or with a verifier a leader of >= 2 votes scored >= ``verifier_saturation``
   on average), stop: the rest of the budget stays unused (``Result.extras
   ["unused_budget"]`` and the ledger's ``unused``).
3. **Policy**: the budget (converted to generated tokens with the cost model) picks a level;
   (bin, level) picks the best choice that can run with the given verifier.
4. **Run**: a ``best_of_n`` choice continues sampling in rounds of ``round_size``, voting over
   probe + new samples and stopping as soon as the vote saturates; any other strategy runs
   once with what the probe left, and its answer is kept (the probe's vote answers only if
   the strategy found none or the budget could not pay for it).

Every sub-run's ledger is absorbed into this run's ledger, so the caps hold for the total.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from ttscale.budget import UNITS, Budget, Ledger
from ttscale.errors import BudgetError, ConfigError
from ttscale.protocols import Generator, Verifier
from ttscale.strategies.allocation.allocator import (
    Probe,
    eflops_per_token,
    run_probe,
    token_equivalent,
)
from ttscale.strategies.allocation.policy import Choice, Policy, load_policy
from ttscale.strategies.search import absorb, select_answer
from ttscale.types import Candidate, Problem, Result
from ttscale.verifiers.voting import group_answers, leader_confidence

__all__ = ["Auto", "remaining_budget"]

log = logging.getLogger(__name__)


def remaining_budget(ledger: Ledger) -> Budget | None:
    """What ``ledger`` can still spend, as a ``Budget`` (``None`` if a cap is used up)."""
    fields: dict[str, Any] = {}
    for unit in UNITS:
        if getattr(ledger.budget, unit) is None:
            continue
        left = ledger.remaining(unit)
        if unit in ("tokens", "rollouts"):
            left = int(left)
        if left <= 0:
            return None
        fields[unit] = left
    return Budget(**fields)


@dataclass(frozen=True, slots=True)
class Auto:
    """Compute-optimal strategy selection per problem (Snell et al. 2024)."""

    name: ClassVar[str] = "auto"

    policy: Any = None
    """A ``Policy``, a path to policy JSON, or ``None`` for the packaged default."""
    probe_k: int | None = None
    """Probe samples; ``None`` = the policy's ``bins.probe_k``."""
    probe_tokens: int | None = None
    """Per-sample cap of the probe; ``None`` = the policy's."""
    saturation: float | None = None
    """Stop once P(leader > runner-up) reaches this; ``None`` = the policy's."""
    probe_fraction: float | None = None
    """Most of the budget (as generated tokens) the probe may take; ``None`` = the policy's
    (0.5 by default)."""
    round_size: int = 4
    """Samples per round when the choice is best-of-N."""
    temperature: float = 0.5
    """Probe temperature (best-of-N's default, measured on the embedded model)."""
    verifier_saturation: float | None = 0.9
    """With a verifier: also stop once the vote leader has >= 2 votes and a mean verifier
    score >= this; ``None`` disables it."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("probe_k", "probe_tokens"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name}={v!r} must be a positive integer")
        if self.saturation is not None and not 0.5 < self.saturation <= 1:
            raise ConfigError(f"saturation={self.saturation} must be in (0.5, 1]")
        if self.verifier_saturation is not None and not 0 < self.verifier_saturation <= 1:
            raise ConfigError(
                f"verifier_saturation={self.verifier_saturation} must be in (0, 1] or None"
            )
        if self.probe_fraction is not None and not 0 < self.probe_fraction <= 1:
            raise ConfigError(f"probe_fraction={self.probe_fraction} must be in (0, 1]")
        if not isinstance(self.round_size, int) or self.round_size < 1:
            raise ConfigError(f"round_size={self.round_size!r} must be a positive integer")

    def _verifier_saturated(self, cands: list[Candidate]) -> bool:
        if self.verifier_saturation is None:
            return False
        groups = group_answers([c.answer for c in cands])
        if not groups or groups[0].votes < 2:
            return False
        scores = [cands[i].score for i in groups[0].members]
        if any(s is None for s in scores):
            return False
        return sum(scores) / len(scores) >= self.verifier_saturation  # type: ignore[arg-type]

    def resolved_policy(self) -> Policy:
        pol = load_policy(self.policy)
        overrides = {
            k: v
            for k, v in (
                ("probe_k", self.probe_k),
                ("probe_tokens", self.probe_tokens),
                ("saturation", self.saturation),
                ("probe_fraction", self.probe_fraction),
            )
            if v is not None
        }
        if overrides:
            pol = pol.model_copy(update={"bins": pol.bins.model_copy(update=overrides)})
        return pol

    async def run(
        self, problem: Problem, generator: Generator, verifier: Verifier | None, budget: Budget
    ) -> Result:
        pol = self.resolved_policy()
        ledger = Ledger(budget)
        ledger.engine = generator.profile()
        probe = await self.probe(problem, generator, verifier, ledger, pol)
        prompt_len = len(generator.render(problem))
        price = eflops_per_token(generator.model_spec, ledger.hardware, prompt_len)
        level = pol.level_for(token_equivalent(budget, per_token_eflops=price)).name
        return await self.finish(problem, generator, verifier, ledger, probe, pol, level)

    async def probe(
        self,
        problem: Problem,
        generator: Generator,
        verifier: Verifier | None,
        ledger: Ledger,
        pol: Policy,
        budget_tokens: float | None = None,
    ) -> Probe:
        """Probe under ``ledger`` with ``bins.samples_for`` the budget (in generated tokens;
        ``budget_tokens`` or the ledger's): small budgets probe with fewer samples (>= 1)."""
        bins = pol.bins
        total = budget_tokens
        if total is None:
            price = eflops_per_token(
                generator.model_spec, ledger.hardware, len(generator.render(problem))
            )
            total = token_equivalent(ledger.budget, per_token_eflops=price)
        bins = bins.model_copy(update={"probe_k": bins.samples_for(total)})
        return await run_probe(
            problem,
            generator,
            verifier,
            ledger,
            bins,
            seed=self.seed,
            temperature=self.temperature,
        )

    async def finish(
        self,
        problem: Problem,
        generator: Generator,
        verifier: Verifier | None,
        ledger: Ledger,
        probe: Probe,
        pol: Policy,
        level: str | None,
    ) -> Result:
        """Continue after the probe at ``level`` (``None``: stop now) and build the result."""
        sat = pol.bins.saturation
        cands: list[Candidate] = list(probe.candidates)
        trace: list[dict[str, Any]] = [probe.trace]
        choice: Choice | None = None
        answer: str | None = None
        sub_extras: dict[str, Any] = {}
        confidence = probe.confidence
        if probe.confidence >= sat:
            stop = "saturated"
        elif self._verifier_saturated(cands):
            stop = "verifier_saturated"
        elif level is None:
            stop = "allocated_none"
        else:
            choice = pol.choose(probe.bin, level, has_verifier=verifier is not None)
            if choice.strategy == "best_of_n":
                stop, confidence = await self._continue_bon(
                    problem, generator, verifier, ledger, choice, cands, trace, sat
                )
            else:
                stop, answer, sub_extras = await self._run_other(
                    problem, generator, verifier, ledger, choice, cands, trace
                )
        select = "majority"
        if choice is not None and choice.needs_verifier and verifier is not None:
            select = str(choice.params.get("select", "weighted"))
            select = "weighted" if select == "auto" else select
        voted, table = select_answer(cands, select)
        if answer is None:
            answer = voted
        budget_stop = stop.split(":", 1)[1] if stop.startswith("budget:") else None
        ledger.finish(stopped_by=budget_stop)
        return Result(
            answer=answer,
            candidates=cands,
            trace=trace,
            ledger=ledger,
            strategy="auto",
            extras={
                "difficulty_bin": probe.bin,
                "difficulty_score": probe.score,
                "probe_samples": len(probe.candidates),
                "level": level,
                "choice": None if choice is None else choice.model_dump(exclude_none=True),
                "policy_fitted": pol.fitted,
                "stop_reason": stop,
                "confidence": confidence,
                "votes": table,
                "unused_budget": ledger.unused(),
                "sub_extras": sub_extras,
            },
        )

    async def _continue_bon(
        self,
        problem: Problem,
        generator: Generator,
        verifier: Verifier | None,
        ledger: Ledger,
        choice: Choice,
        cands: list[Candidate],
        trace: list[dict[str, Any]],
        sat: float,
    ) -> tuple[str, float]:
        params = {k: v for k, v in choice.params.items() if k not in ("seed", "adaptive")}
        total = int(params.pop("n", 16))
        if params.get("select") in ("weighted", "best") and verifier is None:
            params["select"] = "majority"
        if verifier is None:
            params.setdefault("select", "majority")
        round_size = int(params.pop("round_size", self.round_size))
        confidence, rnd = 0.0, 0
        while len(cands) < total:
            left = remaining_budget(ledger)
            if left is None:
                return f"budget:{ledger.exhausted() or 'insufficient'}", confidence
            k = min(round_size, total - len(cands))
            sub = Choice(
                strategy="best_of_n",
                params={
                    **params,
                    "n": k,
                    "round_size": k,
                    "adaptive": False,
                    "seed": self.seed + 1 + rnd,
                    "min_sample_tokens": min(
                        int(params.get("min_sample_tokens", 128)),
                        int(params.get("max_tokens", 1024)),
                    ),
                },
            ).build()
            try:
                res = await sub.run(problem, generator, verifier, left)
            except BudgetError:
                return "budget:insufficient", confidence
            absorb(ledger, res.ledger)
            cands.extend(res.candidates)
            groups = group_answers([c.answer for c in cands])
            top = groups[0].votes if groups else 0
            second = groups[1].votes if len(groups) > 1 else 0
            confidence = leader_confidence(top, second) if groups else 0.0
            trace.append(
                {
                    "phase": "best_of_n",
                    "round": rnd,
                    "samples": len(res.candidates),
                    "answers": [c.answer for c in res.candidates],
                    "confidence": round(confidence, 6),
                }
            )
            rnd += 1
            if confidence >= sat:
                return "saturated", confidence
            if self._verifier_saturated(cands):
                return "verifier_saturated", confidence
        return "n_reached", confidence

    async def _run_other(
        self,
        problem: Problem,
        generator: Generator,
        verifier: Verifier | None,
        ledger: Ledger,
        choice: Choice,
        cands: list[Candidate],
        trace: list[dict[str, Any]],
    ) -> tuple[str, str | None, dict[str, Any]]:
        left = remaining_budget(ledger)
        if left is None:
            return f"budget:{ledger.exhausted() or 'insufficient'}", None, {}
        strat = choice.build()
        if "seed" in {f.name for f in dataclasses.fields(strat)}:
            strat = dataclasses.replace(strat, seed=self.seed + 1)
        try:
            res = await strat.run(problem, generator, verifier, left)
        except BudgetError as exc:
            log.debug("auto: %s could not run (%s); answering from the probe", choice.strategy, exc)
            if exc.partial is not None:
                absorb(ledger, exc.partial.ledger)
            return "budget:insufficient", None, {}
        absorb(ledger, res.ledger)
        cands.extend(res.candidates)
        trace.append(
            {
                "phase": choice.strategy,
                "steps": len(res.trace),
                "answer": res.answer,
                "stop_reason": res.extras.get("stop_reason"),
            }
        )
        extras = {k: v for k, v in res.extras.items() if k in ("stop_reason", "confidence")}
        return str(res.extras.get("stop_reason") or "done"), res.answer, extras
