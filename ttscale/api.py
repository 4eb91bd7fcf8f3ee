"""The front door: ``solve(prompt, budget=...)`` and its async twin ``asolve``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ttscale.budget import Budget
from ttscale.errors import ConfigError, describe
from ttscale.protocols import Generator, Verifier
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Problem, Result

__all__ = ["asolve", "asolve_batch", "solve", "solve_batch"]

BudgetLike = Budget | str | int | Mapping[str, Any] | None


async def asolve(
    prompt: str,
    budget: BudgetLike = "rollouts=8",
    *,
    strategy: str = "best_of_n",
    backend: Generator | str | None = None,
    verifier: Verifier | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    **options: Any,
) -> Result:
    """Async ``solve``; see there. Use this from inside a running event loop."""
    from ttscale.backends import make_backend
    from ttscale.strategies import make_strategy

    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt must be a non-empty string, got {describe(prompt)}")
    parsed = Budget.parse(budget)
    runner = make_strategy(strategy, **options)
    owned = backend is None or isinstance(backend, str)
    gen = make_backend(backend or "auto") if owned else backend  # type: ignore[arg-type]
    try:
        return await runner.run(Problem(prompt, system_prompt), gen, verifier, parsed)
    finally:
        if owned:
            await gen.close()


def solve(
    prompt: str,
    budget: BudgetLike = "rollouts=8",
    *,
    strategy: str = "best_of_n",
    backend: Generator | str | None = None,
    verifier: Verifier | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    **options: Any,
) -> Result:
    """Spend ``budget`` on ``strategy`` to answer ``prompt``.

    Args:
        prompt: The question.
        budget: Caps in tokens / rollouts / flops / seconds: ``"tokens=20000,seconds=60"``,
            an int (tokens), a dict, or a ``Budget``.
        strategy: A name in ``ttscale.strategies.STRATEGIES``.
        backend: A ``Generator`` instance (reused, not closed), a backend name, or ``None``
            for the embedded model on vLLM (transformers where vLLM is absent), loaded for
            this call and released after. Reuse an instance for many calls: loading costs
            ~20-30 s on CPU.
        verifier: Optional step/outcome scorer; enables weighted selection.
        system_prompt: System message; ``None`` omits it.
        **options: Strategy hyper-parameters (e.g. ``n=16, max_tokens=512``).

    Returns:
        ``Result`` with the answer, every candidate, a trace and the ledger.

    Raises:
        ConfigError: Empty prompt, malformed budget, unknown strategy/backend/option.
        BudgetError: The budget cannot pay for one step.
        BackendError: The engine failed or is unreachable.

    Must not be called from a running event loop; use ``asolve`` there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ConfigError("solve() was called inside a running event loop; use `await asolve(...)`")
    return asyncio.run(
        asolve(
            prompt,
            budget,
            strategy=strategy,
            backend=backend,
            verifier=verifier,
            system_prompt=system_prompt,
            **options,
        )
    )


async def asolve_batch(
    prompts: Sequence[str],
    budget: BudgetLike = "tokens=20000",
    *,
    backend: Generator | str | None = None,
    verifier: Verifier | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    **options: Any,
) -> list[Result]:
    """Async ``solve_batch``; see there."""
    from ttscale.backends import make_backend
    from ttscale.backends.batching import CoalescingGenerator
    from ttscale.batch import run_batch

    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ConfigError(f"prompts must be a list of strings, got {describe(prompts)}")
    parsed = Budget.parse(budget)
    owned = backend is None or isinstance(backend, str)
    gen = make_backend(backend or "auto") if owned else backend  # type: ignore[arg-type]
    shared = gen if isinstance(gen, CoalescingGenerator) else CoalescingGenerator(gen)
    try:
        return await run_batch(
            list(prompts), parsed, shared, verifier, system_prompt=system_prompt, **options
        )
    finally:
        if owned:
            await gen.close()


def solve_batch(
    prompts: Sequence[str],
    budget: BudgetLike = "tokens=20000",
    *,
    backend: Generator | str | None = None,
    verifier: Verifier | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    **options: Any,
) -> list[Result]:
    """Answer many prompts under ONE shared budget with ``strategy="auto"``.

    Every prompt is probed, then what the probes left is split by expected accuracy gain per
    eFLOP (``ttscale.allocator``): easy prompts stop after the probe, hopeless ones are capped,
    the rest get the policy's strategy at the level their share buys. All engine calls go
    through one ``CoalescingGenerator`` around ``backend``, so concurrent prompts share engine
    batches. Summed over the results' ledgers, tokens, rollouts and eFLOPs never exceed the
    shared caps; ``seconds`` is one deadline for the whole batch.

    Args:
        prompts: The questions.
        budget: The shared caps (same forms as ``solve``).
        backend, verifier, system_prompt: As in ``solve``.
        **options: ``Auto`` options (``policy=``, ``probe_k=``, ``saturation=``...) and
            ``hopeless_accuracy``.

    Returns:
        One ``Result`` per prompt, in order; ``extras["allocation"]`` says what it was given.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ConfigError(
            "solve_batch() was called inside a running event loop; use `await asolve_batch(...)`"
        )
    return asyncio.run(
        asolve_batch(
            prompts,
            budget,
            backend=backend,
            verifier=verifier,
            system_prompt=system_prompt,
            **options,
        )
    )
