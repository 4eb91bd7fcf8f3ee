"""The front door: ``solve(prompt, budget=...)`` and its async twin ``asolve``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ttscale.budget import Budget
from ttscale.errors import ConfigError, describe
from ttscale.protocols import Generator, Verifier
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Problem, Result

__all__ = ["asolve", "solve"]

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
