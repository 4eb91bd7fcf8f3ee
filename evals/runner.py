"""The eval runner: a grid of (problem, strategy, budget, seed) rows, resumable and crash-safe.

``run_eval`` loads a dataset, expands the grid, skips the rows already in
``<out>/rows.jsonl`` and solves the rest with an executor:

- ``local`` (default): one event loop, many problems at once (``asyncio.gather`` under a
  semaphore), one engine wrapped in ``CoalescingGenerator`` so concurrent search steps of
  different problems reach the engine as one large batch;
- ``ray``: Ray actors, each with its own backend (or a client of a shared
  OpenAI-compatible server); see ``ttscale.evals.ray_executor``.

Every finished row is graded against the reference with math-verify
(``ttscale.verifiers.grade``; every candidate too, for pass@k and voting metrics), or, for
a code dataset (``CODE_DATASETS``: ``humaneval``), on the hidden tests in the grading
sandbox (``ttscale.evals.work``: the strategy sees the public tests only), and appended
durably (``RowStore``) by the one driver process, so SIGKILL loses nothing that
was written and a rerun of the same command never duplicates a row. ``run.json`` holds the
reproducibility record (``ttscale.evals.record``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ttscale.budget import Budget
from ttscale.errors import ConfigError
from ttscale.evals.code import (
    CODE_DATASETS,
    CodeProblem,
    code_dataset_path,
    code_dataset_sha256,
)
from ttscale.evals.datasets import (
    EvalProblem,
    Selection,
    dataset_path,
    dataset_sha256,
    load_dataset,
)
from ttscale.evals.record import environment
from ttscale.evals.store import RowStore, atomic_write_text
from ttscale.evals.work import (
    GRADE_TIMEOUT,
    Drain,
    OnRow,
    RunStopped,
    StrategyConfig,
    WorkItem,
    coalesce,
    make_verifier,
    solve_item,
)
from ttscale.pools import ReplayGenerator
from ttscale.pools.replay import CODE_HINT
from ttscale.types import DEFAULT_SYSTEM_PROMPT, PROGRAM_SYSTEM_PROMPT

__all__ = [
    "EXECUTORS",
    "Drain",
    "check_code_replay",
    "eval_dataset",
    "RunOutcome",
    "RunStopped",
    "StrategyConfig",
    "WorkItem",
    "parse_budgets",
    "parse_strategies",
    "replay_selection",
    "run_eval",
    "solve_item",
]

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RUN_FILE = "run.json"


@dataclass(slots=True)
class RunOutcome:
    """What ``run_eval`` did."""

    out: Path
    total: int
    skipped: int
    """Rows already present (resumed)."""
    written: int
    correct: int
    """Correct rows among all ``total`` rows of this grid."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


# -- command-line parsing -------------------------------------------------------------------


