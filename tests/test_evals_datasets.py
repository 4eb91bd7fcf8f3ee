"""Eval datasets: packaged files match their recorded provenance, filters and seeded
(stratified) sampling are deterministic, and a bad user file fails naming file and line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from importlib import resources

import pytest

from ttscale.errors import ConfigError
from ttscale.evals.datasets import (
    DATASETS,
    Selection,
    dataset_sha256,
    level_round_robin,
    load_dataset,
    round_robin_by_level,
)


def _sources_table() -> dict[str, tuple[int, str]]:
    text = (resources.files("ttscale.evals") / "data" / "SOURCES.md").read_text()
    rows = re.findall(r"\| `([\w.]+\.jsonl)` \| (\d+) \| `([0-9a-f]{64})` \|", text)
    return {name: (int(n), sha) for name, n, sha in rows}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_packaged_dataset_matches_sources_md(name):
    expected_rows, expected_sha = _sources_table()[DATASETS[name]]
    problems = load_dataset(name)
    assert len(problems) == expected_rows
    assert dataset_sha256(name) == expected_sha
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.problem.strip() and p.answer.strip() for p in problems)


def test_math500_fields_and_level_filter():
    problems = load_dataset("math500", Selection(levels=(5,), subjects=("algebra",)))
    assert problems and all(p.level == 5 and p.subject == "Algebra" for p in problems)
    one = load_dataset("math500", Selection(ids=("test/precalculus/807.json",)))
    assert [p.answer for p in one] == ["\\left( 3, \\frac{\\pi}{2} \\right)"]


def test_stratified_sample_is_even_and_deterministic():
    a = load_dataset("math500", Selection(sample=50, seed=0, stratify=True))
    b = load_dataset("math500", Selection(sample=50, seed=0, stratify=True))
    c = load_dataset("math500", Selection(sample=50, seed=1, stratify=True))
    assert [p.id for p in a] == [p.id for p in b]
    assert [p.id for p in a] != [p.id for p in c]
    assert Counter(p.level for p in a) == {1: 10, 2: 10, 3: 10, 4: 10, 5: 10}
    # 7 over 5 levels: one each, the two extra to the lowest levels.
    small = load_dataset("math500", Selection(sample=7, stratify=True))
    assert Counter(p.level for p in small) == {1: 2, 2: 2, 3: 1, 4: 1, 5: 1}


def test_limit_applies_after_sampling():
    sampled = load_dataset("gsm8k", Selection(sample=20, seed=3))
    limited = load_dataset("gsm8k", Selection(sample=20, seed=3, limit=5))
    assert [p.id for p in limited] == [p.id for p in sampled[:5]]
    assert [p.id for p in load_dataset("aime24", Selection(limit=2))] == [
        "aime24-I-01",
        "aime24-I-02",
    ]


def test_user_jsonl(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(
        json.dumps({"problem": "What is 2+2?", "answer": 4})
        + "\n\n"
        + json.dumps({"id": "x", "problem": "3*3?", "answer": "9", "level": "Level 2"})
        + "\n"
    )
    problems = load_dataset(f)
    assert [(p.id, p.answer, p.level) for p in problems] == [("mine-1", "4", None), ("x", "9", 2)]


@pytest.mark.parametrize(
    ("lines", "lineno", "needle"),
    [
        (['{"problem": "a", "answer": "1"}', '{"problem": "b", "answer": '], 2, "not valid JSON"),
        (['{"problem": "a", "answer": "1"}', '{"question": "b", "answer": "2"}'], 2, "'problem'"),
        (['{"problem": "a", "answer": ""}'], 1, "'answer'"),
        (['["problem", "answer"]'], 1, "expected a JSON object"),
        (
            [
                '{"id": 1, "problem": "a", "answer": "1"}',
                '{"id": 1, "problem": "b", "answer": "2"}',
            ],
            2,
            "duplicate id",
        ),
        (['{"problem": "a", "answer": "1", "level": "hard"}'], 1, "'level'"),
    ],
)
def test_bad_file_names_file_and_line(tmp_path, lines, lineno, needle):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_dataset(f)
    msg = str(info.value)
    assert f"{f}:{lineno}:" in msg and needle in msg


def test_filters_that_match_nothing_or_unknown_ids():
    with pytest.raises(ConfigError, match="levels present"):
        load_dataset("aime24", Selection(levels=(3,)))
    with pytest.raises(ConfigError, match="unknown id"):
        load_dataset("amc23", Selection(ids=("nope",)))
    with pytest.raises(ConfigError, match="neither a packaged dataset"):
        load_dataset("no-such-dataset")


def test_cli_bad_dataset_line_exit_2(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"problem": "What is 1+1?", "answer": "2"}\n{not json}\n')
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "ttscale.cli",
            "eval",
            "--dataset",
            str(f),
            "--backend",
            "scripted",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert f"{f}:2: not valid JSON" in p.stderr and "Traceback" not in p.stderr


def test_level_round_robin_is_the_fixed_benchmark_slice():
    rows = level_round_robin("math_train200", 7, [3, 4, 5])
    assert [r["level"] for r in rows] == [3, 4, 5, 3, 4, 5, 3]
    assert len({r["id"] for r in rows}) == 7
    assert rows == level_round_robin("math_train200", 7, [3, 4, 5])  # no seed: fixed


def test_level_round_robin_no_rows_at_levels(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"problem": "p", "answer": "1", "level": 1}\n')
    with pytest.raises(ConfigError, match="no rows at levels"):
        level_round_robin(f, 3, [5])


def test_round_robin_by_level_covers_every_level_of_a_sorted_file():
    rows = [{"id": f"{lv}-{i}", "level": lv} for lv in (1, 2, 3) for i in range(3)]
    rows.append({"id": "x", "level": None})  # no level: never picked by level
    head = round_robin_by_level(rows, 5)
    assert [r["id"] for r in head] == ["1-0", "2-0", "3-0", "1-1", "2-1"]
    assert len(round_robin_by_level(rows, 100)) == 9
    assert round_robin_by_level(rows, 2, [3]) == [rows[6], rows[7]]
    with pytest.raises(ConfigError, match="at least one"):
        round_robin_by_level(rows, 0)
