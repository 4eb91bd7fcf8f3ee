"""``ttscale calibrate``: hardware preset, policy fit from rows, --run on the scripted backend,
and the errors (nothing to calibrate, evaluation problems in the calibration data)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ttscale.backends import make_backend
from ttscale.cli.calibrate import measure_rows
from ttscale.errors import ConfigError
from ttscale.strategies.allocation.policy import load_policy
from ttscale.strategies.allocation.splits import load_split


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ttscale.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_hardware_preset_written_to_the_cache(tmp_path):
    p = cli("calibrate", "--hardware", "--seconds", "0.05", env={"TTSCALE_CACHE": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT preset=cpu-") and "isa=" in last
    saved = json.loads((tmp_path / "hardware" / "calibrated.json").read_text())
    assert saved["peak_flops"] > 0 and saved["mem_bandwidth"] > 0


def test_fit_from_rows_and_run_scripted(tmp_path):
    cal = load_split("math_train200")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "\n".join(
            json.dumps(
                {
                    "problem_id": p["id"],
                    "level": p["level"],
                    "strategy": "best_of_n_majority",
                    "budget_tokens": 3000,
                    "correct": i % 2 == 0,
                    "generated_tokens": 2000,
                }
            )
            for i, p in enumerate(cal[:6])
        )
        + "\n"
    )
    out = tmp_path / "policy.json"
    p = cli("calibrate", "--dataset", "math_train200", "--rows", str(rows), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "fitted_cells=" in p.stdout.splitlines()[-1]
    pol = load_policy(out)
    assert pol.fitted and pol.provenance.dataset == "math_train200" and pol.provenance.n_rows == 6

    run_rows = tmp_path / "run.jsonl"
    args = [
        "calibrate",
        "--dataset",
        "math_train200",
        "--run",
        "--backend",
        "scripted",
        "--limit",
        "2",
        "--budgets",
        "600",
        "--rows",
        str(run_rows),
        "--out",
        str(out),
    ]
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    measured = [json.loads(x) for x in run_rows.read_text().splitlines()]
    assert len(measured) == 2 * 3 and all("difficulty_bin" in r for r in measured)
    assert {r["level"] for r in measured} == {1, 2}  # --limit takes levels round-robin
    assert all(set(r["probe_bins"]) == {"1", "2", "3", "4"} for r in measured)
    assert "probe_bins" in load_policy(out).provenance.bin_source
    p = cli(*args)  # resumable: nothing new to measure
    assert p.returncode == 0 and len(run_rows.read_text().splitlines()) == 6


def test_errors_name_the_fix(tmp_path):
    p = cli("calibrate")
    assert p.returncode == 2 and "--hardware" in p.stderr
    leak = tmp_path / "leak.jsonl"
    leak.write_text(json.dumps(load_split("math500")[0]) + "\n")
    p = cli("calibrate", "--dataset", str(leak), "--rows", str(tmp_path / "r.jsonl"))
    assert p.returncode == 2 and "calibration data" in p.stderr


def test_measure_rows_resumes_without_redoing_rows_or_probes(tmp_path):
    problems = load_split("math_train200")[:3]
    rows_path = tmp_path / "rows.jsonl"
    probes_path = tmp_path / "rows.probes.jsonl"
    labels = ["best_of_n_majority", "pdr"]

    def measure() -> int:
        gen = make_backend("scripted")
        return asyncio.run(
            measure_rows(problems, [600], gen, None, rows_path, labels=labels, concurrency=2)
        )

    assert measure() == 6
    rows = rows_path.read_text().splitlines()
    assert len(probes_path.read_text().splitlines()) == 3
    # killed mid-way: two rows never written, the last write torn
    rows_path.write_text("\n".join(rows[:4]) + "\n" + rows[4][:25])
    assert measure() == 2
    after = [json.loads(x) for x in rows_path.read_text().splitlines()]
    keys = {(r["problem_id"], r["label"]) for r in after}
    assert len(after) == 6 and len(keys) == 6  # no duplicate, nothing lost
    assert len(probes_path.read_text().splitlines()) == 3  # probes reused, not redrawn
    assert measure() == 0
    rows_path.write_text("{bad\n" + rows_path.read_text())
    with pytest.raises(ConfigError, match=r"rows.jsonl:1: not a JSON row"):
        measure()


def test_calibrate_run_drains_on_sigterm(tmp_path):
    """SIGTERM during `calibrate --run`: the runs in flight finish and are written, no new
    one starts, exit 143; the rerun completes the rest (nothing measured twice)."""
    rows = tmp_path / "rows.jsonl"
    args = [
        sys.executable, "-m", "ttscale.cli", "calibrate", "--dataset", "math_train200",
        "--run", "--backend", "scripted", "--limit", "10", "--budgets", "600,1200",
        "--concurrency", "2", "--rows", str(rows), "--out", str(tmp_path / "p.json"),
    ]  # fmt: skip
    slow = [*args, "-B", "delay_s=0.2"]
    proc = subprocess.Popen(slow, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while not (rows.exists() and rows.read_text().count("\n") >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"calibrate ended or stalled before the signal: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    n = rows.read_text().count("\n")
    assert 2 <= n < 10 * 3 * 2 and rows.read_text().endswith("\n")
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    measured = [json.loads(x) for x in rows.read_text().splitlines()]
    keys = [(r["problem_id"], r["label"], r["budget_tokens"]) for r in measured]
    assert len(keys) == len(set(keys)) == 10 * 3 * 2
