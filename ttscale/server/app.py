"""The FastAPI app behind ``ttscale serve``: OpenAI chat completions backed by ``asolve``.

Request flow: auth -> body-size limit -> schema validation (422) -> plan (model alias and
``extra_body`` -> strategy, options, budget clamped by nothing: a budget above the
operator's cap is a 400) -> admission gate (429 when the queue is full) -> ``asolve`` under
the request timeout (504) -> OpenAI response with the ledger in ``usage.ttscale_ledger``.
Every error is OpenAI's JSON shape ``{"error": {"message", "type", "code", "param"}}``;
the server stays up whatever one request does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_jsonable_python
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttscale.api import asolve
from ttscale.budget import UNITS, Budget
from ttscale.errors import (
    BackendError,
    BackendUnavailable,
    BudgetError,
    ConfigError,
    ContextLengthError,
    TTScaleError,
)
from ttscale.integrations import problem_from_chat, representative, summarize
from ttscale.protocols import Generator, Verifier
from ttscale.server._gate import AdmissionGate, QueueFull
from ttscale.server.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
    completion_id,
)
from ttscale.strategies import STRATEGIES, make_strategy
from ttscale.types import (
    DEFAULT_SYSTEM_PROMPT,
    GenerationOutput,
    GenerationRequest,
    Problem,
    Result,
)
from ttscale.verifiers.answers import extract_answer

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_BUDGET",
    "MODEL_PREFIX",
    "APIError",
    "ServerConfig",
    "cap_budget",
    "create_app",
    "plan_request",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BUDGET = "tokens=65536,rollouts=64,seconds=120"
DEFAULT_BUDGET = "rollouts=8"

MODEL_PREFIX = "ttscale"
"""Model aliases: ``ttscale``, ``ttscale/<strategy>``, ``ttscale/<strategy>/<budget>``."""

# OpenAI sampling fields forwarded to the strategy option of the same meaning, if it has one.
_FORWARDED = (
    ("max_tokens", "max_tokens"),
    ("max_completion_tokens", "max_tokens"),
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("seed", "seed"),
)


class ServerConfig(BaseModel):
    """Operator settings; validated once when the app is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = None
    """Bearer token required on ``/v1/*``; ``None`` disables auth (``/health`` is open)."""
    max_budget: Budget = Budget.parse(DEFAULT_MAX_BUDGET)
    """Per-request caps. A request asking for more in any unit gets a 400; a unit the
    request leaves uncapped is capped at this value."""
    default_budget: Budget = Budget.parse(DEFAULT_BUDGET)
    """Budget of requests that name none (then capped by ``max_budget``)."""
    default_strategy: str = "best_of_n"
    max_concurrency: int = Field(default=4, ge=1)
    """Requests solved at once (the engine batches within a request, not across)."""
    max_queue: int = Field(default=64, ge=0)
    """Requests allowed to wait for a slot; beyond that, 429."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Per-request limit, queue wait included; then 504."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    """Larger request bodies get a 413."""
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    """Used when a request has no system message."""

    @field_validator("max_budget", "default_budget", mode="before")
    @classmethod
    def _parse_budget(cls, value: Any) -> Budget:
        return Budget.parse(value)

    @field_validator("default_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {', '.join(STRATEGIES)}")
        return value


class APIError(Exception):
    """An error answered with OpenAI's error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param, self.headers = code, param, headers

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_ttscale_error(exc: TTScaleError) -> APIError:
    """Map a library error to an HTTP status: the client's fault is 4xx, the engine's 5xx."""
    msg = str(exc)
    if isinstance(exc, ContextLengthError):
        return APIError(400, msg, code="context_length_exceeded", param="messages")
    if isinstance(exc, ConfigError):
        return APIError(400, msg, code="invalid_value")
    if isinstance(exc, BudgetError):
        return APIError(400, msg, code="budget_too_small", param="budget")
    if isinstance(exc, BackendUnavailable):
        return APIError(
            503, f"engine unavailable: {msg}", type="server_error", code="backend_unavailable"
        )
    if isinstance(exc, BackendError):
        return APIError(502, f"engine failed: {msg}", type="server_error", code="backend_error")
    return APIError(500, msg, type="server_error", code=type(exc).__name__)


