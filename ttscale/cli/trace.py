"""``ttscale trace show``: render a saved search tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ttscale.cli.options import (
    err,
    out,
)

trace_app = typer.Typer(
    no_args_is_help=True, help="Inspect search traces saved with `ttscale solve --json`."
)


@trace_app.command("show")
def trace_show(
    path: Annotated[Path, typer.Argument(help="A Result saved by `ttscale solve ... --json`.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the tree as .html, .png or .svg.")
    ] = None,
    max_chars: Annotated[int, typer.Option(help="Step text shown per node.")] = 80,
) -> None:
    """Render the search tree in PATH (beam_search, dvts, particle_filter, ets): scores,
    step tokens, finished (✓), kept (●) and pruned (✗) branches."""
    from ttscale.evals.trace import load_result, render_text, save, trace_graph

    graph = trace_graph(load_result(path))
    out.print(render_text(graph, max_chars=max_chars))
    if out_file is not None:
        err.print(f"wrote {escape(str(save(graph, out_file)))}")
