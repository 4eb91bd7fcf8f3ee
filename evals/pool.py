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

Code pools (``Sampling.code``, a code dataset such as ``humaneval``): the K samples are drawn
with the code prompt (``code_user_text``, ``PROGRAM_SYSTEM_PROMPT``), then the ``code``
strategy itself runs over them (n = K, one round, select = majority, cluster, public and
first) on a generator that serves the drawn samples and sends any other prompt it asks for
(its generated-inputs request, greedy) to the engine, while every sandbox run it makes is
recorded by the sha256 of its source (``ttscale.pools.pool``). So the pool holds exactly
what a replay of the strategy asks for, whatever its internals; each sample also gets its
program, its public-test run and its hidden-test grade (grading sandbox).
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

from ttscale.cost import default_hardware, sample_eflops
from ttscale.errors import ConfigError
from ttscale.evals.code import CODE_DATASETS, CodeProblem, agrade_programs
from ttscale.evals.datasets import (
    EvalProblem,
    Selection,
    dataset_path,
)
from ttscale.evals.draw import draw_problem, to_pool_sample
from ttscale.evals.record import environment, portable
from ttscale.evals.runner import eval_dataset
from ttscale.evals.store import atomic_write_text
from ttscale.evals.work import Drain, coalesce
from ttscale.pools.pool import (
    MANIFEST,
    Pool,
    PoolProblem,
    PoolPrompt,
    Sampling,
    discard_partial_writes,
    format_version,
    pool_problem_ids,
    read_manifest,
    source_key,
    write_problem,
)
from ttscale.pools.replay import ReplayGenerator
from ttscale.sandbox import default_sandbox
from ttscale.types import ExecResult, GenerationOutput, GenerationRequest, Problem
from ttscale.verifiers.answers import answers_equal, gold_answer
from ttscale.verifiers.voting import vote

