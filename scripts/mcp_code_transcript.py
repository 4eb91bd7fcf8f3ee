"""One real-model MCP call of ``solve`` with tests (the ``code`` strategy), recorded as Markdown.

Starts ``python -m ttscale.cli mcp`` over stdio with its default backend (vLLM on CPU, the
embedded 0.5B coder), calls the ``solve`` tool with a function to write and public tests, and
writes what the client saw (handshake, progress, result text, structured result) to
``docs/mcp_code_transcript.md``. Heavy (loads the engine): run it alone, under the CPU lock:

    flock /tmp/ttscale-cpu.lock .venv/bin/python scripts/mcp_code_transcript.py
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from ttscale.host import host_info

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "mcp_code_transcript.md"
QUESTION = (
    "def running_max(xs: list[int]) -> list[int]:\n"
    '    """Return the list whose i-th item is the largest of xs[0..i].\n'
    "    >>> running_max([1, 3, 2, 5])\n"
    "    [1, 3, 3, 5]\n"
    '    """\n'
)
ARGS = {
    "question": QUESTION,
    "budget": "rollouts=8",
    "tests": [
        "running_max([1, 3, 2, 5]) == [1, 3, 3, 5]",
        "running_max([]) == []",
        "assert running_max([-2, -5, -1]) == [-2, -2, -1]",
    ],
}


async def main() -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "ttscale.cli", "mcp"], env=dict(os.environ), cwd=ROOT
    )
    events: list[tuple[float, float, float | None, str | None]] = []
    t0 = time.perf_counter()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((time.perf_counter() - t0, progress, total, message))

    with tempfile.TemporaryFile("w+") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            t_init = time.perf_counter() - t0
            tools = (await session.list_tools()).tools
            t0 = time.perf_counter()
            result = await session.call_tool("solve", ARGS, progress_callback=on_progress)
            t_call = time.perf_counter() - t0
    out = result.structured_content or {}
    rows = [
        f"| {t:.1f} | {p:g} | {'' if tot is None else f'{tot:g}'} | {m} |"
        for t, p, tot, m in events
    ]
    shown = {k: out.get(k) for k in ("strategy", "budget", "entry_point", "passed_public")}
    lines = [
        "# A real-model MCP call: `solve` with tests (the `code` strategy)",
        "",
        "Recorded by `scripts/mcp_code_transcript.py` with the official MCP Python SDK client "
        f"(`mcp` {importlib.metadata.version('mcp')}) over stdio, against `python -m "
        "ttscale.cli mcp` with its default backend (vLLM on CPU, the embedded "
        f"Qwen2.5-Coder-0.5B-Instruct), on a 2-core {host_info().isa} host.",
        "",
        f"- server: `{init.server_info.name}` {init.server_info.version}, protocol "
        f"`{init.protocol_version}`; handshake after {t_init:.1f} s",
        f"- tools: {', '.join(f'`{t.name}`' for t in tools)}",
        f"- result after {t_call:.1f} s (engine load included), `isError` = {result.is_error}",
        "",
        "## The call's arguments",
        "",
        "```json",
        json.dumps(ARGS, indent=2),
        "```",
        "",
        "## Progress notifications",
        "",
        "| t (s) | progress | total | message |",
        "|---:|---:|---:|---|",
        *rows,
        "",
        "## Result text (what the calling model reads)",
        "",
        "```text",
        result.content[0].text if result.content else "",
        "```",
        "",
        "## Structured result (`structuredContent`, abridged)",
        "",
        "```json",
        json.dumps(
            {
                **shown,
                "tests": out.get("tests"),
                "clusters": out.get("clusters"),
                "selection": out.get("selection"),
                "ledger": out.get("ledger"),
            },
            indent=2,
        ),
        "```",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    anyio.run(main)
