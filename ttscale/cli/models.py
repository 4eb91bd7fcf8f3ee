"""``ttscale models``: the embedded models, their parts and conversion."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from ttscale.cli.options import (
    err,
    out,
)


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    convert: Annotated[
        str | None, typer.Option(help="Convert this embedded model now (one-time).")
    ] = None,
) -> None:
    """List embedded models: parts installed, converted, cache path."""
    from ttscale.engine.models import EMBEDDED_MODELS, model_status, resolve_model
    from ttscale.engine.profile import choose_profile

    if convert is not None:
        dtype = choose_profile().dtype  # stored as the engine will serve it on this host
        with err.status(f"converting {convert} to {dtype} (one-time, ~2 min)...", spinner="dots"):
            resolve_model(convert, dtype=dtype)
    rows = [model_status(name) for name in EMBEDDED_MODELS]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(show_edge=False)
    for col in ("name", "default", "parts", "converted", "path"):
        table.add_column(col)
    for r in rows:
        parts = f"{r['parts_bytes'] / 1e6:.0f} MB" if r["parts_installed"] else "missing"
        conv = (
            f"{r['converted_bytes'] / 1e9:.2f} GB ({', '.join(r['converted_dtypes'])})"
            if r["converted"]
            else "no"
        )
        table.add_row(r["name"], "yes" if r["default"] else "", parts, conv, r["path"])
    out.print(table)
