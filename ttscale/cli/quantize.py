"""``ttscale quantize``: write a quantized (compressed-tensors) variant of a model.

Heavy imports (torch, transformers, compressed-tensors, vLLM) happen inside the commands, so
registering them keeps ``ttscale --help`` fast.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ttscale.cli.options import err, out

__all__ = ["quantize"]


def quantize(
    model: Annotated[
        str | None,
        typer.Argument(help="Embedded model name or local HF model directory (default model)."),
    ] = None,
    scheme: Annotated[
        str, typer.Option(help="w8a8 (int8 weights + activations) | w4a16 (int4 weights).")
    ] = "w8a8",
    calibrate: Annotated[
        str | None,
        typer.Option(
            help="GPTQ calibration problems: a JSONL file or 'math_train200'. "
            "Default: data-free round-to-nearest."
        ),
    ] = None,
    samples: Annotated[int, typer.Option(help="Calibration problems used by GPTQ.")] = 32,
    max_length: Annotated[int, typer.Option(help="Tokens per calibration sample.")] = 512,
    output: Annotated[
        str | None, typer.Option(help="Write here instead of the model cache.")
    ] = None,
    allow_unsupported: Annotated[
        bool,
        typer.Option(help="Write a scheme this host's engine cannot serve (for another host)."),
    ] = False,
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write a compressed-tensors checkpoint (cached beside the model) that vLLM loads as is."""
    from ttscale.engine.quantize import QuantizeOptions
    from ttscale.engine.quantize import quantize as run_quantize

    opts = QuantizeOptions(num_samples=samples, max_length=max_length)
    what = f"{scheme} ({'GPTQ on ' + calibrate if calibrate else 'round-to-nearest'})"
    with err.status(f"quantizing {model or 'the default model'} to {what}...", spinner="dots"):
        path = run_quantize(
            model,
            scheme,
            calibrate=calibrate,
            output=output,
            options=opts,
            allow_unsupported=allow_unsupported,
            force=force,
        )
    manifest = json.loads((path / "ttscale-model.json").read_text())
    if as_json:
        sys.stdout.write(json.dumps({"path": str(path), **manifest}, indent=2) + "\n")
        return
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    out.print(f"[bold]{path}[/bold]")
    out.print(
        f"scheme={manifest['scheme']} method={manifest['method']} size={size / 1e6:.0f} MB "
        f"source_sha256={manifest['source_sha256'][:16]}... "
        f"took {manifest['quantize_seconds']} s"
    )
    name = path.name if output is None else str(path)
    out.print(f"serve it: ttscale solve '...' --model {name.replace('-rtn', '')}")
