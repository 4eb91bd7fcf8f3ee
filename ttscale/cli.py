"""``ttscale`` command line: ``solve``, ``serve``, ``models``, ``quantize``, ``doctor``...

Errors print one line naming the fix and exit with status 2; no tracebacks for user errors.
Progress goes to stderr, results to stdout (``--json`` prints only JSON there).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ttscale.errors import ConfigError, TTScaleError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Test-time compute scaling: spend a compute budget to answer better.",
)
out = Console()
err = Console(stderr=True)


def _parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"option {item!r} is not key=value (e.g. -o n=16)")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def _load_script(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--script {path}: cannot read a JSON object ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise ConfigError(f"--script {path} must map problem substrings to lists of solutions")
    return data


def _load_backend(
    backend: str, *, model: str | None, base_url: str | None, script: Path | None, **extra: Any
) -> Any:
    """Build the backend named on the command line (shared by ``solve``, ``serve``, ``eval``)."""
    from ttscale.backends import make_backend

    kwargs = {**_backend_kwargs(backend, model=model, base_url=base_url, script=script), **extra}
    with err.status(f"loading {backend} backend...", spinner="dots"):
        return make_backend(backend, **kwargs)


def _backend_kwargs(
    backend: str, *, model: str | None, base_url: str | None, script: Path | None
) -> dict[str, Any]:
    """Constructor arguments of the backend named on the command line (Ray workers get these)."""
    kwargs: dict[str, Any] = {}
    if backend in ("vllm", "hf") and model is not None:
        kwargs["model"] = model
    elif backend == "openai":
        if base_url is None:
            raise ConfigError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        kwargs.update(base_url=base_url, model=model)
    elif backend == "scripted":
        kwargs["script"] = _load_script(script)
    return kwargs


@app.command()
def solve(
    prompt: Annotated[str, typer.Argument(help="The question to answer.")],
    strategy: Annotated[str, typer.Option(help="Registered strategy name.")] = "best_of_n",
    budget: Annotated[
        str,
        typer.Option(
            help="Caps, e.g. tokens=4000,seconds=60 (units: tokens, rollouts, flops, seconds)."
        ),
    ] = "rollouts=8",
    backend: Annotated[str, typer.Option(help="vllm | hf | openai | scripted")] = "vllm",
    model: Annotated[
        str | None, typer.Option(help="Embedded model name or local HF model directory.")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="Server URL for --backend openai (e.g. http://127.0.0.1:8000/v1)."),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(help="JSON {problem substring: [solutions]} for --backend scripted."),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Strategy option key=value (repeatable)."),
    ] = None,
    verifier: Annotated[
        str | None,
        typer.Option(help="Verifier name (llm_judge: the policy model judges) or a PRM dir."),
    ] = None,
    verifier_option: Annotated[
        list[str] | None,
        typer.Option("--verifier-option", "-V", help="Verifier argument key=value (mode=step)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full Result as JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")
    ] = False,
) -> None:
    """Answer PROMPT by spending BUDGET on STRATEGY."""
    from ttscale.api import solve as run_solve
    from ttscale.budget import Budget
    from ttscale.evals.runner import make_verifier

    if verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    options = _parse_options(option or [])
    parsed = Budget.parse(budget)  # validate before loading anything heavy
    if not prompt.strip():
        raise ConfigError("prompt is empty; pass the question as the first argument")
    verifier_options = _parse_options(verifier_option or [])
    gen = _load_backend(backend, model=model, base_url=base_url, script=script)
    scorer = make_verifier(verifier, gen, verifier_options)
    with err.status(f"solving with {strategy} under {parsed}...", spinner="dots"):
        result = run_solve(
            prompt, parsed, strategy=strategy, backend=gen, verifier=scorer, **options
        )
    if as_json:
        sys.stdout.write(result.to_json(indent=2) + "\n")
        return
    _print_result(result)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    backend: Annotated[str, typer.Option(help="vllm | hf | openai | scripted")] = "vllm",
    model: Annotated[
        str | None, typer.Option(help="Embedded model name or local HF model directory.")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Upstream server URL for --backend openai.")
    ] = None,
    script: Annotated[
        Path | None, typer.Option(help="JSON {substring: [solutions]} for --backend scripted.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="TTSCALE_API_KEY", help="Require 'Authorization: Bearer <key>'."),
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="Strategy of the bare 'ttscale' model alias.")
    ] = "best_of_n",
    default_budget: Annotated[
        str, typer.Option(help="Budget of requests that name none.")
    ] = "rollouts=8",
    max_budget: Annotated[
        str, typer.Option(help="Per-request caps; a request asking for more gets a 400.")
    ] = "tokens=65536,rollouts=64,seconds=120",
    max_concurrency: Annotated[int, typer.Option(help="Requests solved at once.")] = 4,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a slot; beyond: 429.")] = 64,
    timeout: Annotated[
        float, typer.Option(help="Per-request seconds, queue included; then 504.")
    ] = 300.0,
    max_body_bytes: Annotated[int, typer.Option(help="Larger request bodies get 413.")] = 1 << 20,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Serve an OpenAI-compatible /v1/chat/completions endpoint (model: ttscale/<strategy>)."""
    from ttscale.server import create_app
    from ttscale.server.runner import import_uvicorn

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr)
    uvicorn = import_uvicorn()
    gen = _load_backend(backend, model=model, base_url=base_url, script=script)
    application = create_app(
        gen,
        api_key=api_key,
        default_strategy=strategy,
        default_budget=default_budget,
        max_budget=max_budget,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        timeout_s=timeout,
        max_body_bytes=max_body_bytes,
    )
    auth = "bearer key required" if api_key else "no auth"
    err.print(f"serving {backend} on http://{host}:{port}/v1 ({auth}); Ctrl-C stops")
    try:
        uvicorn.run(application, host=host, port=port, log_level="debug" if verbose else "info")
    finally:
        import asyncio

        asyncio.run(gen.close())


