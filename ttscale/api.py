"""The front door: ``solve(prompt, budget=...)`` and its async twin ``asolve``.

Without a backend, calls share one process-wide engine per backend name (``default_engine``):
the first call loads it (10-30 s on CPU), later calls reuse it, and it is released at exit or
by ``close_default_engines()``.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ttscale.budget import Budget
from ttscale.errors import ConfigError, describe
from ttscale.protocols import Generator, Verifier
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Problem, PublicTest, Result
from ttscale.verifiers.defaults import DEFAULT, default_verifier_for
from ttscale.verifiers.test_specs import parse_tests

__all__ = [
    "asolve",
    "asolve_batch",
    "close_default_engines",
    "code_request",
    "default_engine",
    "solve",
    "solve_batch",
]

BudgetLike = Budget | str | int | Mapping[str, Any] | None
TestsLike = Sequence[PublicTest | str] | None

CODE_STRATEGY = "code"
"""The strategy that runs public tests; ``tests``/``entry_point`` select it by default."""
DEFAULT_STRATEGY = "best_of_n"

SHARED_ENGINES = ("auto", "vllm", "hf")
"""Backend names whose engines ``solve`` loads once per process and reuses."""
_ENGINES: dict[str, Generator] = {}
_ENGINES_LOCK = threading.Lock()


def default_engine(name: str = "auto") -> Generator:
    """The process-wide engine for backend ``name`` (one of ``SHARED_ENGINES``), loaded on
    first use. ``solve``/``asolve``/``solve_batch`` use it when given no backend (``"auto"``:
    the embedded model on vLLM, transformers where vLLM is absent) or one of these names."""
    from ttscale.backends import make_backend

    if name not in SHARED_ENGINES:
        raise ConfigError(f"no shared engine for backend {name!r}; use one of {SHARED_ENGINES}")
    with _ENGINES_LOCK:
        if name not in _ENGINES:
            _ENGINES[name] = make_backend(name)
        return _ENGINES[name]


def close_default_engines() -> None:
    """Release the engines ``default_engine`` loaded (also run at interpreter exit). A later
    ``solve`` without a backend loads a fresh one."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for gen in engines:
        try:
            asyncio.run(gen.close())
        except RuntimeError:  # called inside a running loop: nothing async to await there
            pass


atexit.register(close_default_engines)


def _resolve_backend(backend: Generator | str | None) -> tuple[Generator, bool]:
    """``(generator, owned)``: ``owned`` engines are closed by the caller after the call."""
    from ttscale.backends import make_backend

    if backend is None or (isinstance(backend, str) and backend in SHARED_ENGINES):
        return default_engine(backend or "auto"), False
    if isinstance(backend, str):
        return make_backend(backend), True
    return backend, False


def code_request(
    prompt: str,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    *,
    strategy: str | None = None,
    tests: TestsLike = None,
    entry_point: str | None = None,
) -> tuple[str, Problem]:
    """``(strategy, problem)`` for a call that may carry public tests; what ``asolve`` and
    the servers use to read ``tests`` and ``entry_point`` at the boundary.

    Tests (see ``ttscale.verifiers.test_specs``) or an entry point make the strategy
    ``"code"`` when ``strategy`` is ``None``; ``None`` otherwise means ``"best_of_n"``.

    Raises:
        ConfigError: A bad test or entry point (the message names the test and the fix), or
            tests with a strategy other than ``"code"``.
    """
    entry, parsed = parse_tests(tests, entry_point)
    if parsed or entry is not None:
        if strategy is not None and strategy != CODE_STRATEGY:
            given = "tests" if parsed else "entry_point"
            raise ConfigError(
                f"{given} is for the {CODE_STRATEGY!r} strategy, which runs candidate programs "
                f"against public tests; strategy={strategy!r} would ignore it: pass "
                f"strategy={CODE_STRATEGY!r} (or leave strategy out), or drop {given}"
            )
        strategy = CODE_STRATEGY
    problem = Problem(prompt, system_prompt, entry_point=entry, tests=parsed)
    return strategy or DEFAULT_STRATEGY, problem


