"""The FastAPI app behind ``ttscale serve``: OpenAI chat completions backed by ``asolve``.

Request flow: body-size limit (413) -> auth (401) -> schema validation (422) -> plan: model
alias and ``extra_body`` give strategy, options, budget and (code) public tests and entry
point, the tests read and checked (400 naming the test), the budget checked against the
operator's caps (a unit left uncapped gets the cap; asking for more is a 400, never silently
clamped) -> admission gate (429 when the queue is full) -> ``asolve`` under the request
timeout (504) -> OpenAI response with the ledger in ``usage.ttscale_ledger``.
Every error is OpenAI's JSON shape ``{"error": {"message", "type", "code", "param"}}``;
the server stays up whatever one request does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from ttscale.api import asolve
from ttscale.budget import Budget
from ttscale.errors import ConfigError
from ttscale.protocols import Generator, Verifier
from ttscale.server._gate import AdmissionGate
from ttscale.server.errors import (
    APIError,
    BodyLimit,
    CatchAll,
    install_error_handlers,
    timeout_error,
)
from ttscale.server.plan import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_BUDGET,
    MODEL_PREFIX,
    Plan,
    ServerConfig,
    cap_budget,
    plan_request,
)
from ttscale.server.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ModelCard,
    ModelList,
    ResponseMessage,
    content,
    jsonable,
    summary,
    usage,
)
from ttscale.server.stream import stream_completion
from ttscale.strategies import STRATEGIES
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Result

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    generator: Generator,
    *,
    verifier: Verifier | None = None,
    api_key: str | None = None,
    max_budget: Budget | str | dict[str, Any] = DEFAULT_MAX_BUDGET,
    default_budget: Budget | str | dict[str, Any] = DEFAULT_BUDGET,
    default_strategy: str = "best_of_n",
    max_concurrency: int = 4,
    max_queue: int = 64,
    timeout_s: float = 300.0,
    max_body_bytes: int = 1 << 20,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> FastAPI:
    """Build the OpenAI-compatible app around one shared ``generator``.

    Args:
        generator: The engine every request runs on (owned by the caller; not closed).
        verifier: Optional verifier passed to every strategy run.
        api_key: Required bearer token on ``/v1/*``; ``None`` = no auth.
        max_budget: Per-request caps; asking for more is a 400 (see ``cap_budget``).
        default_budget: Budget when the request names none.
        default_strategy: Strategy of the bare ``ttscale`` model alias.
        max_concurrency: Requests solved at once.
        max_queue: Requests waiting for a slot before new ones get 429.
        timeout_s: Per-request limit, queue wait included (504). Keep
            ``max_budget``'s seconds below it so strategies stop with an answer first.
        max_body_bytes: Larger bodies get 413.
        system_prompt: Default system prompt (a request's system message replaces it).

    Raises:
        ConfigError: A setting is invalid (the message names it).
    """
    try:
        cfg = ServerConfig(
            api_key=api_key,
            max_budget=max_budget,
            default_budget=default_budget,
            default_strategy=default_strategy,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            timeout_s=timeout_s,
            max_body_bytes=max_body_bytes,
            system_prompt=system_prompt,
        )
        cap_budget(cfg.default_budget, cfg.max_budget)
    except APIError as exc:
        raise ConfigError(f"default_budget does not fit max_budget: {exc.message}") from None
    except ValueError as exc:
        raise ConfigError(f"invalid server setting: {exc}") from None
    seconds_cap = cfg.max_budget.seconds
    if seconds_cap is None or seconds_cap >= cfg.timeout_s:
        log.warning(
            "max_budget seconds=%s is not below timeout_s=%g: long searches end in 504 instead "
            "of stopping with an answer; set max_budget seconds below the timeout",
            seconds_cap,
            cfg.timeout_s,
        )
    gate = AdmissionGate(cfg.max_concurrency, cfg.max_queue)

    app = FastAPI(title="ttscale", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.config, app.state.gate, app.state.generator = cfg, gate, generator
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    app.add_middleware(CatchAll)  # added last = outermost of ours
    install_error_handlers(app)

    def check_key(request: Request) -> None:
        if cfg.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), cfg.api_key.encode()
        ):
            raise APIError(
                401,
                "missing or wrong API key; send 'Authorization: Bearer <key>' "
                "(the openai client's api_key=...)",
                code="invalid_api_key",
            )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "backend": getattr(generator, "name", type(generator).__name__),
            "running": gate.running,
            "queued": gate.waiting,
            "max_concurrency": gate.max_concurrency,
            "max_queue": gate.max_queue,
        }

    @v1.get("/models")
    async def models() -> dict[str, Any]:
        cards = [_card(MODEL_PREFIX, cfg.default_strategy)]
        cards += [_card(f"{MODEL_PREFIX}/{name}", name) for name in STRATEGIES]
        return ModelList(data=cards).model_dump()

    @v1.post("/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> Response:
        arrived = time.perf_counter()
        plan = plan_request(body, cfg)
        if body.stream:
            gate.check()  # a full queue is a real 429, before any byte is streamed
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = stream_completion(
                plan,
                solve=_solve,
                generator=generator,
                gate=gate,
                timeout_s=cfg.timeout_s,
                arrived=arrived,
                include_usage=include_usage,
            )
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        timer = asyncio.timeout(cfg.timeout_s)
        queued_at = solved_at = None
        try:
            async with timer:
                async with gate.slot():
                    queued_at = time.perf_counter()
                    result = await _solve(plan, generator)
                    solved_at = time.perf_counter()
        except TimeoutError:
            if not timer.expired():
                raise
            raise timeout_error(cfg.timeout_s, queued_at is not None) from None
        text, finish = content(result)
        completion = ChatCompletion(
            model=plan.model,
            choices=[Choice(message=ResponseMessage(content=text), finish_reason=finish)],
            usage=usage(result),
            ttscale=summary(result),
        )
        queue_ms = (queued_at - arrived) * 1e3
        solve_ms = (solved_at - queued_at) * 1e3
        return Response(
            completion.model_dump_json(),
            media_type="application/json",
            headers={"Server-Timing": f"queue;dur={queue_ms:.3f}, solve;dur={solve_ms:.3f}"},
        )

    async def _solve(plan: Plan, gen: Generator) -> Result:
        return await asolve(
            plan.problem.prompt,
            plan.budget,
            strategy=plan.strategy,
            backend=gen,
            verifier=verifier,
            system_prompt=plan.problem.system_prompt,
            tests=plan.problem.tests or None,
            entry_point=plan.problem.entry_point,
            **plan.options,
        )

    app.include_router(v1)
    return app


def _card(model_id: str, strategy: str) -> ModelCard:
    cls = STRATEGIES[strategy]
    options = {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }
    doc = (cls.__doc__ or "").strip().splitlines()
    return ModelCard(
        id=model_id,
        ttscale={
            "strategy": strategy,
            "options": jsonable(options),
            "description": doc[0] if doc else "",
        },
    )
