"""``ttscale report``: report.md, report.html and plots for an eval run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttscale.cli.options import (
    out,
)


def report(
    run_dir: Annotated[Path, typer.Argument(help="A directory written by `ttscale eval`.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where to write (default RUN_DIR/report).")
    ] = None,
    compare: Annotated[
        Path | None, typer.Option(help="Another run: paired bootstrap per shared cell.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Report heading.")] = None,
) -> None:
    """Write report.md, report.html and accuracy-vs-compute PNGs for RUN_DIR."""
    from ttscale.evals.report import write_report

    files = write_report(run_dir, out_dir, compare_to=compare, title=title)
    for path in (files.markdown, files.html, *files.plots):
        out.print(str(path))
