"""Calibration vs evaluation splits for the allocator, kept disjoint by a check in code.

The policy (``allocation.policy``) is fitted on ``math_train200`` (200 MATH *train* problems,
40 per level) and evaluated on a held-out, level-stratified part of MATH-500 (MATH *test*).
``assert_disjoint`` compares ids and whitespace-normalised problem texts and raises
``ConfigError`` on any overlap; ``evaluation_slice`` calls it against the calibration split
and against the problems a policy was actually fitted on, so an evaluation can never report
numbers on problems the policy has seen.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError

__all__ = [
    "CALIBRATION_SPLIT",
    "EVALUATION_SPLIT",
    "assert_disjoint",
    "evaluation_slice",
    "load_split",
]

CALIBRATION_SPLIT = "math_train200"
EVALUATION_SPLIT = "math500"
_FILES = {"math_train200": "math_train200.jsonl", "math500": "math500.jsonl"}


def _candidates(filename: str) -> list[Path]:
    paths = []
    try:
        paths.append(Path(str(resources.files("ttscale.evals") / "data" / filename)))
    except (ModuleNotFoundError, TypeError):
        pass
    if os.environ.get("TTSCALE_DATA"):
        paths.append(Path(os.environ["TTSCALE_DATA"]) / filename)
    paths.append(Path(__file__).resolve().parents[2] / "shared" / "data" / filename)
    return paths


def load_split(name: str) -> list[dict[str, Any]]:
    """Rows (``id``, ``problem``, ``answer``, ``level``...) of ``math_train200`` or ``math500``.

    Looked up in the packaged ``ttscale/evals/data``, then ``$TTSCALE_DATA``.

    Raises:
        ConfigError: Unknown split or file not found, naming where it was looked for.
    """
    if name not in _FILES:
        raise ConfigError(f"unknown split {name!r}; use {' or '.join(_FILES)}")
    for path in _candidates(_FILES[name]):
        if path.is_file():
            return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    raise ConfigError(
        f"split {name!r} not found (looked in {[str(p) for p in _candidates(_FILES[name])]}); "
        f"set TTSCALE_DATA to a folder holding {_FILES[name]}"
    )


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def assert_disjoint(
    calibration: Iterable[Mapping[str, Any] | str],
    evaluation: Iterable[Mapping[str, Any] | str],
) -> None:
    """Raise ``ConfigError`` if any evaluation problem is also a calibration problem.

    Items are rows (``id`` and ``problem`` compared) or bare ids.
    """
    cal_ids, cal_texts = set(), set()
    for r in calibration:
        if isinstance(r, str):
            cal_ids.add(r)
        else:
            cal_ids.add(str(r.get("id")))
            if r.get("problem"):
                cal_texts.add(_norm(r["problem"]))
    clash = []
    for r in evaluation:
        rid = r if isinstance(r, str) else str(r.get("id"))
        text = None if isinstance(r, str) else r.get("problem")
        if rid in cal_ids or (text and _norm(text) in cal_texts):
            clash.append(rid)
    if clash:
        raise ConfigError(
            f"{len(clash)} evaluation problem(s) also appear in the calibration data "
            f"(e.g. {clash[0]!r}); evaluate on held-out problems only (evaluation_slice) "
            f"or refit the policy without them"
        )


def evaluation_slice(
    n: int,
    *,
    seed: int = 0,
    levels: Iterable[int] = (1, 2, 3, 4, 5),
    policy_problem_ids: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """``n`` MATH-500 problems stratified by level (round-robin over levels, seeded), checked
    disjoint from the calibration split and from ``policy_problem_ids``."""
    rows = load_split(EVALUATION_SPLIT)
    levels = list(levels)
    rng = random.Random(seed)
    pools = {
        lv: sorted((r for r in rows if r.get("level") == lv), key=lambda r: r["id"])
        for lv in levels
    }
    for pool in pools.values():
        rng.shuffle(pool)
    picked: list[dict[str, Any]] = []
    i = 0
    while len(picked) < n and any(i < len(p) for p in pools.values()):
        for lv in levels:
            if i < len(pools[lv]) and len(picked) < n:
                picked.append(pools[lv][i])
        i += 1
    assert_disjoint(load_split(CALIBRATION_SPLIT), picked)
    assert_disjoint(list(policy_problem_ids), picked)
    return picked