# -- planning: request -> what to run -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Plan:
    model: str
    strategy: str
    budget: Budget
    options: dict[str, Any]
    problem: Problem


def cap_budget(requested: Budget, cap: Budget) -> Budget:
    """Apply the operator's caps: uncapped units get the cap; asking for more is an error.

    Raises:
        APIError: 400 naming the unit, the value asked for and the server's maximum.
    """
    fields = requested.model_dump()
    for unit in UNITS:
        limit, asked = getattr(cap, unit), fields[unit]
        if limit is None:
            continue
        if asked is None:
            fields[unit] = limit
        elif asked > limit:
            raise APIError(
                400,
                f"budget {unit}={asked:g} exceeds this server's maximum {unit}={limit:g} "
                f"(per-request caps: {cap}); ask for at most {unit}={limit:g}",
                code="budget_exceeds_cap",
                param="budget",
            )
    return Budget(**fields)


def _parse_alias(model: str) -> tuple[str | None, str | None]:
    head, _, rest = model.partition("/")
    strategy, _, budget = rest.partition("/")
    if head != MODEL_PREFIX or (rest and strategy not in STRATEGIES):
        names = ", ".join(f"{MODEL_PREFIX}/{s}" for s in STRATEGIES)
        raise APIError(
            404,
            f"model {model!r} is not served here; use {MODEL_PREFIX!r}, one of {names}, or "
            f"'{MODEL_PREFIX}/<strategy>/<budget>' (GET /v1/models lists them)",
            code="model_not_found",
            param="model",
        )
    return strategy or None, budget or None


def _text(msg: ChatMessage, index: int) -> str:
    if msg.content is None or isinstance(msg.content, str):
        return msg.content or ""
    parts = []
    for part in msg.content:
        if part.type != "text" or part.text is None:
            raise APIError(
                400,
                f"messages[{index}] has a {part.type!r} content part; only text is supported",
                param=f"messages[{index}].content",
            )
        parts.append(part.text)
    return "\n".join(parts)


def plan_request(req: ChatCompletionRequest, cfg: ServerConfig) -> Plan:
    """Resolve strategy, options, budget and problem; every client mistake is a 4xx here,
    before any compute (or any streamed byte) is spent."""
    alias_strategy, alias_budget = _parse_alias(req.model)
    if req.strategy is not None and alias_strategy not in (None, req.strategy):
        raise APIError(
            400,
            f"strategy {req.strategy!r} conflicts with model {req.model!r}; "
            f"name the strategy in one place",
            param="strategy",
        )
    strategy = req.strategy or alias_strategy or cfg.default_strategy
    if strategy not in STRATEGIES:
        raise APIError(
            400,
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}",
            param="strategy",
        )
    if req.budget is not None and alias_budget is not None:
        raise APIError(
            400,
            f"budget given both in model {req.model!r} and in 'budget'; use one",
            param="budget",
        )
    spec = req.budget if req.budget is not None else alias_budget
    try:
        asked = cfg.default_budget if spec is None else Budget.parse(spec)
    except ConfigError as exc:
        raise APIError(400, str(exc), code="invalid_value", param="budget") from None
    budget = cap_budget(asked, cfg.max_budget)
    if req.n not in (None, 1):
        raise APIError(
            400,
            f"n={req.n} is not supported: a request returns one answer; to draw more samples "
            f"set the strategy option instead (extra_body={{'options': {{'n': {req.n}}}}})",
            param="n",
        )
    if req.tools:
        raise APIError(
            400,
            "tools are not supported by ttscale serve (it returns reasoned answers, not tool "
            "calls); call it as a tool from your agent instead",
            param="tools",
        )
    options = dict(req.options)
    fields = {f.name for f in dataclasses.fields(STRATEGIES[strategy])}
    for src, dst in _FORWARDED:
        value = getattr(req, src)
        if value is not None and dst in fields:
            options.setdefault(dst, value)
    try:
        make_strategy(strategy, **options)  # validate now: a bad option is a 400, not a 500
        problem = problem_from_chat(
            [(m.role, _text(m, i)) for i, m in enumerate(req.messages)], cfg.system_prompt
        )
    except ConfigError as exc:
        raise APIError(400, str(exc), code="invalid_value") from None
    return Plan(req.model, strategy, budget, options, problem)


