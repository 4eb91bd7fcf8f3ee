"""Errors in OpenAI's shape for ``ttscale serve``: the exception, the status mapping, the
exception handlers and two ASGI middlewares (body-size limit, last-resort 500).

Every error body is ``{"error": {"message", "type", "code", "param"}}``; the message says
what went wrong and names the fix. Client mistakes are 4xx, engine failures 5xx, and no
single request can take the server (or its keep-alive connection) down.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttscale.errors import (
    BackendError,
    BackendUnavailable,
    BudgetError,
    ConfigError,
    ContextLengthError,
    TTScaleError,
)
from ttscale.server._gate import QueueFull

__all__ = [
    "APIError",
    "BodyLimit",
    "CatchAll",
    "from_ttscale_error",
    "install_error_handlers",
    "queue_full_error",
    "timeout_error",
]

log = logging.getLogger(__name__)


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


def queue_full_error(exc: QueueFull) -> APIError:
    """429 with ``Retry-After``; the message names the limits."""
    return APIError(
        429, str(exc), type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"}
    )


def timeout_error(timeout_s: float, started: bool) -> APIError:
    """504 naming where the time ran out and the fix."""
    where = "while solving" if started else "while waiting in the queue"
    return APIError(
        504,
        f"request timed out after {timeout_s:g}s {where}; ask for a smaller budget "
        f"(seconds below {timeout_s:g}) or have the operator raise --timeout",
        type="timeout_error",
        code="timeout",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app can raise in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return queue_full_error(exc).response()

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


class CatchAll:
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


class BodyLimit:
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
