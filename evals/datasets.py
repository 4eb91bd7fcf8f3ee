"""Benchmark datasets: the packaged files (with provenance) and any user JSONL.

Packaged (``evals/data/``, see its ``SOURCES.md`` for upstream commits, licences and
sha256 of every file): ``math500``, ``aime24``, ``amc23``, ``gsm8k`` and ``math_train200``
(a stratified MATH-train sample for calibration). Any other JSONL file with ``problem``
and ``answer`` fields works too; ``id``, ``level`` and ``subject`` are optional.

Selection order is fixed so a slice is reproducible: filter (``ids``, ``levels``,
``subjects``), then sample (``sample`` problems drawn with ``random.Random(seed)``,
stratified by level when asked), then ``limit`` (the first N).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError

__all__ = [
    "DATASETS",
    "EvalProblem",
    "Selection",
    "dataset_sha256",
    "level_round_robin",
    "load_dataset",
    "round_robin_by_level",
    "select",
]

DATASETS: dict[str, str] = {
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "amc23": "amc23.jsonl",
    "gsm8k": "gsm8k_test.jsonl",
    "math_train200": "math_train200.jsonl",
}
"""Packaged dataset name -> file in ``ttscale/evals/data``."""


@dataclass(frozen=True, slots=True)
class EvalProblem:
    """One benchmark problem with its reference answer (never shown to a strategy)."""

    id: str
    problem: str
    answer: str
    level: int | None = None
    subject: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which problems of a dataset to run; recorded in ``run.json``."""

    limit: int | None = None
    levels: tuple[int, ...] = ()
    subjects: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    sample: int | None = None
    """Draw this many problems (after filters) with ``random.Random(seed)``."""
    seed: int = 0
    stratify: bool = False
    """Draw the sample evenly across levels (the remainder to the lowest levels)."""
    extra: dict[str, Any] = field(default_factory=dict)


def dataset_path(name_or_path: str | Path) -> Path:
    """Path of a packaged dataset name, or the given file.

    Raises:
        ConfigError: Neither a packaged name nor an existing file.
    """
    key = str(name_or_path)
    if key in DATASETS:
        return Path(str(resources.files("ttscale.evals") / "data" / DATASETS[key]))
    path = Path(key).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"dataset {key!r} is neither a packaged dataset ({', '.join(DATASETS)}) nor an "
            f"existing JSONL file; pass one of those names or a path to a .jsonl file"
        )
    return path


def dataset_sha256(name_or_path: str | Path) -> str:
    return hashlib.sha256(dataset_path(name_or_path).read_bytes()).hexdigest()


def load_dataset(name_or_path: str | Path, selection: Selection | None = None) -> list[EvalProblem]:
    """Load a packaged dataset by name or a JSONL file, then apply ``selection``.

    Raises:
        ConfigError: Bad file (naming the file and line: not JSON, not an object, missing or
            empty ``problem``/``answer``, duplicate ``id``, non-integer ``level``), a filter
            that matches nothing, or unknown ``ids``.
    """
    path = dataset_path(name_or_path)
    problems = _read(path)
    return select(problems, selection or Selection(), source=str(path))


