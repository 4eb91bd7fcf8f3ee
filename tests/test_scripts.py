"""The measured-run scripts in ``scripts/`` work end to end on the scripted backend (their
documented pipeline check), write what they promise, and resume without redoing rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if not (ROOT / ".venv" / "bin" / "ttscale").exists():
        pytest.skip("scripts call .venv/bin/ttscale; create it with scripts/setup.sh")
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name)],
        env={**os.environ, "BACKEND": "scripted", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_eval_slice_script_writes_the_report_and_resumes(tmp_path):
    env = {"RUN": str(tmp_path / "run"), "REPORT": str(tmp_path / "rep"), "SAMPLE": "5"}
    p = run_script("eval_math500_slice.sh", env)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = lines(tmp_path / "run" / "rows.jsonl")
    # greedy once + (best_of_n, beam_search, particle_filter) x 2 budgets, 5 problems each
    assert len(rows) == 5 + 3 * 2 * 5
    assert {r["strategy"] for r in rows} >= {"greedy", "best_of_n", "beam_search"}
    for f in ("report.md", "report.html", "accuracy_vs_tokens.png", "accuracy_by_level.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 0
    assert run_script("eval_math500_slice.sh", env).returncode == 0
    assert len(lines(tmp_path / "run" / "rows.jsonl")) == len(rows)  # nothing redone


def test_allocator_script_fits_on_calibration_and_benchmarks_held_out(tmp_path):
    env = {"OUT": str(tmp_path), "CAL_N": "5", "EVAL_N": "5", "BON_EXTRA": "6000"}
    p = run_script("allocator_cpu.sh", env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.splitlines()[-1].startswith("RESULT compute_ratio_at_matched_acc=")
    cal = lines(tmp_path / "calibration_rows.jsonl")
    assert {r["level"] for r in cal} == {1, 2, 3, 4, 5} and len(cal) == 5 * 2 * 2
    pol = json.loads((tmp_path / "policy.json").read_text())
    assert pol["provenance"]["fitted"] is True
    ev = lines(tmp_path / "eval_rows.jsonl")
    assert not {r["problem_id"] for r in ev} & {r["problem_id"] for r in cal}
    assert {(r["method"], r["budget_tokens"]) for r in ev} == {
        *((m, b) for m in ("auto", "best_of_n", "pdr") for b in (500, 1000, 3000)),
        ("best_of_n", 6000),
    }
    summary = json.loads((tmp_path / "allocator.json").read_text())
    assert summary["policy_fitted"] is True and (tmp_path / "allocator.png").stat().st_size > 0
    assert summary["budgets"] == [500, 1000, 3000, 6000]  # all stages, not only the last


def test_allocator_benchmark_resumes_row_by_row(tmp_path):
    out, rows_path = tmp_path / "a", tmp_path / "a_rows.jsonl"
    args = [
        sys.executable, str(ROOT / "benchmarks" / "allocator.py"), "--backend", "scripted",
        "--n", "5", "--budgets", "1000", "--methods", "auto,best_of_n,auto_batch",
        "--out", str(out), "--rows", str(rows_path),
    ]  # fmt: skip

    def bench() -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, timeout=600)

    assert bench().returncode == 0
    full = rows_path.read_text().splitlines()
    assert len(full) == 3 * 5
    # killed mid-way: the last best_of_n rows never landed and one write was torn
    keep = [x for x in full if json.loads(x)["method"] != "best_of_n"] + [
        x for x in full if json.loads(x)["method"] == "best_of_n"
    ][:2]
    rows_path.write_text("\n".join(keep) + "\n" + full[-1][:30])
    p = bench()
    assert p.returncode == 0, p.stderr[-2000:]
    after = lines(rows_path)
    keys = [(r["method"], r["problem_id"]) for r in after]
    assert len(after) == 15 and len(set(keys)) == 15
    assert {r["seeding"] for r in after} == {"per_request"}
    assert p.stdout.splitlines()[-1].startswith("RESULT compute_ratio_at_matched_acc=")


def test_scaling_report_runs_on_scripted_pools(tmp_path):
    """benchmarks/scaling.py end to end on toy pools: every grid through `ttscale eval
    --backend replay`, the report, both plots and the RESULT line."""
    data = tmp_path / "toy.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"p{i}",
                    "problem": f"What is {i}*{i + 2}?",
                    "answer": str(i * (i + 2)),
                    "level": 1 + i % 5,
                }
            )
            + "\n"
            for i in range(6)
        )
    )
    cli = [
        sys.executable,
        "-m",
        "ttscale.cli",
        "pool",
        "build",
        "--backend",
        "scripted",
        "--dataset",
        str(data),
        "--no-progress",
    ]
    programs = tmp_path / "programs.json"  # the scripted coder: right 3 times out of 4
    programs.write_text(
        json.dumps(
            {
                f"What is {i}*{i + 2}?": [
                    f"```python\nprint({i} * {i + 2})\n```",
                    f"```python\nfrom sympy import Integer\nprint(Integer({i}) * {i + 2})\n```",
                    f"```python\nprint({i * (i + 2)})\n```",
                    f"```python\nprint({i * (i + 2) + 1})\n```",
                ]
                for i in range(6)
            }
        )
    )
    prog = ["--format", "program", "--script", str(programs), "--max-tokens", "768"]
    for out, extra in (
        ("small", ["--k", "4"]),
        ("greedy", ["--k", "1", "--temperature", "0"]),
        ("program", [*prog, "--k", "4", "--top-p", "0.95"]),
        ("program_greedy", [*prog, "--k", "1", "--temperature", "0"]),
    ):
        done = subprocess.run(
            [*cli, "--out", str(tmp_path / out), *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scaling.py"),
            "--pool",
            str(tmp_path / "small"),
            "--greedy",
            str(tmp_path / "greedy"),
            "--large-greedy",
            str(tmp_path / "greedy"),
            "--program-pool",
            str(tmp_path / "program"),
            "--program-greedy",
            str(tmp_path / "program_greedy"),
            "--large-program-greedy",
            str(tmp_path / "program_greedy"),
            "--orders",
            "2",
            "--out",
            str(tmp_path / "report"),
            "--runs",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    cot, result = p.stdout.strip().splitlines()[-2:]
    assert cot.startswith("COT acc_small_greedy=") and " k=4 " in cot
    assert result.startswith("RESULT acc_small_best=") and "n_problems=6" in result
    fields = dict(kv.split("=", 1) for kv in result.split()[1:])
    assert set(fields) == {
        "acc_small_best",
        "best_config",
        "acc_large_greedy",
        "eflops_small_best_over_large_greedy",
        "acc_small_program_greedy",
        "acc_large_program_greedy",
        "n_problems",
        "isa",
    }
    # Program greedy replays the pool's one executed answer per problem.
    from ttscale.pools import load_pool

    pooled = load_pool(tmp_path / "program_greedy")
    right = sum(p.samples[0].correct for p in pooled.problems.values()) / 6
    assert fields["acc_small_program_greedy"] == f"{right:.3f}" and right > 0.5
    for f in ("report.md", "scaling.json", "scaling_tokens.png", "scaling_eflops.png"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    summary = json.loads((tmp_path / "report" / "scaling.json").read_text())
    families = {pt["family"] for pt in summary["points"]}
    assert {
        "0.5B greedy",
        "0.5B maj@n",
        "0.5B adaptive best-of-N",
        "0.5B gated best-of-N",
        "1.5B greedy",
        "0.5B program greedy",
        "0.5B program maj@n",
        "0.5B program adaptive",
        "0.5B hybrid n+n",
        "0.5B hybrid n+4",
        "1.5B program greedy",
    } <= families
    hybrid = [pt for pt in summary["points"] if pt["family"] == "0.5B hybrid n+n"]
    assert sorted(pt["n"] for pt in hybrid) == [2, 4, 8]  # 1+1, 2+2, 4+4 samples
    from ttscale.cost import default_hardware
    from ttscale.host import host_info

    report = (tmp_path / "report" / "report.md").read_text()
    assert summary["hardware"] == default_hardware().name  # one preset prices every row
    assert f"`{summary['hardware']}`" in report
    assert f"| {host_info().cpu_model} {host_info().isa} |" in report  # where pools were drawn
