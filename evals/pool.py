"""``ttscale pool build``: draw K samples per problem once, into a sample pool.

One engine call per problem (the prompt sent once with ``n=K``, so its KV is shared), many
problems in flight through one ``CoalescingGenerator`` so the engine sees large batches.
Each sample is graded against the reference with math-verify and stored with its token
ids, per-token logprob and DeepConf confidence (from the engine's top-k logprobs) and its
eFLOPs (``ttscale.pools.pool`` describes the format). A problem is written atomically
when all its K samples are in, so a killed build loses at most the problems in flight and
a rerun of the same command draws only what is missing, never a duplicate. The first
SIGINT/SIGTERM drains (problems in flight finish and are written), as ``ttscale eval``.

Samples of a problem are drawn with the per-request seed ``problem_seed(seed, id)``, so a
pool does not depend on which problems shared a batch when the backend seeds per request
(the manifest records the mode each problem was drawn under).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.cost import default_hardware
from ttscale.errors import ConfigError
from ttscale.evals.datasets import (
    EvalProblem,
    Selection,
    dataset_path,
    dataset_sha256,
    load_dataset,
)
from ttscale.evals.draw import draw_problem
from ttscale.evals.record import environment, portable
from ttscale.evals.store import atomic_write_text
from ttscale.evals.work import Drain, coalesce
from ttscale.pools.pool import (
    FORMAT_VERSION,
    MANIFEST,
    Pool,
    PoolProblem,
    Sampling,
    discard_partial_writes,
    pool_problem_ids,
    read_manifest,
    write_problem,
)
from ttscale.sandbox import default_sandbox
from ttscale.verifiers.answers import answers_equal, gold_answer
from ttscale.verifiers.voting import vote

__all__ = ["PoolOutcome", "build_pool", "pool_summary"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PoolOutcome:
    """What ``build_pool`` did."""

    out: Path
    total: int
    skipped: int
    """Problems already drawn (resumed)."""
    written: int


class _Progress:
    """tqdm bar: problems, samples/s and the pass@k / mean-accuracy of what is drawn."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            initial=initial,
            disable=not enabled,
            file=sys.stderr,
            unit="problem",
            dynamic_ncols=True,
            desc="pool",
        )
        self.problems = self.solved = self.samples = self.right = self.tokens = 0
        self.t0 = time.perf_counter()

    def update(self, p: PoolProblem) -> None:
        self.problems += 1
        self.solved += any(p.correct)
        self.samples += len(p.samples)
        self.right += sum(p.correct)
        self.tokens += sum(s.num_tokens for s in p.samples)
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix(
            pass_k=f"{self.solved / self.problems:.3f}",
            acc=f"{self.right / max(self.samples, 1):.3f}",
            tok_s=f"{rate:.0f}",
            refresh=False,
        )
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _merge_manifest(out: Path, fresh: dict[str, Any], invocation: dict[str, Any]) -> dict[str, Any]:
    """New or resumed manifest; refuses to mix samplings, models, datasets or prompts."""
    if not (out / MANIFEST).exists():
        return {**fresh, "invocations": [invocation]}
    old = read_manifest(out)

    def clash(what: str, a: Any, b: Any) -> ConfigError:
        return ConfigError(
            f"{out} holds a pool with {what} {a!r}, not {b!r}; samples would mix. Use a new "
            f"--out directory (or the original settings to resume)"
        )

    if Sampling(**old["sampling"]).model_dump() != fresh["sampling"]:
        raise clash("sampling", old["sampling"], fresh["sampling"])
    if old["dataset"]["sha256"] != fresh["dataset"]["sha256"]:
        raise clash("dataset", old["dataset"]["name"], fresh["dataset"]["name"])
    for k in ("backend", "dtype"):
        a, b = old["engine"].get(k), fresh["engine"].get(k)
        if a != b:
            raise clash(f"engine {k}", a, b)
    a, b = old.get("model", {}).get("sha256"), fresh.get("model", {}).get("sha256")
    if a != b:
        raise clash("model sha256", a, b)
    ids = list(dict.fromkeys([*old["dataset"]["problem_ids"], *fresh["dataset"]["problem_ids"]]))
    old["dataset"]["problem_ids"] = ids
    old["dataset"].setdefault("selections", [old["dataset"].pop("selection", None)])
    old["dataset"]["selections"].append(fresh["dataset"]["selections"][0])
    old["invocations"].append(invocation)
    return old


