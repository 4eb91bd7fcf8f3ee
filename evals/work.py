"""One eval row's work, shared by the local and the Ray executor: what a row is
(``StrategyConfig``, ``WorkItem``), solving and grading it (``solve_item``), the verifier and
engine sharing it runs with, and the signal drain every long row-writing loop uses.

A code problem (``ttscale.evals.code.CodeProblem``) reaches its strategy as a ``Problem``
with the prompt, entry point and public tests only; the selected program (``Result.answer``)
and every candidate's program are graded on the hidden tests in the grading sandbox
(``agrade_programs``), or, on a replay backend, by the grade the pool stored for the same
program (the same grading, run once when the pool was drawn)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ttscale.budget import Budget, Ledger
from ttscale.errors import BudgetError, ContextLengthError
from ttscale.evals.code import CodeProblem, agrade_programs
from ttscale.evals.datasets import EvalProblem
from ttscale.evals.store import row_key
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Problem, Result

__all__ = [
    "GRADE_TIMEOUT",
    "ROW_ERRORS",
    "Drain",
    "OnRow",
    "RunStopped",
    "StrategyConfig",
    "WorkItem",
    "coalesce",
    "make_verifier",
    "solve_item",
]

T = TypeVar("T")

ROW_ERRORS = (BudgetError, ContextLengthError)
"""Per-problem outcomes recorded as a (wrong) row; any other error stops the run."""
GRADE_TIMEOUT = 10.0
"""CPU seconds a code problem's hidden tests may take per program (wall: twice that)."""


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """A strategy under a label: ``greedy`` may be ``best_of_n`` with ``n=1, temperature=0``."""

    label: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    use_verifier: bool = True
    """``False`` runs this strategy without the run's verifier (``-o greedy.verifier=false``)."""

    def options_for(self, seed: int) -> dict[str, Any]:
        """Options with the row's seed as the strategy's ``seed`` (if it has one)."""
        from ttscale.strategies import STRATEGIES

        opts = dict(self.options)
        if any(f.name == "seed" for f in dataclasses.fields(STRATEGIES[self.name])):
            opts["seed"] = seed
        return opts

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "options": dict(self.options)}
        return out if self.use_verifier else {**out, "verifier": False}


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One row to compute."""

    problem: EvalProblem | CodeProblem
    config: StrategyConfig
    budget: str
    seed: int

    @property
    def key(self) -> str:
        return row_key(self.problem.id, self.config.label, self.budget, self.seed)


# -- solving one row -------------------------------------------------------------------------


async def solve_item(
    item: WorkItem,
    generator: Any,
    verifier: Any = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    *,
    grade_timeout: float = GRADE_TIMEOUT,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Solve and grade one row. Returns ``(row, trace)``; the store adds ``trace`` path.

    Budget and context-length errors become a wrong row carrying the error (the budget
    could not pay for a step; the prompt does not fit); other errors propagate. A code
    problem is graded on its hidden tests (``grade_timeout`` CPU seconds per program).
    """
    if isinstance(item.problem, CodeProblem):
        return await _solve_code_item(item, generator, verifier, system_prompt, grade_timeout)
    from ttscale.api import asolve
    from ttscale.verifiers.answers import grade

    gold = item.problem.answer
    t0 = time.perf_counter()
    error: str | None = None
    try:
        result = await asolve(
            item.problem.problem,
            item.budget,
            strategy=item.config.name,
            backend=generator,
            verifier=verifier if item.config.use_verifier else None,
            system_prompt=system_prompt,
            **item.config.options_for(item.seed),
        )
    except ROW_ERRORS as exc:
        result = exc.partial
        error = f"{type(exc).__name__}: {exc}"
    if result is not None:
        answer, ledger = result.answer, result.ledger.to_dict()
        candidates = [
            {
                "answer": c.answer,
                "correct": c.answer is not None and grade(c.answer, gold),
                "score": c.score,
                "tokens": c.tokens,
                "finish_reason": c.finish_reason,
            }
            for c in result.candidates
        ]
        trace = result.to_dict()
        trace.pop("ledger")
    else:
        answer, candidates, trace = None, [], {}
        empty = Ledger(Budget.parse(item.budget))
        empty.engine = generator.profile()
        ledger = empty.finish().to_dict()
    row = {
        "key": item.key,
        "problem_id": item.problem.id,
        "level": item.problem.level,
        "subject": item.problem.subject,
        "strategy": item.config.label,
        "strategy_name": item.config.name,
        "options": dict(item.config.options),
        "budget": item.budget,
        "seed": item.seed,
        "answer": answer,
        "gold": gold,
        "correct": answer is not None and grade(answer, gold),
        "candidates": candidates,
        "ledger": ledger,
        "error": error,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    trace = {"key": item.key, "problem": item.problem.problem, "gold": gold, **trace}
    return row, trace


async def _solve_code_item(
    item: WorkItem,
    generator: Any,
    verifier: Any,
    system_prompt: str | None,
    grade_timeout: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A code row: the strategy sees the public tests only; the programs are graded on the
    hidden ones (see the module doc)."""
    from ttscale.strategies import make_strategy

    cp = item.problem
    assert isinstance(cp, CodeProblem)
    problem = Problem(
        cp.prompt, system_prompt, id=cp.id, entry_point=cp.entry_point, tests=cp.public_tests
    )
    runner = make_strategy(item.config.name, **item.config.options_for(item.seed))
    t0 = time.perf_counter()
    error: str | None = None
    result: Result | None
    try:
        result = await runner.run(
            problem,
            generator,
            verifier if item.config.use_verifier else None,
            Budget.parse(item.budget),
        )
    except ROW_ERRORS as exc:
        result = exc.partial
        error = f"{type(exc).__name__}: {exc}"
    answer = result.answer if result is not None else None
    programs = [
        c.program if c.program is not None else c.answer
        for c in (result.candidates if result is not None else [])
    ]
    grades = await _grade_code(cp, [answer, *programs], generator, grade_timeout)
    extras = result.extras if result is not None else {}
    if result is not None:
        ledger = result.ledger.to_dict()
        candidates = [
            {
                "answer": _program_id(prog),
                "correct": grades[prog] if prog is not None else False,
                "score": c.score,
                "tokens": c.tokens,
                "finish_reason": c.finish_reason,
            }
            for c, prog in zip(result.candidates, programs, strict=True)
        ]
        trace = result.to_dict()
        trace.pop("ledger")
    else:
        candidates, trace = [], {}
        empty = Ledger(Budget.parse(item.budget))
        empty.engine = generator.profile()
        ledger = empty.finish().to_dict()
    row = {
        "key": item.key,
        "problem_id": cp.id,
        "level": None,
        "subject": None,
        "domain": "code",
        "strategy": item.config.label,
        "strategy_name": item.config.name,
        "options": dict(item.config.options),
        "budget": item.budget,
        "seed": item.seed,
        "answer": answer,
        "gold": None,
        "correct": answer is not None and grades[answer],
        "public_passed": extras.get("passed_public"),
        "public_tests": extras.get("n_public", len(cp.public_tests)),
        "pass_at_n": any(c["correct"] for c in candidates),
        "selection": extras.get("selection"),
        "candidates": candidates,
        "ledger": ledger,
        "error": error,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    trace = {"key": item.key, "problem": cp.prompt, "entry_point": cp.entry_point, **trace}
    return row, trace


def _program_id(program: str | None) -> str | None:
    """A short stand-in for a program in a row (the trace keeps the program itself)."""
    if program is None:
        return None
    return "sha256:" + hashlib.sha256(program.encode("utf-8", "surrogatepass")).hexdigest()[:16]


async def _grade_code(
    problem: CodeProblem, programs: list[str | None], generator: Any, timeout: float
) -> dict[str, bool]:
    """Hidden-test verdict of each distinct program: the pool's stored grade on replay,
    else one grading-sandbox run each, all at once."""
    stored = getattr(generator, "stored_grade", None)
    out: dict[str, bool] = {}
    todo: list[str] = []
    for prog in dict.fromkeys(p for p in programs if p is not None):
        known = stored(problem.id, prog) if stored is not None else None
        if known is None:
            todo.append(prog)
        else:
            out[prog] = known
    if todo:
        verdicts = await agrade_programs([problem] * len(todo), todo, timeout=timeout)
        out.update({prog: v.passed for prog, v in zip(todo, verdicts, strict=True)})
    return out


# -- executors -------------------------------------------------------------------------------

OnRow = Callable[[WorkItem, dict[str, Any], dict[str, Any]], None]


def coalesce(generator: Any) -> Any:
    """Wrap a backend so concurrent problems' engine calls merge into one batch."""
    from ttscale.backends.batching import CoalescingGenerator

    return (
        generator if isinstance(generator, CoalescingGenerator) else CoalescingGenerator(generator)
    )


class RunStopped(Exception):
    """A run drained after SIGINT/SIGTERM: every row in flight was written, none was started
    after the signal. Rerun the same command to resume."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Drain:
    """Runs a long row-writing loop's rows at most ``concurrency`` at a time, and drains it on
    a signal: after the first SIGINT/SIGTERM no new row starts and the ones in flight finish
    (their compute is not thrown away); a second signal stops at once (rows already written
    are safe either way). Handlers are installed only where Python allows (the main
    thread; POSIX for the asyncio form). Used by ``run_local``, ``ttscale calibrate --run``
    and the allocator benchmark in the asyncio form, and by the Ray executor's synchronous
    driver loop in the plain form (which checks ``signum`` itself)::

        async with Drain(concurrency) as drain:  # raises RunStopped on leaving, if drained
            await asyncio.gather(*(drain.gated(partial(solve, i)) for i in items))

        with Drain() as drain:
            while work and drain.signum is None: ...
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, concurrency: int = 1) -> None:
        self.signum: int | None = None
        self.in_flight = 0
        self._gate = asyncio.Semaphore(max(1, concurrency))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}  # signal -> handler it replaced (plain form)

    def __enter__(self) -> Drain:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, lambda s, _f: self._on_signal(s))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.remove()
        if exc_type is None and self.signum is not None:
            raise RunStopped(self.signum)

    async def __aenter__(self) -> Drain:
        self.install()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.__exit__(exc_type)

    async def gated(self, fn: Callable[[], Awaitable[T]]) -> T | None:
        """``await fn()`` once a slot is free, or ``None`` if a signal came first."""
        async with self._gate:
            if self.signum is not None:
                return None
            self.in_flight += 1
            try:
                return await fn()
            finally:
                self.in_flight -= 1

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for sig in self.SIGNALS:
                loop.add_signal_handler(sig, self._on_signal, sig)
            self._loop = loop
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def remove(self) -> None:
        if self._loop is not None:
            for sig in self.SIGNALS:
                self._loop.remove_signal_handler(sig)
            self._loop = None
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _on_signal(self, sig: int) -> None:
        if self.signum is not None:  # second signal: default behaviour, now
            self.remove()
            signal.raise_signal(sig)
            return
        self.signum = sig
        sys.stderr.write(
            f"\n{signal.Signals(sig).name}: finishing the {self.in_flight} row(s) in flight, "
            f"starting no new ones (signal again to stop now; rerun to resume)\n"
        )


def make_verifier(
    name: str | None, generator: Any, options: Mapping[str, Any] | None = None
) -> Any:
    """Verifier by registry name (``llm_judge`` judges with ``generator``) or PRM path."""
    if name is None:
        return None
    from ttscale.verifiers.registry import load_verifier

    opts = dict(options or {})
    if name == "llm_judge" and "model" not in opts:  # model=: the judge loads its own engine
        opts.setdefault("generator", generator)
    return load_verifier(name, **opts)