def _split(items: list[str] | None) -> list[str]:
    return [x.strip() for item in items or [] for x in item.split(",") if x.strip()]


@app.command("eval")
def eval_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory (resumable).")],
    dataset: Annotated[
        str, typer.Option(help="math500 | aime24 | amc23 | gsm8k | math_train200 | FILE.jsonl")
    ] = "math500",
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="Strategies, comma-separated; label:name, e.g. greedy:best_of_n."),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(help="Budgets, e.g. tokens=2000,tokens=8000 (';' separates multi-cap ones)."),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 per (problem, strategy, budget).")] = 1,
    backend: Annotated[str, typer.Option(help="vllm | hf | openai | scripted")] = "vllm",
    model: Annotated[str | None, typer.Option(help="Embedded model name or HF dir.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Server URL for --backend openai.")] = None,
    script: Annotated[Path | None, typer.Option(help="JSON script for --backend scripted.")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="key=value for every strategy, label.key=value for one."
        ),
    ] = None,
    backend_option: Annotated[
        list[str] | None,
        typer.Option("--backend-option", "-B", help="Backend argument key=value (dtype=float32)."),
    ] = None,
    verifier: Annotated[
        str | None, typer.Option(help="Verifier name (llm_judge) or PRM dir.")
    ] = None,
    verifier_option: Annotated[
        list[str] | None,
        typer.Option("--verifier-option", "-V", help="Verifier argument key=value (mode=step)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="First N problems (after filters/sample).")
    ] = None,
    levels: Annotated[list[str] | None, typer.Option(help="Levels, e.g. 1,2,3.")] = None,
    subjects: Annotated[list[str] | None, typer.Option(help="Subjects, e.g. Algebra.")] = None,
    ids: Annotated[list[str] | None, typer.Option(help="Problem ids.")] = None,
    sample: Annotated[int | None, typer.Option(help="Draw N problems with --sample-seed.")] = None,
    sample_seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    stratify: Annotated[bool, typer.Option(help="Draw --sample evenly across levels.")] = False,
    executor: Annotated[str, typer.Option(help="local | ray")] = "local",
    concurrency: Annotated[int, typer.Option(help="Rows in flight per event loop.")] = 16,
    workers: Annotated[int, typer.Option(help="Ray workers (each its own backend).")] = 2,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster (auto, ray://head:10001); none = local.")
    ] = None,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray worker.")] = 0.0,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run (or resume) a grid of problems x strategies x budgets x seeds into --out."""
    from ttscale.evals.datasets import Selection
    from ttscale.evals.metrics import summarize
    from ttscale.evals.runner import parse_budgets, parse_strategies, run_eval
    from ttscale.evals.store import read_rows

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)
    configs = parse_strategies(_split(strategy) or ["best_of_n"], _parse_options(option or []))
    budgets = parse_budgets(budget or ["rollouts=8"])
    try:
        levels_i = tuple(int(x) for x in _split(levels))
    except ValueError:
        raise ConfigError(f"--levels must be integers, got {levels}") from None
    selection = Selection(
        limit=limit,
        levels=levels_i,
        subjects=tuple(_split(subjects)),
        ids=tuple(_split(ids)),
        sample=sample,
        seed=sample_seed,
        stratify=stratify,
    )
    extra = _parse_options(backend_option or [])
    kwargs = {**_backend_kwargs(backend, model=model, base_url=base_url, script=script), **extra}
    outcome = run_eval(
        dataset,
        configs,
        budgets,
        out=out_dir,
        seeds=seeds,
        selection=selection,
        backend=lambda: _load_backend(
            backend, model=model, base_url=base_url, script=script, **extra
        ),
        backend_name=backend,
        backend_options=kwargs,
        verifier=verifier,
        verifier_options=_parse_options(verifier_option or []),
        executor=executor,
        concurrency=concurrency,
        workers=workers,
        ray_address=ray_address,
        gpus_per_worker=gpus_per_worker,
        progress=progress,
    )
    wanted = {(c.label, str(b)) for c in configs for b in budgets}
    rows = [r for r in read_rows(out_dir) if (r["strategy"], r["budget"]) in wanted]
    cells = summarize(rows)
    if as_json:
        data = {
            "out": str(out_dir),
            "rows": outcome.total,
            "resumed": outcome.skipped,
            "written": outcome.written,
            "cells": [c.as_dict() for c in cells],
        }
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    table = Table(title=f"{out_dir} ({outcome.written} new rows, {outcome.skipped} resumed)")
    for col in ("strategy", "budget", "problems", "accuracy [95% CI]", "tokens", "eFLOPs"):
        table.add_column(col)
    for c in cells:
        table.add_row(
            c.strategy,
            c.budget,
            str(c.problems),
            f"{c.accuracy:.3f} [{c.ci[0]:.3f}, {c.ci[1]:.3f}]",
            f"{c.tokens_mean:.0f}",
            f"{c.eflops_mean:.3g}",
        )
    out.print(table)
    err.print(f"report: ttscale report {out_dir}")