def build_pool(
    dataset: str | Path,
    *,
    out: str | Path,
    sampling: Sampling,
    selection: Selection | None = None,
    backend: Any = None,
    backend_name: str = "vllm",
    backend_options: Mapping[str, Any] | None = None,
    concurrency: int = 8,
    progress: bool = True,
    argv: list[str] | None = None,
    executor: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
    ray_init: Mapping[str, Any] | None = None,
    gpus_per_worker: float = 0.0,
) -> PoolOutcome:
    """Draw (or resume drawing) a pool into ``out``.

    Args:
        dataset: Packaged name (``math500``...) or a JSONL path.
        sampling: K, temperature, top-p, max tokens, seed, top-k logprobs, system prompt.
        selection: Which problems (as ``ttscale eval``).
        backend: A ``Generator``, or a zero-argument factory (called only if a problem is
            left to draw; closed after); ``None`` builds ``backend_name``.
        concurrency: Problems in flight (each ``K`` sequences) on the shared engine (per
            Ray worker with ``executor="ray"``).
        executor: ``local`` (one engine here) or ``ray`` (``workers`` actors, each its own
            backend built from ``backend_name``/``backend_options``; a GPU user points them
            at GPUs with ``gpus_per_worker`` or at a shared ``--backend openai`` server).

    Raises:
        ConfigError: Bad dataset or settings, or ``out`` holds a different pool.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency={concurrency} must be >= 1")
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; choose local or ray")
    if sampling.temperature == 0 and sampling.k != 1:
        raise ConfigError(
            f"temperature 0 is greedy: every sample is the same; use --k 1 (got --k {sampling.k})"
        )
    selection = selection or Selection()
    problems = load_dataset(dataset, selection)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if stale := discard_partial_writes(out):
        log.info("%s: removed %d partial write(s) of a killed build", out, stale)
    done = pool_problem_ids(out)
    todo = [p for p in problems if p.id not in done]
    skipped = len(problems) - len(todo)
    dataset_info = {
        "name": str(dataset),
        "path": portable(dataset_path(dataset)),
        "sha256": dataset_sha256(dataset),
        "selections": [dataclasses.asdict(selection)],
        "problem_ids": [p.id for p in problems],
    }
    if (out / MANIFEST).exists():  # refuse a mismatched resume before loading an engine
        old = read_manifest(out)
        if Sampling(**old["sampling"]).model_dump() != sampling.model_dump():
            raise ConfigError(
                f"{out} holds a pool drawn with {old['sampling']}, not {sampling.model_dump()}; "
                f"samples would mix. Use a new --out directory (or the original settings)"
            )
    if not todo:
        log.info("%s: all %d problems already drawn", out, len(problems))
        return PoolOutcome(out, len(problems), skipped, 0)

    state: dict[str, Any] = {"written": 0}
    bar: _Progress | None = None

    def start(profile: dict[str, Any], spec: Any, hardware_name: str) -> None:
        nonlocal bar
        env = environment({k: v for k, v in profile.items() if k != "model_spec"}, argv)
        fresh = {
            "format_version": FORMAT_VERSION,
            "name": out.name,
            "created": env["created"],
            "sampling": sampling.model_dump(),
            "dataset": dataset_info,
            "engine": {k: v for k, v in env["engine"].items() if k != "hardware"},
            "model": env["model"],
            "model_spec": spec,
            "hardware": hardware_name,
            "host": env["host"],
            "python": env["python"],
            "packages": env["packages"],
            "git": env["git"],
        }
        if sampling.execute:
            fresh["sandbox"] = sandbox_record()
        invocation = {
            "command": env["command"],
            "started": env["created"],
            "git": env["git"],
            "executor": executor,
        }
        state["manifest"] = _merge_manifest(out, fresh, invocation)
        atomic_write_text(out / MANIFEST, _dumps(state["manifest"]))
        bar = _Progress(len(problems), skipped, progress)

    def on_problem(drawn: PoolProblem) -> None:
        write_problem(out, drawn)
        state["written"] += 1
        if bar is not None:
            bar.update(drawn)

    try:
        if executor == "ray":
            from ttscale.evals.ray_executor import run_ray_pool

            run_ray_pool(
                todo,
                sampling,
                on_problem,
                lambda prof: start(prof, prof.get("model_spec"), prof.get("hardware", "?")),
                backend_name=backend_name,
                backend_options=dict(backend_options or {}),
                workers=workers,
                concurrency=concurrency,
                address=ray_address,
                init=dict(ray_init or {}),
                gpus_per_worker=gpus_per_worker,
            )
        else:
            _draw_local(
                todo,
                sampling,
                on_problem,
                start,
                backend,
                backend_name,
                backend_options,
                concurrency,
            )
    finally:
        if bar is not None:
            bar.close()
        if "manifest" in state:
            manifest = state["manifest"]
            manifest["invocations"][-1]["ended"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
            )
            manifest["invocations"][-1]["problems_after"] = len(pool_problem_ids(out))
            atomic_write_text(out / MANIFEST, _dumps(manifest))
    return PoolOutcome(out, len(problems), skipped, state["written"])


def _draw_local(
    todo: list[EvalProblem],
    sampling: Sampling,
    on_problem: Any,
    start: Any,
    backend: Any,
    backend_name: str,
    backend_options: Mapping[str, Any] | None,
    concurrency: int,
) -> None:
    """Draw ``todo`` on one engine in this process, ``concurrency`` problems at a time."""
    owned = not hasattr(backend, "generate")
    if backend is None:
        from ttscale.backends import make_backend

        gen = make_backend(backend_name, **dict(backend_options or {}))
    else:
        gen = backend() if owned else backend
    try:
        hardware = default_hardware()
        spec = None if gen.model_spec is None else dataclasses.asdict(gen.model_spec)
        start(gen.profile(), spec, hardware.name)
        shared = coalesce(gen)
        executor = default_sandbox() if sampling.execute else None

        async def one(p: EvalProblem) -> None:
            on_problem(await draw_problem(p, shared, sampling, hardware, executor))

        async def main() -> None:
            async with Drain(concurrency) as drain:
                await asyncio.gather(*(drain.gated(partial(one, p)) for p in todo))

        asyncio.run(main())
    finally:
        if owned:
            asyncio.run(gen.close())


def pool_summary(pool: Pool) -> dict[str, Any]:
    """pass@k, mean sample accuracy, maj@k (math-verify classes), tokens and the share of
    samples cut at the cap, overall and per level."""

    def cell(level: Any, probs: list[PoolProblem]) -> dict[str, Any]:
        samples = [s for p in probs for s in p.samples]
        maj = [
            p.gold is not None
            and (v := vote([s.answer for s in p.samples])) is not None
            and answers_equal(gold_answer(p.gold), v)
            for p in probs
        ]
        n = max(len(probs), 1)
        return {
            "level": level,
            "problems": len(probs),
            "pass_at_k": sum(any(p.correct) for p in probs) / n,
            "mean_accuracy": sum(bool(s.correct) for s in samples) / max(len(samples), 1),
            "maj_at_k": sum(maj) / n,
            "tokens_mean": float(np.mean([s.num_tokens for s in samples])) if samples else 0.0,
            "truncated": sum(s.finish_reason == "length" for s in samples) / max(len(samples), 1),
        }

    probs = list(pool.problems.values())
    levels = sorted({p.level for p in probs if p.level is not None})
    by_level = [cell(lv, [p for p in probs if p.level == lv]) for lv in levels]
    return {
        "name": pool.name,
        "problems": len(probs),
        "sampling": pool.sampling.model_dump(),
        "by_level": [*by_level, cell("all", probs)],
    }


def sandbox_record() -> dict[str, Any]:
    """The isolation and limits a program pool's programs ran under (for its manifest)."""
    box = default_sandbox()
    return {
        "isolation": dataclasses.asdict(box.isolation),
        "limits": dataclasses.asdict(box.limits),
    }


def _dumps(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, default=str)