def parse_strategies(
    specs: Sequence[str], options: Mapping[str, Any] | None = None
) -> list[StrategyConfig]:
    """``["greedy:best_of_n,beam_search"]`` + ``{"greedy.n": 1, "max_tokens": 512}`` -> configs.

    A spec is ``name`` or ``label:name``, comma-separated or repeated. Option keys are
    ``label.key`` (one strategy) or ``key`` (every strategy that has that field).

    Raises:
        ConfigError: Unknown strategy or option, duplicate label, an option nobody takes.
    """
    from ttscale.strategies import STRATEGIES, make_strategy

    configs: list[tuple[str, str]] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            label, _, name = part.rpartition(":")
            label = label.strip() or name.strip()
            name = name.strip()
            if name not in STRATEGIES:
                raise ConfigError(
                    f"unknown strategy {name!r} in --strategy; choose from {', '.join(STRATEGIES)} "
                    f"(optionally as label:name, e.g. greedy:best_of_n)"
                )
            if any(label == lab for lab, _ in configs):
                raise ConfigError(f"strategy label {label!r} given twice; use label:name")
            configs.append((label, name))
    if not configs:
        raise ConfigError("no strategy given; pass --strategy best_of_n (comma-separated list)")
    per: dict[str, dict[str, Any]] = {label: {} for label, _ in configs}
    no_verifier: set[str] = set()
    used: set[str] = set()
    for key, value in (options or {}).items():
        if key == "seed" or key.endswith(".seed"):
            raise ConfigError("the strategy seed comes from --seeds (seed 0..N-1 per row)")
        scope, dot, opt = key.partition(".")
        if dot and opt == "verifier" and scope in per:
            if value not in (False, None, "false", "none", "off", True, "true", "on"):
                raise ConfigError(f"{key}={value!r}: use {key}=false to run it without a verifier")
            if value in (False, None, "false", "none", "off"):
                no_verifier.add(scope)
            used.add(key)
            continue
        if dot:
            if scope not in per:
                raise ConfigError(
                    f"option {key!r} names no strategy label; labels: {', '.join(per)}"
                )
            per[scope][opt] = value
            used.add(key)
            continue
        for label, name in configs:
            if any(f.name == key for f in dataclasses.fields(STRATEGIES[name])):
                per[label].setdefault(key, value)
                used.add(key)
    unused = sorted(set(options or {}) - used)
    if unused:
        raise ConfigError(
            f"option {unused[0]!r} is not a field of any chosen strategy "
            f"({', '.join(n for _, n in configs)}); scope it as label.{unused[0]}"
        )
    out = []
    for label, name in configs:
        make_strategy(name, **per[label])  # validates names and values now, not mid-run
        out.append(StrategyConfig(label, name, per[label], label not in no_verifier))
    return out


def parse_budgets(specs: Sequence[str] | str) -> list[Budget]:
    """Several budgets from ``"tokens=2000,tokens=8000"``, ``"2000,8000"`` (tokens) or
    ``"tokens=4k,seconds=60;tokens=16k,seconds=60"``.

    Budgets are split on ``;`` and wherever a unit repeats, so a budget with several caps
    stays whole. Duplicates are dropped (order kept).
    """
    if isinstance(specs, str):
        specs = [specs]
    groups: list[list[str]] = []
    for spec in specs:
        for chunk in spec.split(";"):
            current: list[str] = []
            units: set[str] = set()
            for raw in chunk.split(","):
                part = raw.strip()
                if not part:
                    continue
                if "=" not in part:
                    part = f"tokens={part}"
                unit = part.partition("=")[0].strip().lower()
                if unit in units:
                    groups.append(current)
                    current, units = [], set()
                current.append(part)
                units.add(unit)
            if current:
                groups.append(current)
    if not groups:
        raise ConfigError("no budget given; pass e.g. --budget tokens=2000,tokens=8000")
    budgets = [Budget.parse(",".join(g)) for g in groups]
    return list({str(b): b for b in budgets}.values())


def is_code_dataset(dataset: str | Path | None) -> bool:
    """A code dataset (``CODE_DATASETS``), graded on hidden tests."""
    return dataset is not None and str(dataset) in CODE_DATASETS


def eval_dataset(
    dataset: str | Path, selection: Selection | None = None
) -> tuple[list[EvalProblem] | list[CodeProblem], dict[str, Any]]:
    """The selected problems of a math or code dataset and its provenance record."""
    selection = selection or Selection()
    if is_code_dataset(dataset):
        problems: list[EvalProblem] | list[CodeProblem] = CODE_DATASETS[str(dataset)](selection)
        path, sha = code_dataset_path(str(dataset)), code_dataset_sha256(str(dataset))
    else:
        problems = load_dataset(dataset, selection)
        path, sha = str(dataset_path(dataset)), dataset_sha256(dataset)
    info = {
        "name": str(dataset),
        "path": path,
        "sha256": sha,
        "selection": dataclasses.asdict(selection),
        "problem_ids": [p.id for p in problems],
    }
    return problems, info


def _sha256(dataset: str | Path) -> str:
    return (
        code_dataset_sha256(str(dataset)) if is_code_dataset(dataset) else dataset_sha256(dataset)
    )