# -- results -> OpenAI shapes ---------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """JSON-safe copy; numpy scalars become numbers, other unknown objects their ``str``."""
    return to_jsonable_python(value, fallback=lambda v: v.item() if hasattr(v, "item") else str(v))


def summary(result: Result) -> dict[str, Any]:
    """The ``ttscale`` extension object (see ``ttscale.integrations.summarize``), JSON-safe."""
    return _jsonable(summarize(result))


def usage(result: Result) -> Usage:
    led = result.ledger
    return Usage(
        prompt_tokens=led.prompt_tokens,
        completion_tokens=led.generated_tokens,
        total_tokens=led.prompt_tokens + led.generated_tokens,
        ttscale_ledger=_jsonable(led.to_dict()),
    )


def _content(result: Result) -> tuple[str, str]:
    cand = representative(result)
    return (cand.text, cand.finish_reason) if cand is not None else ("", "stop")


def _pieces(text: str, delimiter: str) -> list[str]:
    """Split the answer into reasoning steps for streaming; joining gives ``text`` back."""
    parts = text.split(delimiter)
    return [p + delimiter for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


# -- streaming progress ----------------------------------------------------------------------
class _Observed:
    """Generator proxy that reports each engine call (for streamed progress events)."""

    def __init__(self, inner: Generator, report: Callable[[dict[str, Any]], None]) -> None:
        self._inner, self._report = inner, report
        self._calls = self._samples = self._tokens = 0
        self._votes: Counter[str] = Counter()
        self._t0 = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        outputs = await self._inner.generate(requests)
        answers = [extract_answer(c.text) for o in outputs for c in o.completions]
        self._calls += 1
        self._samples += len(answers)
        self._tokens += sum(c.num_tokens for o in outputs for c in o.completions)
        self._votes.update(a for a in answers if a is not None)
        leader = self._votes.most_common(1)
        self._report(
            {
                "event": "progress",
                "engine_calls": self._calls,
                "samples": self._samples,
                "generated_tokens": self._tokens,
                "answers": answers,
                "leader": leader[0][0] if leader else None,
                "leader_votes": leader[0][1] if leader else 0,
                "elapsed_s": round(time.perf_counter() - self._t0, 3),
            }
        )
        return outputs


def _sse(data: BaseModel | dict[str, Any]) -> str:
    """One server-sent event; ``None`` fields are left out, as OpenAI does."""
    if isinstance(data, BaseModel):
        return f"data: {data.model_dump_json(exclude_none=True)}\n\n"
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


# -- the app ---------------------------------------------------------------------------------
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
    app.add_middleware(_BodyLimit, limit=cfg.max_body_bytes)
    app.add_middleware(_CatchAll)  # added last = outermost of ours
    _install_error_handlers(app)

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
    async def chat_completions(body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        arrived = time.perf_counter()
        plan = plan_request(body, cfg)
        if body.stream:
            gate.check()  # a full queue is a real 429, before any byte is streamed
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(plan, include_usage, arrived),
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
            raise _timeout_error(cfg, queued_at is not None) from None
        text, finish = _content(result)
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
            **plan.options,
        )

    async def _stream(plan: Plan, include_usage: bool, arrived: float) -> AsyncIterator[str]:
        cid, created = completion_id(), int(time.time())
        deadline = (
            asyncio.get_running_loop().time() + cfg.timeout_s - (time.perf_counter() - arrived)
        )

        def chunk(choices: Sequence[ChunkChoice], **extra: Any) -> str:
            return _sse(
                ChatCompletionChunk(
                    id=cid, created=created, model=plan.model, choices=list(choices), **extra
                )
            )

        def remaining() -> float:
            return deadline - asyncio.get_running_loop().time()

        accepted = {"event": "accepted", "strategy": plan.strategy, "budget": str(plan.budget)}
        yield chunk([ChunkChoice(delta=Delta(role="assistant", content=""))], ttscale=accepted)
        try:
            gate.admit()
        except QueueFull as exc:
            yield _sse(_queue_full(exc).body())
            return
        try:
            await asyncio.wait_for(gate.acquire(), max(remaining(), 0))
        except TimeoutError:
            yield _sse(_timeout_error(cfg, False).body())
            return
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        task = asyncio.create_task(_solve(plan, _Observed(generator, events.put_nowait)))  # type: ignore[arg-type]
        task.add_done_callback(lambda _: events.put_nowait(None))
        try:
            yield chunk([ChunkChoice(delta=Delta(content=""))], ttscale={"event": "started"})
            while (event := await asyncio.wait_for(events.get(), max(remaining(), 0))) is not None:
                yield chunk([ChunkChoice(delta=Delta(content=""))], ttscale=event)
            result = task.result()
        except TimeoutError:
            yield _sse(_timeout_error(cfg, True).body())
            return
        except TTScaleError as exc:
            yield _sse(from_ttscale_error(exc).body())
            return
        except Exception as exc:  # the stream's boundary: report it to the client, log it here
            log.exception("stream failed")
            yield _sse(APIError(500, f"internal error: {exc}", type="server_error").body())
            return
        finally:
            task.cancel()
            gate.release()
        text, finish = _content(result)
        for piece in _pieces(text, plan.problem.step_delimiter):
            yield chunk([ChunkChoice(delta=Delta(content=piece))])
        done = {"event": "done", **summary(result), "ledger": _jsonable(result.ledger.to_dict())}
        yield chunk([ChunkChoice(delta=Delta(), finish_reason=finish)], ttscale=done)  # type: ignore[arg-type]
        if include_usage:
            yield chunk([], usage=usage(result))
        yield "data: [DONE]\n\n"

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
            "options": _jsonable(options),
            "description": doc[0] if doc else "",
        },
    )


