"""The MCP server: ``SolveService``'s tools on the official SDK's ``MCPServer``, served over
stdio (desktop clients start it as a subprocess) or streamable HTTP (``/mcp``, with an
optional bearer key and an open ``/health``).

Tools: ``solve`` (progress notifications while it searches; cancellation stops the search;
with ``tests``/``entry_point`` it writes a function, strategy ``code``),
``solve_batch`` (one shared budget) and ``strategies``. A refused or failed call is a tool
error (``isError``) whose text names the fix; the server keeps serving.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ttscale import __version__
from ttscale.mcp.schemas import BatchOutput, SolveOutput, StrategiesOutput
from ttscale.mcp.service import SolveService, ToolFailure
from ttscale.verifiers.test_specs import MAX_TESTS

__all__ = ["BearerAuth", "build_server", "http_app"]

INSTRUCTIONS = (
    "ttscale answers questions (math, reasoning) by spending a compute budget on a test-time "
    "scaling strategy over a local model: many samples, a vote, an honest ledger. Call "
    "`solve` with the question; raise the budget (e.g. 'rollouts=16') for harder questions. "
    "To get a Python function written, call `solve` with the task (a signature and docstring, "
    "or a description) and `tests` such as ['add(2, 3) == 5']: candidate programs run "
    "against them in a sandbox and the returned `program` is the one chosen, with each "
    "test's result. `strategies` lists strategies, their options and this server's caps."
)

# -- tool arguments (module level: the SDK resolves these annotations into the input schema) --
Question = Annotated[
    str, Field(min_length=1, max_length=100_000, description="The question to answer.")
]
BudgetArg = Annotated[
    str | int | dict[str, float] | None,
    Field(
        description=(
            "Compute budget: 'rollouts=8', 'tokens=4000,seconds=60' (units: tokens, rollouts, "
            "flops, seconds), an int (tokens) or an object. Omit for the server's default; "
            "asking for more than the server's caps is refused."
        )
    ),
]
StrategyArg = Annotated[
    str | None,
    Field(description="Strategy name (see the strategies tool); omit for the default."),
]
OptionsArg = Annotated[
    dict[str, Any] | None,
    Field(description='Strategy options, e.g. {"n": 16, "max_tokens": 512}.'),
]
TestsArg = Annotated[
    list[str] | None,
    Field(
        description=(
            "Code: public tests for the function to write, one per string: "
            "'add(2, 3) == 5', 'assert add(2, 3) == 5' or doctest text '>>> add(2, 3)\\n5'. "
            f"Literal arguments and expected values; at most {MAX_TESTS}. Giving tests "
            "selects the 'code' strategy: candidate programs run against them in a sandbox "
            "and the result's `program` is the chosen one, with each test's outcome."
        )
    ),
]
EntryPointArg = Annotated[
    str | None,
    Field(
        description=(
            "Code: the name of the function to write; omit to take the one the tests call "
            "(or the question's last def)."
        )
    ),
]
Questions = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=100_000)]],
    Field(min_length=1, max_length=256, description="The questions, answered in order."),
]
SharedBudget = Annotated[
    str | int | dict[str, float],
    Field(description="ONE budget shared by all questions, e.g. 'rollouts=64'."),
]


def build_server(service: SolveService) -> MCPServer:
    """The ``MCPServer`` with the three tools and ``/health`` (HTTP only) bound to ``service``.

    The server's lifespan starts a deferred engine loading and closes an engine the service
    owns."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        # Entered once the transport is up (over stdio: after the SDK has moved fd 1 off the
        # wire, so an engine printing while it loads cannot corrupt the protocol).
        service.start()
        try:
            yield {}
        finally:
            await service.close()

    server: MCPServer = MCPServer(
        "ttscale",
        title="ttscale: test-time compute scaling",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
    )

    @server.tool(
        name="solve",
        description=(
            "Answer a question by spending a compute budget on a test-time scaling strategy "
            "(default: best-of-N with majority vote). Returns the answer, the vote table, the "
            "ledger (tokens, rollouts, eFLOPs, seconds) and the chosen solution. Reports "
            "progress (samples, tokens, current leader) while it searches. To write a Python "
            "function, pass the task as the question and `tests` (e.g. ['add(2, 3) == 5']), "
            "optionally `entry_point`: the 'code' strategy runs candidate programs against the "
            "tests in a sandbox and returns the chosen `program`, each test's result (call, "
            "expected, passed, actual, error) and the behaviour clusters."
        ),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )
    async def solve(
        ctx: Context,
        question: Question,
        budget: BudgetArg = None,
        strategy: StrategyArg = None,
        options: OptionsArg = None,
        tests: TestsArg = None,
        entry_point: EntryPointArg = None,
    ) -> Annotated[CallToolResult, SolveOutput]:
        try:
            out = await service.solve(
                question,
                budget,
                strategy,
                options,
                ctx.report_progress,
                tests=tests,
                entry_point=entry_point,
            )
        except ToolFailure as exc:
            raise ToolError(str(exc)) from None
        return _result(out.text(), out.model_dump(mode="json"))

    @server.tool(
        name="solve_batch",
        description=(
            "Answer several questions under ONE shared budget: each is probed, then the budget "
            "goes where it buys the most accuracy (easy questions stop early). Returns one "
            "answer, vote table, ledger and solution per question, plus the totals."
        ),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )
    async def solve_batch(
        ctx: Context, questions: Questions, budget: SharedBudget
    ) -> Annotated[CallToolResult, BatchOutput]:
        try:
            out = await service.solve_batch(questions, budget, ctx.report_progress)
        except ToolFailure as exc:
            raise ToolError(str(exc)) from None
        return _result(out.text(), out.model_dump(mode="json"))

    @server.tool(
        name="strategies",
        description=(
            "List the strategies with their options and defaults, and this server's default "
            "budget and per-call caps."
        ),
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )
    async def strategies() -> Annotated[CallToolResult, StrategiesOutput]:
        out = service.strategies()
        return _result(out.text(), out.model_dump(mode="json"))

    @server.custom_route("/health", methods=["GET"])
    async def health(_: Request) -> Response:
        c = service.counters
        return JSONResponse(
            {
                "status": "ok",
                "engine": service.engine_state,
                "backend": service.backend_name,
                "running": c.running,
                "completed": c.completed,
                "failed": c.failed,
                "cancelled": c.cancelled,
                "max_concurrency": service.config.max_concurrency,
            }
        )

    return server


def _result(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured
    )


# -- HTTP --------------------------------------------------------------------------------------
class BearerAuth:
    """ASGI middleware: ``Authorization: Bearer <key>`` on every path but ``/health``.

    A wrong or missing key gets a 401 naming the fix, before the MCP transport sees the
    request. Lifespan events pass through (the SDK's session manager starts there).
    """

    def __init__(self, app: Any, api_key: str) -> None:
        if not api_key:
            raise ValueError("api_key is empty; pass a key or no BearerAuth at all")
        self.app, self._key = app, api_key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") != "/health":
            headers = dict(scope.get("headers") or [])
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode("latin-1"), self._key
            ):
                response = JSONResponse(
                    {
                        "error": "missing or wrong API key; send 'Authorization: Bearer <key>' "
                        "(the key given to `ttscale mcp --api-key`)"
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer, *, api_key: str | None = None, host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP ASGI app (MCP endpoint ``/mcp``), behind ``BearerAuth`` when
    ``api_key`` is set. On a loopback ``host`` the SDK also turns on DNS-rebinding
    protection (``Host``/``Origin`` must be local)."""
    app = server.streamable_http_app(host=host)
    return BearerAuth(app, api_key) if api_key else app
