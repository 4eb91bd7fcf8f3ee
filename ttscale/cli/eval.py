"""``ttscale eval``: run (or resume) a grid of problems x strategies x budgets x seeds."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

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
    PoolDir,
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
    check_verifier,
    err,
    load_backend,
    out,
    parse_options,
    selection,
    split_list,
)

Dataset = Annotated[
    str | None,
    typer.Option(
        help="math500 | aime24 | amc23 | gsm8k | math_train200 | FILE.jsonl | humaneval "
        "(code: graded on hidden tests; use --strategy code)"
    ),
]


def eval_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory (resumable).")],
    dataset: Dataset = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="Strategies, comma-separated; label:name, e.g. greedy:best_of_n."),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(help="Budgets, e.g. tokens=2000,tokens=8000 (';' separates multi-cap ones)."),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 per (problem, strategy, budget).")] = 1,
    backend: Backend = "vllm",
    pool: PoolDir = None,
    model: Model = None,
    base_url: BaseUrl = None,
    script: Script = None,
    sparse: SparseOption = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="key=value for every strategy, label.key=value for one."
        ),
    ] = None,
    backend_option: BackendOptions = None,
    verifier: Annotated[
        str | None, typer.Option(help="Verifier name (llm_judge) or PRM dir.")
    ] = None,
    verifier_option: Annotated[
        list[str] | None,
        typer.Option("--verifier-option", "-V", help="Verifier argument key=value (mode=step)."),
    ] = None,
    limit: Limit = None,
    levels: Levels = None,
    subjects: Subjects = None,
    ids: Ids = None,
    sample: Sample = None,
    sample_seed: SampleSeed = 0,
    stratify: Stratify = False,
    executor: Executor = "local",
    concurrency: Annotated[int, typer.Option(help="Rows in flight per event loop.")] = 16,
    workers: Workers = 2,
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = 0.0,
    progress: Progress = True,
    traces: Annotated[
        bool, typer.Option(help="Write each row's full trace (off for big replay grids).")
    ] = True,
    grade_timeout: Annotated[
        float,
        typer.Option(help="Code datasets: CPU seconds of one program's hidden tests."),
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Verbose = False,
) -> None:
    """Run (or resume) a grid of problems x strategies x budgets x seeds into --out."""
    from ttscale.evals.metrics import summarize
    from ttscale.evals.runner import parse_budgets, parse_strategies, replay_selection, run_eval
    from ttscale.evals.store import read_rows

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr)
    configs = parse_strategies(split_list(strategy) or ["best_of_n"], parse_options(option or []))
    for c in configs:  # before loading the engine
        check_verifier(c.name, c.options, verifier if c.use_verifier else None)
    budgets = parse_budgets(budget or ["rollouts=8"])
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
        **backend_kwargs(
            backend, model=model, base_url=base_url, script=script, pool=pool, sparse=sparse
        ),
        **extra,
    }
    if backend == "replay":  # the pool's own dataset and problems unless told otherwise
        first = kwargs["pool"] if isinstance(kwargs["pool"], str) else kwargs["pool"][0]
        dataset, chosen = replay_selection(Path(first), dataset, chosen)
    outcome = run_eval(
        dataset or "math500",
        configs,
        budgets,
        out=out_dir,
        seeds=seeds,
        selection=chosen,
        backend=lambda: load_backend(backend, kwargs),
        backend_name=backend,
        backend_options=kwargs,
        verifier=verifier,
        verifier_options=parse_options(verifier_option or []),
        executor=executor,
        concurrency=concurrency,
        workers=workers,
        ray_address=ray_address,
        gpus_per_worker=gpus_per_worker,
        progress=progress,
        traces=traces,
        grade_timeout=grade_timeout,
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
    code = any(r.get("domain") == "code" for r in rows)
    score = "pass@1 [95% CI]" if code else "accuracy [95% CI]"
    cols = ("strategy", "budget", "problems", score, *(("oracle pass@n",) if code else ()))
    for col in (*cols, "tokens", "eFLOPs"):
        table.add_column(col)
    for c in cells:
        oracle = (f"{c.pass_n:.3f}" if c.pass_n is not None else "-",) if code else ()
        table.add_row(
            c.strategy,
            c.budget,
            str(c.problems),
            f"{c.accuracy:.3f} [{c.ci[0]:.3f}, {c.ci[1]:.3f}]",
            *oracle,
            f"{c.tokens_mean:.0f}",
            f"{c.eflops_mean:.3g}",
        )
    out.print(table)
    err.print(f"report: ttscale report {escape(str(out_dir))}")
