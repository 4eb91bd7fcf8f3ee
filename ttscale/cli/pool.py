"""``ttscale pool build`` and ``ttscale pool show``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ttscale.cli.options import (
    Backend,
    BackendOptions,
    BaseUrl,
    Executor,
    GpusPerWorker,
    Ids,
    Levels,
    Limit,
    Model,
    Progress,
    RayAddress,
    Sample,
    SampleSeed,
    Script,
    SparseOption,
    Stratify,
    Subjects,
    Verbose,
    Workers,
    backend_kwargs,
    err,
    load_backend,
    out,
    parse_options,
    selection,
)
from ttscale.errors import ConfigError

Dataset = Annotated[
    str,
    typer.Option(
        help="math500 | aime24 | amc23 | gsm8k | math_train200 | FILE.jsonl | humaneval "
        "(code: with --format code)"
    ),
]

pool_app = typer.Typer(
    no_args_is_help=True,
    help="Sample pools: draw K samples per problem once, replay them exactly in evals.",
)


@pool_app.command("build")
def build(
    out_dir: Annotated[Path, typer.Option("--out", help="Pool directory (resumable).")],
    dataset: Dataset = "math500",
    k: Annotated[int, typer.Option("--k", help="Samples per problem.")] = 16,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Cap on tokens per sample.")] = 1024,
    seed: Annotated[int, typer.Option(help="Base seed (per-problem seeds derive from it).")] = 0,
    logprobs: Annotated[
        int, typer.Option(help="Top-k logprobs per token for the confidence scores (0: none).")
    ] = 20,
    backend: Backend = "vllm",
    model: Model = None,
    base_url: BaseUrl = None,
    script: Script = None,
    sparse: SparseOption = None,
    backend_option: BackendOptions = None,
    limit: Limit = None,
    levels: Levels = None,
    subjects: Subjects = None,
    ids: Ids = None,
    sample: Sample = None,
    sample_seed: SampleSeed = 0,
    stratify: Stratify = False,
    concurrency: Annotated[
        int, typer.Option(help="Problems in flight (K sequences each; per Ray worker).")
    ] = 8,
    executor: Executor = "local",
    workers: Workers = 2,
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = 0.0,
    no_system_prompt: Annotated[
        bool, typer.Option("--no-system-prompt", help="Omit the default system prompt.")
    ] = False,
    prompt_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="cot: chain of thought (boxed answers); program: Program-of-Thought, each "
            "sample's program run in the sandbox and graded on what it printed; code: a code "
            "dataset (humaneval), each program run on the public tests and the behaviour "
            "inputs and graded on the hidden tests, so the code strategy replays exactly.",
        ),
    ] = "cot",
    generated_inputs: Annotated[
        int,
        typer.Option(
            help="--format code: inputs asked from the model per problem for behaviour "
            "clustering (the code strategy's generated_inputs; 0: none)."
        ),
    ] = 8,
    test_timeout: Annotated[
        float,
        typer.Option(help="--format code: seconds per test call (the code strategy's timeout)."),
    ] = 5.0,
    progress: Progress = True,
    verbose: Verbose = False,
) -> None:
    """Draw K samples per problem of DATASET into --out (rerun the same command to resume)."""
    from ttscale.evals.pool import build_pool
    from ttscale.pools import Sampling, load_pool
    from ttscale.pools.pool import CodeSettings
    from ttscale.types import DEFAULT_SYSTEM_PROMPT, PROGRAM_INSTRUCTION, PROGRAM_SYSTEM_PROMPT

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)
    if prompt_format not in ("cot", "program", "code"):
        raise ConfigError(f"--format {prompt_format!r}: choose cot, program or code")
    program = prompt_format == "program"
    code = prompt_format == "code"
    if code and no_system_prompt:
        raise ConfigError(
            "--format code draws with the code strategy's system prompt; drop --no-system-prompt"
        )
    system = PROGRAM_SYSTEM_PROMPT if program or code else DEFAULT_SYSTEM_PROMPT
    try:
        sampling = Sampling(
            k=k,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=seed,
            logprobs=logprobs or None,
            system_prompt=None if no_system_prompt else system,
            instruction=PROGRAM_INSTRUCTION if program else None,
            execute=program,
            code=CodeSettings(generated_inputs=generated_inputs, timeout=test_timeout)
            if code
            else None,
        )
    except ValueError as exc:
        raise ConfigError(
            f"invalid pool settings: {exc}; see `ttscale pool build --help`"
        ) from None
    chosen = selection(
        limit=limit,
        levels=levels,
        subjects=subjects,
        ids=ids,
        sample=sample,
        sample_seed=sample_seed,
        stratify=stratify,
    )
    extra = parse_options(backend_option or [])
    kwargs = {
        **backend_kwargs(backend, model=model, base_url=base_url, script=script, sparse=sparse),
        **extra,
    }
    outcome = build_pool(
        dataset,
        out=out_dir,
        sampling=sampling,
        selection=chosen,
        backend=lambda: load_backend(backend, kwargs),
        backend_name=backend,
        backend_options=kwargs,
        concurrency=concurrency,
        progress=progress,
        executor=executor,
        workers=workers,
        ray_address=ray_address,
        gpus_per_worker=gpus_per_worker,
    )
    err.print(
        f"{out_dir}: {outcome.written} problems drawn, {outcome.skipped} already there "
        f"({outcome.total} selected)",
        soft_wrap=True,
    )
    _print_summary(load_pool(out_dir), as_json=False)


@pool_app.command("show")
def show(
    pool_dir: Annotated[Path, typer.Argument(help="A pool written by `ttscale pool build`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Summarise a pool: sampling, pass@k, mean sample accuracy, majority vote, tokens."""
    from ttscale.pools import load_pool

    _print_summary(load_pool(pool_dir), as_json=as_json)


def _print_summary(pool: object, *, as_json: bool) -> None:
    from rich.table import Table

    from ttscale.evals.pool import pool_summary

    summary = pool_summary(pool)  # type: ignore[arg-type]
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    s = summary["sampling"]
    table = Table(
        title=(
            f"{summary['name']}: {summary['problems']} problems x {s['k']} samples, "
            f"T={s['temperature']:g}, top_p={s['top_p']:g}, max_tokens={s['max_tokens']}"
        )
    )
    for col in ("level", "problems", "pass@k", "mean acc", "maj@k", "tokens", "cut at cap"):
        table.add_column(col)
    for row in summary["by_level"]:
        table.add_row(
            str(row["level"]),
            str(row["problems"]),
            f"{row['pass_at_k']:.3f}",
            f"{row['mean_accuracy']:.3f}",
            "-" if row["maj_at_k"] is None else f"{row['maj_at_k']:.3f}",
            f"{row['tokens_mean']:.0f}",
            f"{row['truncated']:.3f}",
        )
    out.print(table)
