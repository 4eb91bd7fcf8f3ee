"""``ttscale calibrate``: measure the hardware, or fit the allocator's policy.

- ``--hardware``: ~10-20 s of matmul + copy timing (``ttscale.engine.calibration``); writes the
  host's preset to the cache, used by every later ledger on this host.
- ``--dataset math_train200 --rows FILE.jsonl``: fit the policy from measured rows (one per
  problem x strategy config x budget), e.g. ``benchmarks/results/strategies_rows.jsonl``.
- ``--dataset math_train200 --run``: measure the rows first (probe every problem for its
  difficulty bin, then run every candidate config at every budget, appending each row to
  ``--rows`` as it finishes; probes are kept beside it; a rerun resumes), then fit.

Only calibration problems may enter a fit: ``fit_policy`` refuses rows of other problems and
the calibration set is checked disjoint from MATH-500 (``ttscale.strategies.allocation.splits``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ttscale.cli.options import parse_options
from ttscale.errors import ConfigError

__all__ = ["calibrate", "candidate_configs", "measure_rows"]

err = Console(stderr=True)


def pool_configs(
    budget: int,
    *,
    has_verifier: bool,
    sampling: dict[str, Any],
    tokens_per_sample: int = 450,
    round_size: int | None = 4,
) -> dict:
    """The best-of-N family at a token budget, in a pool's sampling settings (so replay can
    serve every run): ``n`` is what the budget buys at ``tokens_per_sample`` (the embedded
    model writes ~450 tokens per MATH solution), at most the pool's K; majority vote, and
    with a verifier the weighted and DeepConf-filtered votes. A fit over several budgets
    then chooses ``n`` (and the vote) per difficulty bin and budget level: Snell et al.'s
    compute-optimal best-of-N. ``round_size`` is what ``auto`` later draws per engine call
    between its saturation checks (``None``: all n in one call, no early stop)."""
    n = max(1, min(sampling["k"], budget // tokens_per_sample))
    base = {
        "n": n,
        "round_size": n if round_size is None else min(n, round_size),
        "temperature": sampling["temperature"],
        "top_p": sampling["top_p"],
        "max_tokens": sampling["max_tokens"],
        "adaptive": False,
    }
    out: dict[str, tuple[str, dict[str, Any]]] = {
        f"bon{n}_majority": ("best_of_n", {**base, "select": "majority"}),
    }
    if has_verifier:
        out[f"bon{n}_weighted"] = ("best_of_n", {**base, "select": "weighted"})
        out[f"bon{n}_filtered"] = ("best_of_n", {**base, "select": "filtered", "keep": 0.5})
    return out


def candidate_configs(budget: int, *, has_verifier: bool, max_tokens: int = 1024) -> dict:
    """Strategy configs worth measuring at a token budget: (label -> (name, params)).

    Sized like ``benchmarks/strategies.py``: best-of-N takes what fits, searches grow with
    the budget; verifier strategies only when a verifier is given.
    """
    n_bon = max(1, budget // 512)
    n_search = max(4, 2 * (budget // 700))
    step = {"step_tokens": 192, "max_tokens": max_tokens, "min_step_tokens": 32}
    out: dict[str, tuple[str, dict[str, Any]]] = {
        "best_of_n_majority": ("best_of_n", {"n": n_bon, "select": "majority"}),
        "pdr": (
            "pdr",
            {
                "drafts": [4, 2] if budget >= 2500 else [2, 1],
                "distill": "select",
                "keep": 2,
                "workspace_tokens": 384,
                "select": "majority",
            },
        ),
        "sequential_refine": (
            "sequential_refine",
            {"drafts": [1] * max(2, min(4, budget // max_tokens)), "select": "majority"},
        ),
    }
    if has_verifier:
        out["best_of_n_weighted"] = ("best_of_n", {"n": n_bon, "select": "weighted"})
        out["beam_search"] = ("beam_search", {"n": n_search, "beam_width": 2, **step})
        out["dvts"] = ("dvts", {"n": n_search, "beam_width": 2, **step})
        out["particle_filter"] = ("particle_filter", {"n": max(2, budget // 500), **step})
        from ttscale.strategies import STRATEGIES

        if "ets" in STRATEGIES:
            out["ets"] = ("ets", {"width": n_search, "step_tokens": 192})
    return out


async def measure_rows(
    problems: list[dict[str, Any]],
    budgets: list[int],
    generator: Any,
    verifier: Any,
    rows_path: Path,
    *,
    labels: list[str] | None = None,
    seed: int = 0,
    concurrency: int = 32,
    configs: Any = None,
    probe_temperature: float | None = None,
) -> int:
    """Probe each problem, then run every config at every budget; append rows (resumable).

    Every (problem, config, budget) run not yet in ``rows_path`` goes through one
    ``CoalescingGenerator``, ``concurrency`` at a time, so runs of different problems and
    configs share engine batches. Each row is appended and flushed the moment its run ends,
    and each probe is kept in ``<rows>.probes.jsonl``: a killed run loses only what was in
    flight, and a rerun neither redoes a row nor re-probes a problem. Returns the number of
    new rows.

    ``configs(budget, has_verifier=...)`` picks what to measure (default
    ``candidate_configs``). On a replay backend (a sample pool) every probe and run gets its
    own view of the pool (``fork``), as a fresh engine would draw fresh samples.
    """
    from ttscale.backends.batching import CoalescingGenerator
    from ttscale.budget import Budget, Ledger
    from ttscale.evals.runner import Drain
    from ttscale.evals.store import append_jsonl, read_jsonl
    from ttscale.host import host_info
    from ttscale.strategies import make_strategy
    from ttscale.strategies.allocation.allocator import difficulty_score, run_probe
    from ttscale.strategies.allocation.policy import load_policy
    from ttscale.types import Problem
    from ttscale.verifiers.answers import grade

    replay = hasattr(generator, "fork")
    gen = (
        generator
        if replay or isinstance(generator, CoalescingGenerator)
        else CoalescingGenerator(generator)
    )

    def engine() -> Any:
        return gen.fork(seed) if replay else gen

    configs = configs or candidate_configs
    bins = load_policy().bins
    done = {
        (r["problem_id"], r.get("label", r["strategy"]), r["budget_tokens"])
        for r in read_jsonl(rows_path)
    }
    probes_path = rows_path.with_name(rows_path.stem + ".probes.jsonl")
    # problem -> (score of the full probe, {k: bin of its first k samples})
    scores: dict[str, tuple[float, dict[str, int]]] = {
        r["problem_id"]: (r["probe_score"], r["probe_bins"])
        for r in read_jsonl(probes_path)
        if r.get("seed") == seed and r.get("probe_k") == bins.probe_k and "probe_bins" in r
    }
    probs = {p["id"]: Problem(p["problem"], id=p["id"]) for p in problems}

    async def probe(pid: str) -> None:
        led = Ledger(Budget(tokens=bins.probe_k * bins.probe_tokens))
        extra = {} if probe_temperature is None else {"temperature": probe_temperature}
        pr = await run_probe(probs[pid], engine(), verifier, led, bins, seed=seed, **extra)
        # A budget-B run of `auto` probes with bins.samples_for(B) samples; bin each size by
        # the first k samples of this one probe (same seed), so the fit can match them.
        by_k = {
            str(k): bins.bin_of(difficulty_score(pr.candidates[:k])[0])
            for k in range(1, len(pr.candidates) + 1)
        }
        scores[pid] = (pr.score, by_k)
        append_jsonl(
            probes_path,
            [
                {
                    "problem_id": pid,
                    "probe_score": pr.score,
                    "probe_bins": by_k,
                    "seed": seed,
                    "probe_k": bins.probe_k,
                    "generated_tokens": led.generated_tokens,
                }
            ],
        )

    jobs = []
    for budget in budgets:
        for label, (name, params) in configs(budget, has_verifier=verifier is not None).items():
            if labels and label not in labels:
                continue
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
            jobs += [
                (p, label, name, params, kwargs, budget)
                for p in problems
                if (p["id"], label, budget) not in done
            ]
    new = 0

    async def one(job: tuple) -> None:
        nonlocal new
        p, label, name, params, kwargs, budget = job
        if p["id"] not in scores:  # its probe was drained
            return
        try:
            res = await make_strategy(name, **kwargs).run(
                probs[p["id"]], engine(), verifier, Budget(tokens=budget)
            )
        except Exception as exc:  # one failing run must not lose the others
            what = escape(f"{label} @ {budget} on {p['id']} failed: {exc}")
            err.print(f"[yellow]{what}[/yellow]")
            return
        led = res.ledger
        append_jsonl(
            rows_path,
            [
                {
                    "problem_id": p["id"],
                    "level": p.get("level"),
                    "strategy": name,
                    "label": label,
                    "params": params,
                    "budget_tokens": budget,
                    "answer": res.answer,
                    "gold": p["answer"],
                    "correct": bool(res.answer is not None and grade(res.answer, p["answer"])),
                    "generated_tokens": led.generated_tokens,
                    "prompt_tokens": led.prompt_tokens,
                    "cached_tokens": led.cached_tokens,
                    "eflops": led.eflops,
                    "wall_seconds": round(led.wall_seconds, 3),
                    "probe_score": scores[p["id"]][0],
                    "probe_bins": scores[p["id"]][1],
                    "difficulty_bin": scores[p["id"]][1].get(
                        str(bins.samples_for(budget)), bins.bin_of(scores[p["id"]][0])
                    ),
                    "hardware": led.hardware.name,
                    "isa": host_info().isa,
                    "engine": led.engine,
                }
            ],
        )
        new += 1

    async with Drain(concurrency) as drain:
        pending = [p["id"] for p in problems if p["id"] not in scores]
        await asyncio.gather(*(drain.gated(partial(probe, pid)) for pid in pending))
        await asyncio.gather(*(drain.gated(partial(one, job)) for job in jobs))
    return new


def calibrate(
    hardware: Annotated[
        bool, typer.Option("--hardware", help="Measure FLOP/s and bandwidth (~10-20 s).")
    ] = False,
    seconds: Annotated[float, typer.Option(help="--hardware: seconds per measurement.")] = 3.0,
    dataset: Annotated[
        str | None,
        typer.Option(help="Calibration split (math_train200) or a JSONL file of problems."),
    ] = None,
    rows: Annotated[
        Path | None,
        typer.Option(help="JSONL of measured runs to fit from (--run appends to it)."),
    ] = None,
    run: Annotated[
        bool, typer.Option("--run", help="Measure the rows first (loads the model).")
    ] = False,
    budgets: Annotated[str, typer.Option(help="--run: token budgets.")] = "1000,3000,8000",
    limit: Annotated[
        int | None,
        typer.Option(help="--run: N problems, taken round-robin over MATH levels (file order)."),
    ] = None,
    strategies: Annotated[
        str | None, typer.Option(help="--run: only these config labels (comma-separated).")
    ] = None,
    backend: Annotated[str, typer.Option(help="--run: vllm | hf | scripted")] = "vllm",
    concurrency: Annotated[
        int, typer.Option(help="--run: strategy runs in flight at once (they share batches).")
    ] = 32,
    model: Annotated[str | None, typer.Option(help="--run: model name or HF dir.")] = None,
    verifier: Annotated[
        str | None, typer.Option(help="--run: verifier name (llm_judge) for search configs.")
    ] = None,
    backend_option: Annotated[
        list[str] | None,
        typer.Option(
            "--backend-option", "-B", help="--run: backend argument key=value (kv_cache_gib=6)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output path (preset or policy JSON).")] = None,
) -> None:
    """Measure this host (--hardware) or fit the strategy policy (--dataset ...)."""
    if hardware:
        _hardware(seconds, out)
        return
    if dataset is None:
        raise ConfigError(
            "say what to calibrate: --hardware, or --dataset math_train200 --rows FILE.jsonl "
            "(or --run to measure the rows)"
        )
    settings = RunSettings(
        budgets=budgets,
        limit=limit,
        strategies=strategies,
        backend=backend,
        backend_options=parse_options(backend_option or []),
        model=model,
        verifier=verifier,
        concurrency=concurrency,
    )
    _policy(dataset, rows, settings, out, measure=run)


def _hardware(seconds: float, out: Path | None) -> None:
    from ttscale.engine.calibration import measure_hardware, save_preset
    from ttscale.host import host_info

    with err.status("measuring matmul FLOP/s and memory bandwidth...", spinner="dots"):
        preset = measure_hardware(seconds=seconds)
    path = save_preset(preset, out)
    m = preset["measured"]
    info = host_info()
    sys.stdout.write(
        json.dumps({**preset, "path": str(path)}, indent=2)
        + "\n"
        + f"RESULT preset={preset['name']} peak_flops={preset['peak_flops']:.4g} "
        f"mem_bandwidth={preset['mem_bandwidth']:.4g} "
        f"intensity={preset['peak_flops'] / preset['mem_bandwidth']:.3g} "
        f"fp32_flops={m['matmul_float32_flops']:.4g} isa={info.isa} cores={info.cores}\n"
    )


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What ``calibrate --run`` measures, and on which engine (``model`` also names the
    model a fit from existing rows is for)."""

    budgets: str
    limit: int | None
    strategies: str | None
    backend: str
    backend_options: dict[str, Any]
    model: str | None
    verifier: str | None
    concurrency: int