async def asolve(
    prompt: str,
    budget: BudgetLike = "rollouts=8",
    *,
    strategy: str | None = None,
    backend: Generator | str | None = None,
    verifier: Verifier | str | None = DEFAULT,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    tests: TestsLike = None,
    entry_point: str | None = None,
    **options: Any,
) -> Result:
    """Async ``solve``; see there. Use this from inside a running event loop."""
    from ttscale.strategies import make_strategy

    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt must be a non-empty string, got {describe(prompt)}")
    parsed = Budget.parse(budget)
    strategy, problem = code_request(
        prompt, system_prompt, strategy=strategy, tests=tests, entry_point=entry_point
    )
    runner = make_strategy(strategy, **options)  # a bad strategy fails before an engine loads
    gen, owned = _resolve_backend(backend)
    if isinstance(verifier, str) and verifier == DEFAULT:
        verifier = None
        if strategy == "best_of_n":  # the embedded model's measured default (if any)
            verifier, defaults = default_verifier_for(gen)
            if verifier is not None and defaults:
                runner = make_strategy(strategy, **{**defaults, **options})
    try:
        return await runner.run(problem, gen, verifier, parsed)
    finally:
        if owned:
            await gen.close()


def solve(
    prompt: str,
    budget: BudgetLike = "rollouts=8",
    *,
    strategy: str | None = None,
    backend: Generator | str | None = None,
    verifier: Verifier | str | None = DEFAULT,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    tests: TestsLike = None,
    entry_point: str | None = None,
    **options: Any,
) -> Result:
    """Spend ``budget`` on ``strategy`` to answer ``prompt``.

    Args:
        prompt: The question.
        budget: Caps in tokens / rollouts / flops / seconds: ``"tokens=20000,seconds=60"``,
            an int (tokens), a dict, or a ``Budget``.
        strategy: A name in ``ttscale.strategies.STRATEGIES``; ``None``: ``"best_of_n"``,
            or ``"code"`` when ``tests`` or ``entry_point`` are given.
        backend: A ``Generator`` instance (reused, not closed), a backend name, or ``None``
            for the embedded model on vLLM (transformers where vLLM is absent). ``None``,
            ``"auto"``, ``"vllm"`` and ``"hf"`` use one engine per process, loaded by the first
            call (~20-30 s on CPU) and reused (``default_engine``; ``close_default_engines()``
            releases it); other names build a backend for this call only.
        verifier: A step/outcome scorer (enables weighted selection), ``None`` for none, or
            unset: ``best_of_n`` on the model a default verifier was measured for uses it
            (``ttscale/data/default_verifier.json``; see the README's Verifiers section),
            everything else runs without one.
        system_prompt: System message; ``None`` omits it.
        tests: Code: public tests the candidate programs run against in the sandbox, as
            ``PublicTest`` values or strings: ``"add(2, 3) == 5"``, ``"assert add(2, 3) ==
            5"`` or doctest text ``">>> add(2, 3)\n5"`` (at most 64; see
            ``ttscale.verifiers.test_specs``). ``result.answer`` is then the chosen
            program and ``result.extras["tests"]`` its outcome per test.
        entry_point: Code: the function to write; default: the function the tests call,
            else the prompt's last ``def``.
        **options: Strategy hyper-parameters (e.g. ``n=16, max_tokens=512``).

    Returns:
        ``Result`` with the answer, every candidate, a trace and the ledger.

    Raises:
        ConfigError: Empty prompt, malformed budget, unknown strategy/backend/option, a bad
            test, or tests with a strategy other than ``"code"``.
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
            tests=tests,
            entry_point=entry_point,
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
    from ttscale.backends.batching import CoalescingGenerator
    from ttscale.strategies.allocation.batch import run_batch

    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ConfigError(f"prompts must be a list of strings, got {describe(prompts)}")
    parsed = Budget.parse(budget)
    gen, owned = _resolve_backend(backend)
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

    Every prompt is probed, then what the probes left is split by expected accuracy gain per eFLOP
    (``ttscale.strategies.allocation``): easy prompts stop after the probe, hopeless ones are
    capped, the rest get the policy's strategy at the level their share buys. All engine calls go
    through one ``CoalescingGenerator`` around ``backend``, so concurrent prompts share engine
    batches. Summed over the results' ledgers, tokens, rollouts and eFLOPs never exceed the shared
    caps; ``seconds`` is one deadline for the whole batch.

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
