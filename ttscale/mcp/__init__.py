"""``ttscale mcp``: ttscale as a Model Context Protocol server, for desktop MCP clients and
agent frameworks (OpenAI Agents SDK, LangGraph via langchain-mcp-adapters...).

Tools: ``solve`` (answer, vote table, ledger, solution; progress while it searches),
``solve_batch`` (many questions, one shared budget) and ``strategies``. Built on the
official ``mcp`` SDK (2.x), over stdio or streamable HTTP; see ``docs/mcp.md``.

    >>> from ttscale.backends import ScriptedBackend
    >>> from ttscale.mcp import SolveService, build_server
    >>> from ttscale.server import ServerConfig
    >>> server = build_server(SolveService(ScriptedBackend(), ServerConfig()))  # doctest: +SKIP
    >>> server.run("stdio")  # doctest: +SKIP

Needs the ``mcp`` extra: ``pip install 'ttscale[mcp]'``.
"""

from __future__ import annotations

try:
    import mcp.server.mcpserver  # noqa: F401  (the SDK, not this package: imports are absolute)
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"ttscale.mcp needs the MCP Python SDK 2.x ({_exc}); fix: pip install 'ttscale[mcp]'"
    ) from None

from ttscale.mcp.schemas import BatchOutput, SolveOutput, StrategiesOutput
from ttscale.mcp.server import BearerAuth, build_server, http_app
from ttscale.mcp.service import SolveService, ToolFailure

__all__ = [
    "BatchOutput",
    "BearerAuth",
    "SolveOutput",
    "SolveService",
    "StrategiesOutput",
    "ToolFailure",
    "build_server",
    "http_app",
]