@app.command()
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


def _print_result(result: Any) -> None:
    out.print(f"[bold]answer:[/bold] {result.answer}")
    votes = result.extras.get("votes") or []
    if votes:
        table = Table(title="votes", show_edge=False)
        for col in ("answer", "votes", "weight"):
            table.add_column(col)
        for row in votes:
            table.add_row(str(row["answer"]), str(row["votes"]), f"{row['weight']:.3g}")
        out.print(table)
    led = result.ledger.to_dict()
    out.print(
        "[bold]ledger:[/bold] "
        f"generated={led['generated_tokens']} prompt={led['prompt_tokens']} "
        f"cached={led['cached_tokens']} rollouts={led['rollouts']} "
        f"engine_calls={led['engine_calls']} eflops={led['eflops']:.3g} "
        f"wall={led['wall_seconds']:.1f}s engine={led['engine_seconds']:.1f}s "
        f"stopped_by={led['stopped_by']} stop={result.extras.get('stop_reason')}"
    )


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    convert: Annotated[
        str | None, typer.Option(help="Convert this embedded model now (one-time).")
    ] = None,
) -> None:
    """List embedded models: parts installed, converted, cache path."""
    from ttscale.models import EMBEDDED_MODELS, model_status, resolve_model

    if convert is not None:
        with err.status(f"converting {convert} (one-time, ~2 min)...", spinner="dots"):
            resolve_model(convert)
    rows = [model_status(name) for name in EMBEDDED_MODELS]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(show_edge=False)
    for col in ("name", "default", "parts", "converted", "path"):
        table.add_column(col)
    for r in rows:
        parts = f"{r['parts_bytes'] / 1e6:.0f} MB" if r["parts_installed"] else "missing"
        conv = f"{r['converted_bytes'] / 1e9:.2f} GB" if r["converted"] else "no"
        table.add_row(r["name"], "yes" if r["default"] else "", parts, conv, r["path"])
    out.print(table)