def check_code_replay(configs: Sequence[StrategyConfig], generator: ReplayGenerator) -> None:
    """Refuse, before any row runs, a ``code`` strategy a code pool cannot replay exactly:
    pairwise judging or self-debug rounds (their prompts depend on the candidates drawn),
    or other ``generated_inputs``/``timeout`` than the pool's runs were made with.

    Raises:
        ConfigError: Names the option and the fix (the pool's value, or a live backend).
    """
    from ttscale.strategies import make_strategy

    code_pools = [pl for pl in generator.pools if pl.sampling.code is not None]
    for c in configs:
        if c.name != "code":
            continue
        runner = make_strategy(c.name, **c.options_for(0))
        select = getattr(runner, "select", None)
        live = generator.live is not None  # pairwise and debug prompts are generated live
        if not live and (select == "pairwise" or getattr(runner, "debug_rounds", 0)):
            what = "select=pairwise" if select == "pairwise" else "debug_rounds > 0"
            raise ConfigError(f"strategy {c.label!r} ({what}) cannot be replayed: {CODE_HINT}")
        clusters = (
            getattr(runner, "select", None) in ("majority", "cluster", "pairwise")
            and getattr(runner, "n", 1) >= 2
            and getattr(runner, "temperature", 0) > 0
        )
        for pl in code_pools:
            settings = pl.sampling.code
            assert settings is not None
            checked = [("timeout", settings.timeout)]
            if clusters:  # only clustering asks for inputs and runs behaviour harnesses
                checked.append(("generated_inputs", settings.generated_inputs))
            for opt, drawn in checked:
                if getattr(runner, opt, drawn) != drawn:
                    raise ConfigError(
                        f"strategy {c.label!r} has {opt}={getattr(runner, opt)!r}, but pool "
                        f"{pl.name!r} ran its tests with {opt}={drawn!r}; pass "
                        f"-o {c.label}.{opt}={drawn} to replay it exactly (or run live)"
                    )


def replay_selection(
    pool_dir: Path, dataset: str | None, selection: Selection
) -> tuple[str, Selection]:
    """Dataset and problems of a replay eval: the pool's own unless the user chose others
    (then every chosen problem must be in the pool).

    Raises:
        ConfigError: The pool lacks a selected problem, or was drawn from another dataset.
    """
    from ttscale.pools.pool import pool_problem_ids, read_manifest

    manifest = read_manifest(pool_dir)
    pooled = manifest["dataset"]["name"]
    if dataset is not None and _sha256(dataset) != manifest["dataset"]["sha256"]:
        raise ConfigError(
            f"--dataset {dataset} is not the dataset pool {pool_dir} was drawn from ({pooled}); "
            f"leave --dataset out to use the pool's"
        )
    have = pool_problem_ids(pool_dir)
    if selection == Selection():
        order = [i for i in manifest["dataset"]["problem_ids"] if i in have]
        return pooled, Selection(ids=tuple(order))
    missing = [p.id for p in eval_dataset(pooled, selection)[0] if p.id not in have]
    if missing:
        raise ConfigError(
            f"pool {pool_dir} has no samples for {len(missing)} selected problem(s), e.g. "
            f"{missing[0]!r}; select problems it holds (or resume its build)"
        )
    return pooled, selection


def build_grid(
    problems: Sequence[EvalProblem] | Sequence[CodeProblem],
    configs: Sequence[StrategyConfig],
    budgets: Sequence[Budget],
    seeds: Iterable[int],
) -> list[WorkItem]:
    """Every (problem, strategy, budget, seed), problem-major so progress is representative."""
    seeds = list(seeds)
    return [
        WorkItem(p, c, str(b), s) for p in problems for c in configs for b in budgets for s in seeds
    ]


