"""``solve_batch``: many prompts under one shared budget, spent where it buys the most accuracy.

Three phases, each one concurrent batch through a single ``CoalescingGenerator`` (so the
prompts' engine calls merge into shared engine batches):

1. probe every prompt (``Auto.probe``) under an equal slice of the shared caps;
2. ``allocator.allocate`` splits what the probes left by expected accuracy gain per
   eFLOP: saturated prompts stop, hopeless ones are capped, the rest climb policy levels;
3. each prompt continues (``Auto.finish``) under its probe spend + its share.

Per unit, the prompts' caps sum to at most the shared cap (tokens and rollouts floored,
eFLOPs scaled by 1 - 1e-9), and each prompt's ledger enforces its own caps, so the batch can
never spend more than the shared budget. ``seconds`` is one deadline shared by all prompts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from ttscale.budget import UNITS, Budget, Ledger
from ttscale.errors import BudgetError, ConfigError
from ttscale.protocols import Generator, Verifier
from ttscale.strategies.allocation.allocator import (
    MIN_PROBE_TOKENS,
    TYPICAL_SAMPLE_TOKENS,
    allocate,
    eflops_per_token,
    share_budget,
    token_equivalent,
)
from ttscale.strategies.allocation.auto import Auto
from ttscale.types import Problem, Result

__all__ = ["run_batch"]

_RESERVABLE = ("tokens", "rollouts", "flops")


async def run_batch(
    prompts: Sequence[str],
    budget: Budget,
    generator: Generator,
    verifier: Verifier | None,
    *,
    system_prompt: str | None,
    hopeless_accuracy: float = 0.1,
    **auto_options: Any,
) -> list[Result]:
    """Solve ``prompts`` with ``strategy="auto"`` under one shared ``budget``; see module doc.

    ``generator`` should be a ``CoalescingGenerator`` (``api.asolve_batch`` wraps one).

    Raises:
        BudgetError: The shared budget cannot pay one probe sample per prompt.
    """
    if not prompts:
        return []
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ConfigError(f"every prompt must be a non-empty string; got {p!r}")
    auto = Auto(**auto_options)
    pol = auto.resolved_policy()
    n = len(prompts)
    problems = [Problem(p, system_prompt, id=str(i)) for i, p in enumerate(prompts)]

    # 1. probes, each under an equal slice of the shared caps.
    probe_caps: dict[str, Any] = {}
    k, per = pol.bins.probe_k, pol.bins.probe_tokens
    if budget.tokens is not None:
        probe_caps["tokens"] = min(k * per, budget.tokens // n)
    if budget.rollouts is not None:
        probe_caps["rollouts"] = min(k, budget.rollouts // n)
    if budget.flops is not None:
        probe_caps["flops"] = budget.flops / n * (1 - 1e-9)
    if budget.seconds is not None:
        probe_caps["seconds"] = budget.seconds
    if (
        probe_caps.get("tokens", MIN_PROBE_TOKENS) < MIN_PROBE_TOKENS
        or probe_caps.get("rollouts", 1) < 1
    ):
        raise BudgetError(
            f"shared budget {budget} cannot pay one probe sample of >= {MIN_PROBE_TOKENS} tokens "
            f"for each of {n} prompts; raise the budget or batch fewer prompts"
        )
    ledgers = [Ledger(Budget(**probe_caps)) for _ in problems]
    for led in ledgers:
        led.engine = generator.profile()
    hw = ledgers[0].hardware
    prices = [
        eflops_per_token(generator.model_spec, hw, len(generator.render(pb))) for pb in problems
    ]
    mean_price = sum(prices) / n
    # The probe fraction applies to each prompt's even share of the whole budget.
    even = token_equivalent(budget, per_token_eflops=mean_price) / n
    probes = await asyncio.gather(
        *(
            auto.probe(pb, generator, verifier, led, pol, budget_tokens=even)
            for pb, led in zip(problems, ledgers, strict=True)
        )
    )

    # 2. allocation of what the probes left.
    spent = [{u: led.spent(u) for u in _RESERVABLE} for led in ledgers]
    left = {
        u: max(getattr(budget, u) - sum(s[u] for s in spent), 0.0)
        for u in _RESERVABLE
        if getattr(budget, u) is not None
    }
    pool_tokens = math.inf
    if "tokens" in left:
        pool_tokens = min(pool_tokens, left["tokens"])
    if "rollouts" in left:
        pool_tokens = min(pool_tokens, left["rollouts"] * TYPICAL_SAMPLE_TOKENS)
    if "flops" in left and mean_price > 0:
        pool_tokens = min(pool_tokens, left["flops"] / mean_price)
    pool = pool_tokens * mean_price if mean_price > 0 else pool_tokens
    allocs = allocate(
        probes,
        pol,
        per_token_eflops=prices if mean_price > 0 else [0.0] * n,
        probe_tokens=[float(s_led.generated_tokens) for s_led in ledgers],
        pool=pool,
        has_verifier=verifier is not None,
        saturation=pol.bins.saturation,
        hopeless_accuracy=hopeless_accuracy,
    )
    if math.isinf(pool) and left:  # caps exist but none priced (no model spec): split evenly
        m = sum(a.level is not None for a in allocs) or 1
        allocs = [
            dataclasses.replace(a, share=1.0 / m * (1 - 1e-12) if a.level else 0.0) for a in allocs
        ]
    levels: list[str | None] = []
    for led, s, a in zip(ledgers, spent, allocs, strict=True):
        shared = Budget(**{u: getattr(budget, u) for u in UNITS if getattr(budget, u) is not None})
        mine = share_budget(shared, s, left, a.share) if not shared.is_unlimited else Budget()
        if mine is None or a.level is None:
            levels.append(None)
            capped = share_budget(shared, s, left, 0.0)
            if capped is not None:
                led.budget = capped  # the ledger shows exactly what this prompt was given
            continue
        led.budget = mine
        levels.append(a.level)

    # 3. continue each prompt under its share.
    results = await asyncio.gather(
        *(
            auto.finish(pb, generator, verifier, led, pr, pol, lv)
            for pb, led, pr, lv in zip(problems, ledgers, probes, levels, strict=True)
        )
    )
    for res, a in zip(results, allocs, strict=True):
        res.extras["allocation"] = {
            "level": a.level,
            "share": a.share,
            "expected_accuracy": a.expected_accuracy,
            "reason": a.reason,
        }
    return list(results)
