"""``ttscale train-verifier``: fit a probe verifier on a sample pool of your own model."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ttscale.cli.options import Model, Progress, Verbose, out, split_list
from ttscale.errors import ConfigError


def train_verifier(
    pool: Annotated[
        list[Path],
        typer.Option("--pool", help="Training pool(s) of one model (math_train200, K >= 8)."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the probe.")],
    model: Model = None,
    layers: Annotated[
        list[str] | None, typer.Option(help="Layers to try, e.g. 6,12,18 (default: 5 spread).")
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds (grouped by problem).")] = 5,
    dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 (default: host).")] = None,
    states_cache: Annotated[
        Path | None, typer.Option(help="Keep the extracted hidden states here (.npz) for refits.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    progress: Progress = True,
    verbose: Verbose = False,
) -> None:
    """Fit a linear probe on the policy model's hidden states (plus confidence features)
    that predicts whether a sample is right; use it with --verifier DIR (or probe)."""
    from ttscale.evals.train_verifier import TrainSettings
    from ttscale.evals.train_verifier import train_verifier as run

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr)
    try:
        chosen = tuple(int(x) for x in split_list(layers)) or None
    except ValueError:
        raise ConfigError(f"--layers must be integers, got {layers}") from None
    manifest = run(
        pool,
        out_dir,
        model=model,
        dtype=dtype,
        settings=TrainSettings(layers=chosen, folds=folds),
        progress=progress,
        states_cache=states_cache,
    )
    if as_json:
        sys.stdout.write(json.dumps(manifest, indent=2, default=float) + "\n")
        return
    best = manifest["cv"]["best"]
    prefix = manifest["cv"]["prefix"] or {}
    out.print(
        f"[bold]{out_dir}[/bold]: layer {best['layer']} ({best['pooling']}"
        f"{' + confidence' if best['confidence'] else ''}, C={best['C']}): within-problem "
        f"AUROC {best['auroc_within']:.3f}, pooled {best['auroc_pooled']:.3f} "
        f"({manifest['cv']['folds']}-fold CV grouped by problem); prefix head: within "
        f"{prefix.get('auroc_within', float('nan')):.3f} on {prefix.get('prefixes', 0)} prefixes"
    )
    out.print(f"use it: --verifier {out_dir}  (Python: load_verifier('{out_dir}'))")
