"""``ttscale quantize`` and ``ttscale doctor`` (registered on the main CLI app).

Heavy imports (torch, transformers, compressed-tensors, vLLM) happen inside the commands, so
registering them keeps ``ttscale --help`` fast.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["doctor", "quantize"]

out = Console()
err = Console(stderr=True)


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
    from ttscale.quantize import QuantizeOptions
    from ttscale.quantize import quantize as run_quantize

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


def doctor(
    probe: Annotated[
        bool, typer.Option("--probe/--no-probe", help="Run the ~10 s speed probe.")
    ] = True,
    model: Annotated[
        str | None, typer.Option(help="Model (or '<model>@w8a8' variant) the probe loads.")
    ] = None,
    backend: Annotated[str, typer.Option(help="Engine the probe uses: vllm | hf.")] = "vllm",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Check the install: host, engine, profile, preloads, model cache, speed. Exit 1 if broken."""
    from ttscale.doctor import run_doctor

    with err.status("checking..." + (" (speed probe: ~40 s)" if probe else ""), spinner="dots"):
        report = run_doctor(probe=probe, model=model, backend=backend)
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        _print_report(report)
    if not report.ok:
        raise SystemExit(1)  # typer.Exit is swallowed under standalone_mode=False


def _print_report(report) -> None:  # noqa: ANN001 - DoctorReport, imported lazily
    h, p = report.host, report.profile
    gpu = h["cuda"]
    out.print(f"[bold]host[/bold]    {h['cpu']} | {h['cores']} cores | isa {h['isa']}")
    out.print(f"        flags: {', '.join(h['flags']) or 'none of interest'}")
    out.print(f"        cuda: {gpu['name'] + ' sm' + str(gpu['capability']) if gpu else 'none'}")
    v = report.versions
    engines = " ".join(f"{k}={val}" for k, val in v.items() if val and k != "intel-openmp")
    out.print(f"[bold]engine[/bold]  {engines}")
    out.print(
        f"[bold]profile[/bold] {p['rule']}: dtype={p['dtype']} weights={p['weights']}"
        + (f" (overridden: {', '.join(p['overrides'])})" if p["overrides"] else "")
    )
    for reason in p["reasons"]:
        out.print(f"        - {reason}", highlight=False)
    pre = report.preload
    libs = ", ".join(f"{k}={val or 'missing'}" for k, val in pre["libs"].items())
    out.print(f"[bold]preload[/bold] {'active' if pre['active'] else 'inactive'} ({libs})")
    table = Table(title="model cache", show_edge=False)
    for col in ("model / variant", "state", "size", "sha256"):
        table.add_column(col)
    for m in report.models:
        state = (
            "converted" if m["converted"] else ("parts ok" if m["parts_installed"] else "missing")
        )
        size = f"{m['converted_bytes'] / 1e9:.2f} GB" if m["converted"] else "-"
        table.add_row(m["name"], state, size, "")
    for r in report.variants:
        state = f"{r['scheme']}/{r['method']}" + (" STALE" if r["stale"] else "")
        table.add_row(r["name"], state, f"{r['bytes'] / 1e9:.2f} GB", (r["sha256"] or "")[:16])
    out.print(table)
    if report.probe:
        pr = report.probe
        out.print(
            f"[bold]probe[/bold]   load {pr['load_seconds']} s | n=1: {pr['n1']['tok_s']} tok/s | "
            f"n=16: {pr['n16']['tok_s']} tok/s ({pr['max_tokens']} tokens per sample, "
            f"{pr['backend'].get('dtype')}, weights {pr['backend'].get('weights', 'none')})"
        )
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}
    for c in report.checks:
        line = f"{marks[c.status]:>6} {c.name}: {c.detail}"
        out.print(line + (f"\n         fix: {c.fix}" if c.fix else ""), highlight=False)
    out.print("[green]all good[/green]" if report.ok else "[red]problems found (see fix)[/red]")