__all__ = ["PoolOutcome", "build_pool", "drawn_on", "pool_summary"]

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
    code = str(dataset) in CODE_DATASETS
    if code != (sampling.code is not None):
        raise ConfigError(
            f"dataset {dataset!s} is {'a code' if code else 'not a code'} dataset; "
            + ("draw it with --format code" if code else "--format code is for humaneval")
        )
    if code and executor != "local":
        raise ConfigError("code pools are drawn with --executor local (Ray: not yet)")
    problems, info = eval_dataset(dataset, selection)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if stale := discard_partial_writes(out):
        log.info("%s: removed %d partial write(s) of a killed build", out, stale)
    done = pool_problem_ids(out)
    todo = [p for p in problems if p.id not in done]
    skipped = len(problems) - len(todo)
    dataset_info = {
        "name": str(dataset),
        "path": info["path"] if code else portable(dataset_path(dataset)),
        "sha256": info["sha256"],
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
            "format_version": format_version(sampling),
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
        if sampling.execute or sampling.code is not None:
            fresh["sandbox"] = sandbox_record()
        invocation = {
            "command": env["command"],
            "started": env["created"],
            "git": env["git"],
            "executor": executor,
            # a pool resumed on another machine records each host; samples stay comparable
            # because backend and dtype must match (_merge_manifest), but speed does not
            "host": env["host"],
            "problems_before": skipped,
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
                state,
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
            if "seeding" in state:  # what the engine used by the end: it may fall back
                manifest["invocations"][-1]["seeding_at_end"] = state["seeding"]
            atomic_write_text(out / MANIFEST, _dumps(manifest))
    return PoolOutcome(out, len(problems), skipped, state["written"])


def _draw_local(
    todo: list[EvalProblem] | list[CodeProblem],
    sampling: Sampling,
    on_problem: Any,
    start: Any,
    backend: Any,
    backend_name: str,
    backend_options: Mapping[str, Any] | None,
    concurrency: int,
    state: dict[str, Any] | None = None,
) -> None:
    """Draw ``todo`` on one engine in this process, ``concurrency`` problems at a time.
    ``state["seeding"]``: the engine's seeding when done (vLLM on CPU can fall back from
    per-request seeds to the engine seed mid-run; the manifest records it)."""
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

        async def one(p: EvalProblem | CodeProblem) -> None:
            if isinstance(p, CodeProblem):
                on_problem(await draw_code_problem(p, shared, sampling, hardware))
            else:
                on_problem(await draw_problem(p, shared, sampling, hardware, executor))

        async def main() -> None:
            async with Drain(concurrency) as drain:
                await asyncio.gather(*(drain.gated(partial(one, p)) for p in todo))

        asyncio.run(main())
    finally:
        if state is not None:
            state["seeding"] = getattr(gen, "seeding", None)
        if owned:
            asyncio.run(gen.close())


CODE_SELECTS = ("majority", "cluster", "public", "first")
"""The ``code`` strategy's selections a code pool is drawn to replay (pairwise judging and
self-debug rounds send candidate-dependent prompts: live only)."""


class _Recorder:
    """The sandbox, remembering every run by ``source_key``: a source run twice (the
    strategy's four selections share their runs) runs once."""

    name = "sandbox"

    def __init__(self, box: Any) -> None:
        self.box = box
        self.runs: dict[str, ExecResult] = {}

    def run(self, code: str, *, limits: Any = None) -> ExecResult:
        key = source_key(code)
        if key not in self.runs:
            self.runs[key] = self.box.run(code, limits=limits)
        return self.runs[key]

    async def arun(self, code: str, *, limits: Any = None) -> ExecResult:
        key = source_key(code)
        if key not in self.runs:
            self.runs[key] = await self.box.arun(code, limits=limits)
        return self.runs[key]

    async def run_many(self, codes: list[str], *, limits: Any = None) -> list[ExecResult]:
        fresh = [c for c in dict.fromkeys(codes) if source_key(c) not in self.runs]
        if fresh:
            done = await self.box.run_many(fresh, limits=limits)
            self.runs.update({source_key(c): r for c, r in zip(fresh, done, strict=True)})
        return [self.runs[source_key(c)] for c in codes]


class _CodeDraw:
    """The generator the ``code`` strategy runs on while a problem is drawn: the drawn
    samples (and auxiliary prompts already drawn) from a replay of the problem, any other
    prompt from the engine, greedy only, recorded as a ``PoolPrompt``."""

    name = "pool-build"

    def __init__(
        self, replay: ReplayGenerator, live: Any, hardware: Any, executor: _Recorder
    ) -> None:
        self.replay, self.live, self.hardware, self.executor = replay, live, hardware, executor
        self.model_spec = live.model_spec
        self.seeding = getattr(live, "seeding", None)
        self.asked: dict[tuple[int, ...], tuple[str, str | None]] = {}
        self.drawn: list[PoolPrompt] = []

    def render(self, problem: Problem) -> tuple[int, ...]:
        try:
            return self.replay.render(problem)
        except ConfigError:
            ids = tuple(self.live.render(problem))
            self.asked[ids] = (problem.prompt, problem.system_prompt)
            return ids

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.live.encode(text))

    def decode(self, ids: Any) -> str:
        return str(self.live.decode(ids))

    def profile(self) -> dict[str, Any]:
        return dict(self.live.profile())

    async def close(self) -> None:
        return None

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        outs = []
        for r in requests:
            ids = tuple(r.prompt_token_ids)
            if ids not in self.asked:
                outs.append((await self.replay.generate([r]))[0])
                continue
            if r.temperature != 0 or r.stop or r.stop_below is not None or r.prompt_logprobs:
                raise ConfigError(
                    "the code strategy asked for a sampled (not greedy) or stop-string "
                    "completion of another prompt than the samples'; a code pool stores "
                    "greedy auxiliary completions only"
                )
            out = (await self.live.generate([dataclasses.replace(r, n=1)]))[0]
            c = out.completions[0]
            spec = self.model_spec
            text, system = self.asked[ids]
            self.drawn.append(
                PoolPrompt(
                    kind="inputs",
                    user_text=text,
                    system_prompt=system,
                    prompt_token_ids=ids,
                    max_tokens=r.max_tokens,
                    sample=to_pool_sample(
                        c,
                        None,
                        decode=self.live.decode,
                        eflops=0.0
                        if spec is None
                        else sample_eflops(
                            spec,
                            self.hardware,
                            prompt_tokens=len(ids),
                            generated=c.num_tokens,
                            batch=1,
                        ),
                    ),
                    temperature=0.0,
                )
            )
            outs.append(GenerationOutput((c,) * r.n, out.prompt_tokens, out.cached_tokens))
        return outs


async def draw_code_problem(
    p: CodeProblem, generator: Any, sampling: Sampling, hardware: Any
) -> PoolProblem:
    """Draw one code problem's K samples and everything a replay of the ``code`` strategy
    needs (see the module doc)."""
    from ttscale.budget import Budget
    from ttscale.strategies import make_strategy

    settings = sampling.code
    assert settings is not None
    as_eval = EvalProblem(p.id, p.prompt, "")
    drawn = await draw_problem(as_eval, generator, sampling, hardware)
    drawn.gold, drawn.entry_point = None, p.entry_point
    problem = Problem(
        p.prompt, sampling.system_prompt, id=p.id, entry_point=p.entry_point, tests=p.public_tests
    )
    recorder = _Recorder(default_sandbox())
    k = sampling.k
    results = {}
    for select in CODE_SELECTS:
        pool = Pool(
            Path("."), {"name": "drawing", "sampling": sampling.model_dump()}, {p.id: drawn}
        )
        gen = _CodeDraw(ReplayGenerator(pool), generator, hardware, recorder)
        strategy = make_strategy(
            "code",
            n=k,
            round_size=k,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            select=select,
            generated_inputs=settings.generated_inputs,
            debug_rounds=0,
            adaptive=False,
            timeout=settings.timeout,
        )
        results[select] = await strategy.run(problem, gen, None, Budget.parse(None))
        drawn.prompts.extend(gen.drawn)
    cands = results[CODE_SELECTS[0]].candidates
    if len(cands) != len(drawn.samples) or any(
        c.text != s.text for c, s in zip(cands, drawn.samples, strict=False)
    ):
        raise ConfigError(
            f"{p.id}: the code strategy's candidates are not the drawn samples in order; "
            f"the pool cannot pair each sample with its runs"
        )
    programs = [c.program if c.program is not None else c.answer for c in cands]
    graded = [x for x in dict.fromkeys(programs) if x is not None]
    verdicts = await agrade_programs([p] * len(graded), graded) if graded else []
    grade = {x: v.passed for x, v in zip(graded, verdicts, strict=True)}
    drawn.samples = [
        dataclasses.replace(
            s,
            answer=None,
            correct=prog is not None and grade[prog],
            program=prog,
            execution=c.execution,
        )
        for s, c, prog in zip(drawn.samples, cands, programs, strict=True)
    ]
    drawn.runs = dict(recorder.runs)
    return drawn


def pool_summary(pool: Pool) -> dict[str, Any]:
    """pass@k, mean sample accuracy, maj@k (math-verify classes; ``None`` for a code pool,
    whose programs are graded on hidden tests), tokens and the share of samples cut at the
    cap, overall and per level."""

    code = pool.sampling.code is not None  # programs graded on hidden tests: no answer vote

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
            "maj_at_k": None if code else sum(maj) / n,
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


def drawn_on(manifest: Mapping[str, Any]) -> str:
    """Where a pool's samples were drawn: the first host, then any other host a resumed
    invocation recorded, as ``"<cpu model> <isa>"`` joined by commas."""
    resumed = [i.get("host", {}) for i in manifest.get("invocations", [])]
    hosts = [manifest.get("host", {}), *resumed]
    return ", ".join(dict.fromkeys(f"{h['cpu_model']} {h['isa']}" for h in hosts if h))


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