def _read(path: Path) -> list[EvalProblem]:
    out: list[EvalProblem] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be "
                f'one JSON object like {{"problem": "...", "answer": "..."}}'
            ) from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        for key in ("problem", "answer"):
            value = obj.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and key == "answer":
                value = obj[key] = str(value)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"{where}: field {key!r} is missing or empty (got {value!r}); every line "
                    f"needs non-empty 'problem' and 'answer' strings"
                )
        pid = str(obj.get("id", f"{path.stem}-{lineno}"))
        if pid in seen:
            raise ConfigError(f"{where}: duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = lineno
        level = obj.get("level")
        if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
            try:
                level = int(str(level).removeprefix("Level ").strip())
            except ValueError:
                raise ConfigError(f"{where}: 'level' must be an integer, got {level!r}") from None
        out.append(
            EvalProblem(
                id=pid,
                problem=obj["problem"],
                answer=obj["answer"],
                level=level,
                subject=obj.get("subject"),
                source=obj.get("source"),
            )
        )
    if not out:
        raise ConfigError(f"{path}: no problems (the file is empty)")
    return out


def select(
    problems: Sequence[EvalProblem], sel: Selection, *, source: str = "dataset"
) -> list[EvalProblem]:
    """Apply filters, then seeded (optionally level-stratified) sampling, then ``limit``."""
    chosen = list(problems)
    if sel.ids:
        by_id = {p.id: p for p in chosen}
        missing = [i for i in sel.ids if i not in by_id]
        if missing:
            raise ConfigError(
                f"{source}: unknown id(s) {missing[:3]}; ids look like {chosen[0].id!r}"
            )
        chosen = [by_id[i] for i in dict.fromkeys(sel.ids)]
    if sel.levels:
        chosen = [p for p in chosen if p.level in sel.levels]
    if sel.subjects:
        wanted = {s.lower() for s in sel.subjects}
        chosen = [p for p in chosen if (p.subject or "").lower() in wanted]
    if not chosen:
        raise ConfigError(
            f"{source}: no problem matches levels={list(sel.levels)} "
            f"subjects={list(sel.subjects)}; levels present: {_present(problems, 'level')}, "
            f"subjects: {_present(problems, 'subject')}"
        )
    if sel.sample is not None:
        if sel.sample < 1:
            raise ConfigError(f"sample={sel.sample} must be >= 1")
        chosen = _sample(chosen, sel.sample, sel.seed, sel.stratify)
    if sel.limit is not None:
        if sel.limit < 1:
            raise ConfigError(f"limit={sel.limit} must be >= 1")
        chosen = chosen[: sel.limit]
    return chosen


def _present(problems: Iterable[EvalProblem], attr: str) -> list[Any]:
    return sorted({getattr(p, attr) for p in problems if getattr(p, attr) is not None}, key=str)


def _sample(pool: list[EvalProblem], n: int, seed: int, stratify: bool) -> list[EvalProblem]:
    rng = random.Random(seed)
    if n >= len(pool):
        return pool
    if not stratify:
        return rng.sample(sorted(pool, key=lambda p: p.id), n)
    strata: dict[Any, list[EvalProblem]] = {}
    for p in sorted(pool, key=lambda p: p.id):
        strata.setdefault(p.level, []).append(p)
    keys = sorted(strata, key=lambda k: (k is None, k if k is not None else 0))
    # Even allocation, capped by each stratum's size; leftovers go to strata with room.
    quota = dict.fromkeys(keys, 0)
    left = n
    while left:
        open_keys = [k for k in keys if quota[k] < len(strata[k])]
        for k in open_keys[:left]:
            quota[k] += 1
            left -= 1
    out: list[EvalProblem] = []
    for k in keys:
        out.extend(rng.sample(strata[k], quota[k]))
    return out


def level_round_robin(
    name_or_path: str | Path, count: int, levels: Sequence[int]
) -> list[dict[str, Any]]:
    """The benchmarks' fixed slice: raw rows taken round-robin over ``levels`` in file order.

    Deterministic without a seed (first row of each level, then the second, ...), so the
    benchmark scripts that share it (``strategies``, ``tree_search``) see the same problems.
    """
    path = dataset_path(name_or_path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not any(r.get("level") in levels for r in rows):
        raise ConfigError(f"{path}: no rows at levels {list(levels)}")
    return round_robin_by_level(rows, count, levels)


def round_robin_by_level(
    rows: Sequence[dict[str, Any]], count: int, levels: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Up to ``count`` rows taken round-robin over ``levels`` (default: every level present,
    ascending), in the given order within a level: a small head of a level-sorted file that
    still covers every difficulty (``ttscale calibrate --limit``)."""
    if count < 1:
        raise ConfigError(f"count {count}: take at least one problem")
    if levels is None:
        levels = sorted({r["level"] for r in rows if isinstance(r.get("level"), int)})
    by_level = {lv: [r for r in rows if r.get("level") == lv] for lv in levels}
    picked: list[dict[str, Any]] = []
    for i in range(max((len(v) for v in by_level.values()), default=0)):
        for lv in levels:
            if i < len(by_level[lv]) and len(picked) < count:
                picked.append(by_level[lv][i])
    return picked
