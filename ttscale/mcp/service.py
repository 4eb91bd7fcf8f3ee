"""What the MCP tools do, independent of the MCP SDK.

A call is planned exactly as ``ttscale serve`` plans a chat request (``plan_request``: the
same strategy and option checks, the same operator caps via ``cap_budget``, the same error
messages), then run on the one engine of the process, shared by concurrent calls through a
``CoalescingGenerator``. The engine may load in the background (``SolveService.deferred``)
so that a client's handshake and tool listing do not wait ~30 s for vLLM; a call that
arrives first waits for it. While it runs, the strategy's engine calls are observed with
``ttscale.server.stream.Observed`` (the mechanism behind ``serve``'s streamed progress) and
reported through the caller's progress callback. Cancelling the call cancels the search: no
engine call is started for it afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from ttscale.api import asolve, asolve_batch
from ttscale.backends import CoalescingGenerator
from ttscale.budget import Budget
from ttscale.errors import ConfigError, TTScaleError
from ttscale.mcp.schemas import BatchOutput, SolveOutput, StrategiesOutput, strategy_catalog
from ttscale.protocols import Generator
from ttscale.server import MODEL_PREFIX, APIError, ServerConfig, cap_budget, plan_request
from ttscale.server.errors import from_ttscale_error, timeout_error
from ttscale.server.plan import Plan
from ttscale.server.schemas import ChatCompletionRequest, ChatMessage
from ttscale.server.stream import Observed

__all__ = ["ProgressFn", "SolveService", "ToolFailure", "progress_message"]

log = logging.getLogger(__name__)

T = TypeVar("T")

ProgressFn = Callable[[float, float | None, str], Awaitable[None]]
"""``(progress, total, message)``: MCP's progress notification, e.g. ``ctx.report_progress``."""

_CANCEL_GRACE_S = 30.0
"""How long a cancelled call waits for its search to unwind (it stops at once in practice:
the strategy is awaiting an engine call, and that await is what gets cancelled)."""


class ToolFailure(Exception):
    """A call that cannot be answered; the message names the fix (sent as a tool error)."""


@dataclass
class Counters:
    """What the service has done; read by ``/health`` and by tests."""

    running: int = 0
    """Calls solving now (at most ``max_concurrency``)."""
    completed: int = 0
    failed: int = 0
    """Calls answered with a tool error (refused up front, engine failure, timeout)."""
    cancelled: int = 0
    """Searches stopped before they finished: cancelled by the client, or timed out."""


def progress_message(event: dict[str, Any], *, with_leader: bool = True) -> str:
    """One progress line from an ``Observed`` event: samples, tokens and the current leader."""
    text = f"{event['samples']} samples, {event['generated_tokens']} tokens"
    if with_leader and event.get("leader") is not None:
        text += f"; leader {event['leader']} ({event['leader_votes']} votes)"
    return text