def _queue_full(exc: QueueFull) -> APIError:
    return APIError(
        429, str(exc), type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"}
    )


def _timeout_error(cfg: ServerConfig, started: bool) -> APIError:
    where = "while solving" if started else "while waiting in the queue"
    return APIError(
        504,
        f"request timed out after {cfg.timeout_s:g}s {where}; ask for a smaller budget "
        f"(seconds below {cfg.timeout_s:g}) or have the operator raise --timeout",
        type="timeout_error",
        code="timeout",
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return _queue_full(exc).response()

    @app.exception_handler(TTScaleError)
    async def ttscale_error(_: Request, exc: TTScaleError) -> JSONResponse:
        err = from_ttscale_error(exc)
        (log.error if err.status >= 500 else log.info)("%s: %s", type(exc).__name__, exc)
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        where = f"{param}: " if param else ""
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return APIError(
            422, f"{where}{first['msg']}{more}", code="invalid_request", param=param
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(
            exc.status_code, str(exc.detail), code=f"http_{exc.status_code}", headers=exc.headers
        ).response()


class _CatchAll:
    """ASGI middleware: an unexpected exception becomes a 500 in OpenAI's shape.

    This is the server's last boundary, not a fallback: the error is logged with its
    traceback and reported to the client, and the connection stays usable (Starlette's own
    500 path re-raises, which makes uvicorn drop the keep-alive connection).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error(
                "unhandled %s on %s: %s", type(exc).__name__, scope.get("path"), exc, exc_info=exc
            )
            if started:
                raise
            await APIError(
                500,
                f"internal error ({type(exc).__name__}: {exc})",
                type="server_error",
                code="internal",
            ).response()(scope, receive, send)


class _BodyLimit:
    """ASGI middleware: 413 for bodies over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await APIError(413, self._message(int(declared)), code="request_too_large").response()(
                scope, receive, send
            )
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise StarletteHTTPException(413, self._message(seen))
            return message

        await self.app(scope, limited, send)

    def _message(self, size: int) -> str:
        return (
            f"request body of {size} bytes exceeds the server's limit of {self.limit} bytes; "
            f"send a shorter prompt or have the operator raise --max-body-bytes"
        )