async def run_local(
    items: Sequence[WorkItem],
    generator: Any,
    on_row: OnRow,
    *,
    verifier: Any = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    concurrency: int = 16,
    generator_for: Callable[[WorkItem], Any] | None = None,
    grade_timeout: float = GRADE_TIMEOUT,
) -> None:
    """Solve ``items`` concurrently on one (coalescing) backend; ``on_row`` as each finishes.

    ``generator_for(item)``, when given, picks each row's generator instead (replay: every
    row gets its own view of the pool, in its seed's order).

    Raises:
        RunStopped: A SIGINT/SIGTERM drained the run (see ``Drain``).
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency={concurrency} must be >= 1")
    pick = generator_for or (lambda _item: generator)

    async def one(item: WorkItem) -> tuple[WorkItem, dict[str, Any], dict[str, Any]]:
        row, trace = await solve_item(
            item, pick(item), verifier, system_prompt, grade_timeout=grade_timeout
        )
        return item, row, trace

    async with Drain(concurrency) as drain:
        tasks = [asyncio.ensure_future(drain.gated(partial(one, i))) for i in items]
        try:
            for fut in asyncio.as_completed(tasks):
                done = await fut
                if done is not None:
                    on_row(*done)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


# -- the run ---------------------------------------------------------------------------------


class _Progress:
    """tqdm bar on stderr with ETA and running accuracy over every row of the grid so far."""

    def __init__(self, total: int, done: Iterable[Mapping[str, Any]], enabled: bool) -> None:
        from tqdm.auto import tqdm

        done = list(done)
        self.n = len(done)
        self.correct = sum(bool(r["correct"]) for r in done)
        self.bar = tqdm(
            total=total,
            initial=self.n,
            disable=not enabled,
            file=sys.stderr,
            unit="row",
            dynamic_ncols=True,
            desc="eval",
        )
        self._postfix()

    def _postfix(self) -> None:
        if self.n:
            self.bar.set_postfix(acc=f"{self.correct / self.n:.3f}", refresh=False)

    def update(self, row: Mapping[str, Any]) -> None:
        self.n += 1
        self.correct += bool(row["correct"])
        self._postfix()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _merge_record(
    out: Path,
    *,
    dataset: dict[str, Any],
    configs: Sequence[StrategyConfig],
    budgets: Sequence[Budget],
    seeds: Sequence[int],
    settings: dict[str, Any],
    env: dict[str, Any],
) -> dict[str, Any]:
    """New or resumed ``run.json``; refuses to mix datasets, models or strategy meanings."""
    path = out / RUN_FILE
    invocation = {
        "command": env["command"],
        "started": env["created"],
        "git": env["git"],
        "strategies": [c.label for c in configs],
        "budgets": [str(b) for b in budgets],
        "seeds": list(seeds),
        **settings,
    }
    strategies = {c.label: c.to_dict() for c in configs}
    if not path.exists():
        return {
            "name": out.name,
            "dataset": dataset,
            "strategies": strategies,
            "budgets": [str(b) for b in budgets],
            "seeds": list(seeds),
            "system_prompt": settings.get("system_prompt"),
            "verifier": settings.get("verifier"),
            "verifier_options": settings.get("verifier_options"),
            "environment": env,
            "invocations": [invocation],
        }
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); use a new --out directory") from None

    def clash(what: str, old: Any, new: Any) -> ConfigError:
        return ConfigError(
            f"{out} holds a run with {what} {old!r}, not {new!r}; rows would mix. "
            f"Use a new --out directory (or the original settings to resume)"
        )

    if record["dataset"]["sha256"] != dataset["sha256"]:
        raise clash("dataset", record["dataset"]["name"], dataset["name"])
    for k in ("backend", "model", "dtype"):
        old, new = record["environment"]["engine"].get(k), env["engine"].get(k)
        if old != new:
            raise clash(f"engine {k}", old, new)
    for k in ("system_prompt", "verifier", "verifier_options"):
        if record.get(k, {} if k == "verifier_options" else None) != settings.get(k):
            raise clash(k, record.get(k), settings.get(k))
    for label, cfg in strategies.items():
        old = record["strategies"].get(label)
        if old is not None and old != cfg:
            raise clash(f"strategy {label!r} =", old, cfg)
        record["strategies"][label] = cfg
    record["budgets"] = list(dict.fromkeys([*record["budgets"], *map(str, budgets)]))
    record["seeds"] = sorted({*record["seeds"], *seeds})
    problems = {*record["dataset"].get("problem_ids", []), *dataset["problem_ids"]}
    record["dataset"]["problem_ids"] = sorted(problems)
    record["invocations"].append(invocation)
    return record


def run_eval(
    dataset: str | Path,
    strategies: Sequence[StrategyConfig],
    budgets: Sequence[Budget | str],
    *,
    out: str | Path,
    seeds: int | Sequence[int] = 1,
    selection: Selection | None = None,
    backend: Any = None,
    backend_name: str = "vllm",
    backend_options: Mapping[str, Any] | None = None,
    verifier: str | None = None,
    verifier_options: Mapping[str, Any] | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    executor: str = "local",
    concurrency: int = 16,
    workers: int = 2,
    ray_address: str | None = None,
    ray_init: Mapping[str, Any] | None = None,
    gpus_per_worker: float = 0.0,
    progress: bool = True,
    argv: list[str] | None = None,
    traces: bool = True,
    grade_timeout: float = GRADE_TIMEOUT,
) -> RunOutcome:
    """Run (or resume) an eval grid into ``out``.

    Args:
        dataset: Packaged name (``math500``...), a JSONL path, or a code dataset
            (``humaneval``: each problem reaches the strategy with its entry point and public
            tests; programs are graded on the hidden tests).
        strategies: From ``parse_strategies``.
        budgets: ``Budget`` objects or strings.
        out: Run directory (``rows.jsonl``, ``traces/``, ``run.json``).
        seeds: Number of seeds (0..N-1) or explicit seeds; each is the strategy's ``seed``.
        backend: For ``local``: a ``Generator`` instance (not closed here), or a zero-argument
            callable that builds one (called only if a row is left to run; closed after);
            ``None`` builds one from ``backend_name``/``backend_options``. ``ray`` workers
            always build their own from the name and options.
        verifier: Registry name or PRM path; ``llm_judge`` judges with the run's backend.
        executor: ``local`` or ``ray``.
        concurrency: Rows in flight per event loop (the local one or each Ray worker).
        workers, ray_address, ray_init, gpus_per_worker: Ray settings (see README).
        argv: Command line for ``run.json`` (default ``sys.argv``).
        traces: Write each row's full trace (candidate texts, search steps) to ``traces/``.
            Replay grids of many thousand rows can skip them: the pool reproduces them.
        grade_timeout: Code datasets: CPU seconds of a program's hidden tests.

    Raises:
        ConfigError: Bad dataset/options, or ``out`` holds a different run.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    selection = selection or Selection()
    problems, ds = eval_dataset(dataset, selection)
    if is_code_dataset(dataset) and system_prompt == DEFAULT_SYSTEM_PROMPT:
        system_prompt = PROGRAM_SYSTEM_PROMPT  # the math default asks for \boxed{} answers
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ConfigError("seeds must be >= 1")
    parsed = [Budget.parse(b) for b in budgets]
    if not parsed:
        raise ConfigError("no budget given")
    items = build_grid(problems, strategies, parsed, seed_list)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "executor": executor,
        "concurrency": concurrency,
        "system_prompt": system_prompt,
        "verifier": verifier,
        "verifier_options": dict(verifier_options or {}),
        "backend_options": {k: v for k, v in (backend_options or {}).items() if k != "script"},
        **({"workers": workers, "ray_address": ray_address} if executor == "ray" else {}),
        **({"grade_timeout": grade_timeout} if is_code_dataset(dataset) else {}),
    }
    with RowStore(out) as store:
        todo = [i for i in items if i.key not in store.rows]
        done_rows = [store.rows[i.key] for i in items if i.key in store.rows]
        log.info("%s: %d rows, %d done, %d to run", out, len(items), len(done_rows), len(todo))
        bar: _Progress | None = None

        def on_row(item: WorkItem, row: dict[str, Any], trace: dict[str, Any]) -> None:
            store.append(row, trace if traces else None)
            if bar is not None:
                bar.update(row)

        def start(profile: dict[str, Any]) -> None:
            nonlocal bar
            env = environment(profile, argv)
            record = _merge_record(
                out,
                dataset=ds,
                configs=strategies,
                budgets=parsed,
                seeds=seed_list,
                settings=settings,
                env=env,
            )
            atomic_write_text(out / RUN_FILE, json.dumps(record, indent=2, default=str))
            bar = _Progress(len(items), done_rows, progress)

        previous = _read_json(out / RUN_FILE)
        if previous is not None:  # refuse a mismatched resume before loading any engine
            _merge_record(
                out,
                dataset=ds,
                configs=strategies,
                budgets=parsed,
                seeds=seed_list,
                settings=settings,
                env={**previous["environment"], "git": None},
            )
        try:
            if not todo and previous is not None:
                start(previous["environment"]["engine"])  # nothing to run: load no engine
            elif executor == "local":
                _execute_local(
                    todo,
                    on_row,
                    start,
                    backend=backend,
                    backend_name=backend_name,
                    backend_options=backend_options,
                    verifier=verifier,
                    verifier_options=verifier_options,
                    system_prompt=system_prompt,
                    concurrency=concurrency,
                    grade_timeout=grade_timeout,
                    configs=strategies,
                )
            else:
                from ttscale.evals.ray_executor import run_ray

                run_ray(
                    todo,
                    on_row,
                    start,
                    backend_name=backend_name,
                    backend_options=dict(backend_options or {}),
                    verifier=verifier,
                    verifier_options=dict(verifier_options or {}),
                    system_prompt=system_prompt,
                    workers=workers,
                    concurrency=concurrency,
                    address=ray_address,
                    init=dict(ray_init or {}),
                    gpus_per_worker=gpus_per_worker,
                )
        finally:
            if bar is not None:
                bar.close()
            _finish_record(out, store)
        rows = [store.rows[i.key] for i in items if i.key in store.rows]
        return RunOutcome(
            out=out,
            total=len(items),
            skipped=len(done_rows),
            written=len(rows) - len(done_rows),
            correct=sum(bool(r["correct"]) for r in rows),
        )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _finish_record(out: Path, store: RowStore) -> None:
    path = out / RUN_FILE
    record = _read_json(path)
    if record is None:
        return
    inv = record["invocations"][-1]
    inv["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    inv["rows_after"] = len(store.rows)
    atomic_write_text(path, json.dumps(record, indent=2, default=str))


def _execute_local(
    todo: Sequence[WorkItem],
    on_row: OnRow,
    start: Callable[[dict[str, Any]], None],
    *,
    backend: Any,
    backend_name: str,
    backend_options: Mapping[str, Any] | None,
    verifier: str | None,
    verifier_options: Mapping[str, Any] | None,
    system_prompt: str | None,
    concurrency: int,
    grade_timeout: float = GRADE_TIMEOUT,
    configs: Sequence[StrategyConfig] = (),
) -> None:
    from ttscale.backends import make_backend

    owned = not hasattr(backend, "generate")  # None or a factory: we build it, we close it
    if backend is None:
        gen = make_backend(backend_name, **dict(backend_options or {}))
    else:
        gen = backend() if owned else backend
    try:
        replay = isinstance(gen, ReplayGenerator)
        if replay:
            check_code_replay(configs, gen)  # before run.json records this run
        start(gen.profile())
        # Replay has no engine to share; each row replays the pool in its own seed's order.
        shared = gen if replay else coalesce(gen)
        judge = make_verifier(verifier, shared, verifier_options)
        if todo:
            asyncio.run(
                run_local(
                    todo,
                    shared,
                    on_row,
                    generator_for=(lambda item: gen.fork(item.seed)) if replay else None,
                    verifier=judge,
                    system_prompt=system_prompt,
                    concurrency=concurrency,
                    grade_timeout=grade_timeout,
                )
            )
    finally:
        if owned:
            asyncio.run(gen.close())