class SolveService:
    """The three tools over one shared engine.

    Args:
        generator: The engine (owned by the caller, who closes it). It is wrapped in a
            ``CoalescingGenerator`` unless it is one already, so concurrent calls share
            engine batches. ``SolveService.deferred`` loads one in the background instead.
        config: Operator settings, the same model ``ttscale serve`` uses: caps
            (``max_budget``), defaults, ``max_concurrency`` (calls solved at once; more
            wait) and ``timeout_s`` (per call, waiting included). ``max_queue`` and
            ``max_body_bytes`` are HTTP-server settings and are not used here.

    Raises:
        ConfigError: ``default_budget`` does not fit ``max_budget``.
    """

    def __init__(self, generator: Generator | None, config: ServerConfig) -> None:
        try:
            cap_budget(config.default_budget, config.max_budget)
        except APIError as exc:
            raise ConfigError(
                f"default budget does not fit the max budget: {exc.message}"
            ) from None
        self.config = config
        self.counters = Counters()
        self._slots = anyio.Semaphore(config.max_concurrency)
        self._engine: Generator | None = None
        self._owned: Generator | None = None
        self._load_error: str | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._load: Callable[[], Generator] | None = None
        self._loader: threading.Thread | None = None
        if generator is not None:
            self._set_engine(generator)

    @classmethod
    def deferred(cls, load: Callable[[], Generator], config: ServerConfig) -> SolveService:
        """A service whose engine ``load()`` builds in a background thread once ``start()``
        is called (the server calls it when it starts serving).

        Calls wait for the engine (a progress note says so); if loading fails, every call
        is a tool error with the reason. The service owns this engine: ``close()`` releases
        it.
        """
        service = cls(None, config)
        service._load = load
        return service

    def start(self) -> None:
        """Start loading a deferred engine; idempotent, and a no-op for a given engine."""
        with self._lock:
            if self._load is None or self._loader is not None:
                return
            self._loader = threading.Thread(
                target=self._load_engine, args=(self._load,), name="ttscale-engine", daemon=True
            )
            self._loader.start()

    def _load_engine(self, load: Callable[[], Generator]) -> None:
        started = time.perf_counter()
        try:
            generator = load()
        except Exception as exc:  # reported to every call; the server keeps answering
            log.error(
                "the engine failed to load: %s", exc, exc_info=not isinstance(exc, TTScaleError)
            )
            self._load_error = str(exc)
            self._ready.set()
            return
        self._owned = generator
        self._set_engine(generator)
        log.info("engine %s ready in %.1f s", self.backend_name, time.perf_counter() - started)

    def _set_engine(self, generator: Generator) -> None:
        self._engine = (
            generator
            if isinstance(generator, CoalescingGenerator)
            else CoalescingGenerator(generator)
        )
        self._ready.set()

    @property
    def engine(self) -> Generator | None:
        """The shared (coalescing) engine; ``None`` while it loads or if loading failed."""
        return self._engine

    @property
    def engine_state(self) -> str:
        if self._engine is not None:
            return "ready"
        return f"failed: {self._load_error}" if self._load_error else "loading"

    @property
    def backend_name(self) -> str:
        if self._engine is None:
            return self.engine_state
        return str(getattr(self._engine, "name", type(self._engine).__name__))

    async def close(self) -> None:
        """Release the engine if this service loaded it (``deferred``); idempotent."""
        owned, self._owned = self._owned, None
        if owned is not None:
            await owned.close()

    async def _wait_for_engine(self, progress: ProgressFn | None, total: float | None) -> Generator:
        if not self._ready.is_set():
            if progress is not None:
                await progress(0.0, total, "loading the engine (once per server start)")
            while not self._ready.is_set():
                await anyio.sleep(0.1)
        if self._engine is None:
            raise ToolFailure(
                f"the engine failed to load: {self._load_error}; fix the cause (see the "
                "server's log) and restart the server"
            )
        return self._engine

    # -- tools -----------------------------------------------------------------------------
    def strategies(self) -> StrategiesOutput:
        cfg = self.config
        return StrategiesOutput(
            default_strategy=cfg.default_strategy,
            default_budget=str(cap_budget(cfg.default_budget, cfg.max_budget)),
            max_budget=str(cfg.max_budget),
            strategies=strategy_catalog(),
        )

    def plan(
        self,
        question: str,
        budget: str | int | dict[str, float] | None = None,
        strategy: str | None = None,
        options: dict[str, Any] | None = None,
        tests: list[str] | None = None,
        entry_point: str | None = None,
    ) -> Plan:
        """Validate a ``solve`` call before any compute, as ``serve`` validates a request.

        Raises:
            ToolFailure: Unknown strategy or option, malformed budget, a budget over the
                server's caps, an empty question, a bad test, tests with a strategy other
                than ``code``; the message names the fix.
        """
        try:
            request = ChatCompletionRequest(
                model=MODEL_PREFIX,
                messages=[ChatMessage(role="user", content=question)],
                strategy=strategy,
                budget=budget,
                options=options or {},
                tests=tests,
                entry_point=entry_point,
            )
            return plan_request(request, self.config)
        except APIError as exc:
            hint = ""
            if exc.param == "strategy" and exc.message.startswith("unknown strategy"):
                hint = " (the strategies tool lists them)"
            raise ToolFailure(exc.message + hint) from None
        except ValueError as exc:  # pydantic validation of the arguments
            raise ToolFailure(f"invalid arguments: {exc}") from None

    async def solve(
        self,
        question: str,
        budget: str | int | dict[str, float] | None = None,
        strategy: str | None = None,
        options: dict[str, Any] | None = None,
        progress: ProgressFn | None = None,
        tests: list[str] | None = None,
        entry_point: str | None = None,
    ) -> SolveOutput:
        """Answer one question (with ``tests``/``entry_point``: write a function, strategy
        ``code``); see ``plan`` for what is refused up front.

        Raises:
            ToolFailure: A refused call, an engine failure or the timeout (message names
                the fix).
        """
        plan = self.plan(question, budget, strategy, options, tests, entry_point)

        def work(gen: Generator) -> Awaitable[Any]:
            return asolve(
                plan.problem.prompt,
                plan.budget,
                strategy=plan.strategy,
                backend=gen,
                system_prompt=plan.problem.system_prompt,
                tests=plan.problem.tests or None,
                entry_point=plan.problem.entry_point,
                **plan.options,
            )

        result = await self._run(
            work, progress, total=plan.budget.rollouts, label=f"solve {question[:60]!r}"
        )
        return SolveOutput.of(result, plan.strategy, plan.budget)

    async def solve_batch(
        self,
        questions: list[str],
        budget: str | int | dict[str, float],
        progress: ProgressFn | None = None,
    ) -> BatchOutput:
        """Answer many questions under ONE shared budget (``asolve_batch``: strategy
        ``auto`` per question, the budget split by expected gain). The server's caps
        apply to the shared budget: a batch is one call.

        Raises:
            ToolFailure: No questions, an empty question, a malformed or over-cap budget, an
                engine failure or the timeout.
        """
        if not questions:
            raise ToolFailure("questions is empty; pass a list of one or more questions")
        for i, q in enumerate(questions):
            if not q.strip():
                raise ToolFailure(f"questions[{i}] is empty; every question needs text")
        try:
            capped = cap_budget(Budget.parse(budget), self.config.max_budget)
        except ConfigError as exc:
            raise ToolFailure(str(exc)) from None
        except APIError as exc:
            raise ToolFailure(exc.message) from None
        started = time.perf_counter()

        def work(gen: Generator) -> Awaitable[Any]:
            return asolve_batch(
                questions, capped, backend=gen, system_prompt=self.config.system_prompt
            )

        results = await self._run(
            work,
            progress,
            total=capped.rollouts,
            label=f"solve_batch of {len(questions)} questions",
            with_leader=False,
        )
        return BatchOutput.of(questions, results, capped, time.perf_counter() - started)

    # -- running ---------------------------------------------------------------------------
    async def _run(
        self,
        work: Callable[[Generator], Awaitable[T]],
        progress: ProgressFn | None,
        *,
        total: float | None,
        label: str,
        with_leader: bool = True,
    ) -> T:
        """Run ``work`` on an observed view of the engine, forwarding progress, under the
        concurrency limit and the timeout; map failures to ``ToolFailure``."""
        cfg = self.config
        started = False
        try:
            engine = await self._wait_for_engine(progress, total)  # once; not in the timeout
            with anyio.fail_after(cfg.timeout_s):
                async with self._slots:
                    started = True
                    self.counters.running += 1
                    try:
                        result = await self._observe(
                            engine, work, progress, total, label, with_leader
                        )
                    finally:
                        self.counters.running -= 1
        except TimeoutError:
            self.counters.failed += 1
            raise ToolFailure(timeout_error(cfg.timeout_s, started).message) from None
        except TTScaleError as exc:
            self.counters.failed += 1
            raise ToolFailure(from_ttscale_error(exc).message) from None
        except ToolFailure:
            self.counters.failed += 1
            raise
        except Exception:  # a bug: the SDK reports it as a tool error and logs the traceback
            self.counters.failed += 1
            raise
        self.counters.completed += 1
        return result

    async def _observe(
        self,
        engine: Generator,
        work: Callable[[Generator], Awaitable[T]],
        progress: ProgressFn | None,
        total: float | None,
        label: str,
        with_leader: bool,
    ) -> T:
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        observed = Observed(engine, events.put_nowait)
        task = asyncio.ensure_future(work(observed))  # type: ignore[arg-type]
        task.add_done_callback(lambda _: events.put_nowait(None))
        last: dict[str, Any] = {"engine_calls": 0, "samples": 0}
        cancelled = False
        try:
            while (event := await events.get()) is not None:
                last = event
                if progress is not None:
                    message = progress_message(event, with_leader=with_leader)
                    await progress(float(event["samples"]), total, message)
            return task.result()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if not task.done():
                task.cancel()
                # Let the search unwind before this call ends, so "cancelled" means stopped.
                with anyio.move_on_after(_CANCEL_GRACE_S, shield=True):
                    await asyncio.wait([task])
            if cancelled:
                self.counters.cancelled += 1
                log.info(
                    "%s cancelled after %d engine calls (%d samples); search stopped",
                    label,
                    last["engine_calls"],
                    last["samples"],
                )