trace_app = typer.Typer(
    no_args_is_help=True, help="Inspect search traces saved with `ttscale solve --json`."
)
app.add_typer(trace_app, name="trace")


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
        err.print(f"wrote {save(graph, out_file)}")


def _preload_env() -> dict[str, str] | None:
    """tcmalloc + Intel OpenMP preload recommended by the vLLM CPU docs (+10% sampling,
    up to 2.7x on prefill-heavy batches, identical outputs). ``None`` if already set or
    the libraries are absent. ``TTSCALE_PRELOAD=0`` disables it."""
    if os.environ.get("TTSCALE_PRELOAD") == "0" or os.environ.get("_TTSCALE_PRELOADED"):
        return None
    libs = [
        p
        for p in (
            Path("/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
            Path(sys.prefix) / "lib" / "libiomp5.so",
        )
        if p.is_file()
    ]
    if len(libs) < 2 or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return None
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join([*map(str, libs), env.get("LD_PRELOAD", "")]).rstrip(":")
    env["_TTSCALE_PRELOADED"] = "1"
    return env


def _register_calibrate() -> None:
    from ttscale.calibrate_cmd import calibrate

    app.command("calibrate")(calibrate)


_register_calibrate()


def _register_pool() -> None:
    from ttscale.pool_cmd import pool_app

    app.add_typer(pool_app, name="pool")


_register_pool()


def _register_quantize() -> None:
    from ttscale.quantize_cmd import doctor, quantize

    app.command("quantize")(quantize)
    app.command("doctor")(doctor)


_register_quantize()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = sys.argv[1:] if argv is None else argv
    # Engines log to stdout by default (vLLM); stdout is for results (`--json` must parse).
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    verbose = "-v" in args or "--verbose" in args
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    engine_cmd = args[:1] in (["solve"], ["serve"], ["eval"], ["pool"]) and "scripted" not in args
    engine_cmd = engine_cmd or args[:1] == ["doctor"]  # doctor reports the preload status
    if argv is None and engine_cmd and (env := _preload_env()) is not None:
        os.execve(sys.executable, [sys.executable, "-m", "ttscale.cli", *args], env)
    try:
        app(args=args, standalone_mode=False)
    except TTScaleError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except ValueError as exc:  # pydantic validation at a boundary
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        from ttscale.evals.runner import RunStopped

        if isinstance(exc, RunStopped):
            err.print(f"stopped by {exc}: rows in flight were written; rerun to resume")
            raise SystemExit(128 + exc.signum) from None
        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, click.exceptions.Exit):
            raise SystemExit(exc.exit_code) from None
        raise


if __name__ == "__main__":
    main()