def _policy(
    dataset: str, rows: Path | None, run: RunSettings, out: Path | None, *, measure: bool
) -> None:
    """Fit from ``rows`` (measuring them first with ``run`` when ``measure``); write it."""
    from ttscale.cost import default_hardware
    from ttscale.host import host_info
    from ttscale.strategies.allocation.policy import fit_policy, load_policy
    from ttscale.strategies.allocation.splits import (
        CALIBRATION_SPLIT,
        EVALUATION_SPLIT,
        assert_disjoint,
        load_split,
    )

    if dataset == CALIBRATION_SPLIT:
        problems = load_split(CALIBRATION_SPLIT)
    elif Path(dataset).is_file():
        problems = [json.loads(x) for x in Path(dataset).read_text().splitlines() if x.strip()]
    else:
        raise ConfigError(
            f"--dataset {dataset!r}: use {CALIBRATION_SPLIT} (the calibration split) or a JSONL "
            f"file of calibration problems"
        )
    assert_disjoint(problems, load_split(EVALUATION_SPLIT))  # never fit on evaluation problems
    if rows is None:
        raise ConfigError("--rows FILE.jsonl is required (the rows to fit; --run appends to it)")
    if measure:
        if run.limit is not None:
            from ttscale.evals.datasets import round_robin_by_level

            problems = round_robin_by_level(problems, run.limit)
        asyncio.run(_run(problems, run, rows))
    if not rows.is_file():
        raise ConfigError(f"--rows {rows} does not exist; pass measured rows or add --run")
    from ttscale.evals.store import read_jsonl

    data = read_jsonl(rows)
    prior = load_policy()
    pol = fit_policy(
        data,
        calibration_ids=[str(p["id"]) for p in problems],
        dataset=dataset,
        model=run.model or prior.model,
        prior=prior,
        rows_file=str(rows),
        hardware=default_hardware().name,
        isa=host_info().isa,
    )
    path = pol.save(out or Path("policy.json"))
    fitted = sum(c.source == "fitted" for c in pol.cells)
    sys.stdout.write(
        f"wrote {path}: {pol.provenance.notes}; bins from {pol.provenance.bin_source}\n"
        f"RESULT policy={path} rows={len(data)} problems={len(pol.provenance.problem_ids)} "
        f"fitted_cells={fitted}/{len(pol.cells)} isa={host_info().isa}\n"
    )


async def _run(problems: list[dict[str, Any]], run: RunSettings, rows: Path) -> None:
    from ttscale.backends import make_backend

    try:
        levels = [int(b) for b in run.budgets.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--budgets {run.budgets!r} must be comma-separated integers") from None
    kwargs = dict(run.backend_options)
    if run.model and run.backend in ("vllm", "hf"):
        kwargs["model"] = run.model
    gen = make_backend(run.backend, **kwargs)
    verifier = None
    if run.verifier:
        from ttscale.verifiers import load_verifier

        verifier = load_verifier(run.verifier, generator=gen)
    labels = [s.strip() for s in run.strategies.split(",")] if run.strategies else None
    try:
        new = await measure_rows(
            problems, levels, gen, verifier, rows, labels=labels, concurrency=run.concurrency
        )
        err.print(f"measured {new} new rows into {escape(str(rows))}")
    finally:
        await gen.close()
