"""Eval runner: grid parsing, crash-safe resumable rows (SIGKILL mid-run, torn last line),
the reproducibility record, cross-problem batching, and the report pipeline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttscale.backends import ScriptedBackend
from ttscale.errors import ConfigError
from ttscale.evals.metrics import summarize
from ttscale.evals.report import seeding_summary, write_report
from ttscale.evals.runner import parse_budgets, parse_strategies, run_eval
from ttscale.evals.store import ROWS_FILE, read_rows

PAIRS = [(12, 7), (3, 4), (10, 10), (25, 4), (8, 9), (6, 6), (13, 3), (7, 7), (9, 11), (5, 14)]


@pytest.fixture
def arith(tmp_path) -> Path:
    """Ten toy-arithmetic problems (levels 1-3) the scripted backend's policy answers."""
    path = tmp_path / "arith.jsonl"
    with open(path, "w") as f:
        for i, (a, b) in enumerate(PAIRS):
            row = {"id": f"a{i}", "problem": f"What is {a}*{b}?", "answer": str(a * b)}
            f.write(json.dumps({**row, "level": i % 3 + 1}) + "\n")
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ttscale.cli", "eval", *args]


def _grid_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return _cli(
        "--dataset",
        str(dataset),
        "--strategy",
        "vote:best_of_n,greedy:best_of_n",
        "-o",
        "vote.n=4",
        "-o",
        "vote.round_size=4",
        "-o",
        "greedy.n=1",
        "--budget",
        "tokens=600,tokens=4000",
        "--seeds",
        "2",
        "--backend",
        "scripted",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    )


# Wall time varies; eFLOPs credit prefix-cache hits, and a restarted engine process starts
# with an empty cache, so rows solved right after a resume may see fewer hits.
_PROCESS_DEPENDENT = {"wall_mean", "eflops_mean", "eflops_median"}
_LEDGER_PROCESS_DEPENDENT = {"cached_tokens", "eflops", "engine_seconds", "wall_seconds"}


def _metrics(rows):
    """Everything in the summary that does not depend on wall time or cache history."""
    return [
        {k: v for k, v in c.as_dict().items() if k not in _PROCESS_DEPENDENT}
        for c in sorted(summarize(rows), key=lambda c: (c.strategy, c.budget))
    ]


def _same_rows(a, b):
    """Rows equal in answers, grading, candidates and ledger except cache/time fields."""
    ra, rb = {r["key"]: r for r in a}, {r["key"]: r for r in b}
    assert ra.keys() == rb.keys()
    for key, x in ra.items():
        y = rb[key]
        for f in ("answer", "correct", "candidates", "error"):
            assert x[f] == y[f], (key, f)
        lx, ly = (
            {k: v for k, v in r["ledger"].items() if k not in _LEDGER_PROCESS_DEPENDENT}
            for r in (x, y)
        )
        assert lx == ly, key


def test_parse_strategies_and_budgets():
    cfgs = parse_strategies(["greedy:best_of_n,best_of_n"], {"greedy.n": 1, "max_tokens": 256})
    assert [(c.label, c.name, dict(c.options)) for c in cfgs] == [
        ("greedy", "best_of_n", {"n": 1, "max_tokens": 256}),
        ("best_of_n", "best_of_n", {"max_tokens": 256}),
    ]
    assert cfgs[0].options_for(3)["seed"] == 3
    budgets = parse_budgets(["tokens=2k,tokens=8000", "4000;tokens=1000,seconds=60", "2000"])
    assert [str(b) for b in budgets] == [
        "tokens=2000",
        "tokens=8000",
        "tokens=4000",
        "tokens=1000,seconds=60.0",
    ]
    for bad, opts in [
        (["nope"], {}),
        (["a:best_of_n,a:best_of_n"], {}),
        (["best_of_n"], {"zzz": 1}),
        (["best_of_n"], {"other.n": 1}),
        (["best_of_n"], {"seed": 1}),
        (["best_of_n"], {"n": 0}),
    ]:
        with pytest.raises(ConfigError):
            parse_strategies(bad, opts)


def test_local_run_rows_record_and_batching(arith, tmp_path):
    backend = ScriptedBackend()
    cfgs = parse_strategies(["best_of_n"], {"n": 4, "round_size": 4})
    outcome = run_eval(
        arith,
        cfgs,
        ["tokens=4000"],
        out=tmp_path / "run",
        seeds=2,
        backend=backend,
        backend_name="scripted",
        concurrency=8,
        progress=False,
        argv=["ttscale", "eval", "x"],
    )
    assert (outcome.total, outcome.written, outcome.skipped) == (20, 20, 0)
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 20 and len({r["key"] for r in rows}) == 20
    row = rows[0]
    assert row["gold"] == str(
        PAIRS[int(row["problem_id"][1:])][0] * PAIRS[int(row["problem_id"][1:])][1]
    )
    assert row["correct"] == (row["answer"] == row["gold"])
    assert len(row["candidates"]) == 4 and row["ledger"]["rollouts"] == 4
    assert row["ledger"]["generated_tokens"] == sum(c["tokens"] for c in row["candidates"])
    trace = json.loads((tmp_path / "run" / row["trace"]).read_text())
    assert trace["key"] == row["key"] and len(trace["candidates"]) == 4
    # 8 problems in flight share engine calls: far fewer calls than rows.
    assert len(backend.calls) < 20 and max(len(c) for c in backend.calls) > 1
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    env = record["environment"]
    assert env["command"] == "ttscale eval x" and env["engine"]["backend"] == "scripted"
    assert env["host"]["isa"] and "ttscale" in env["packages"] and "math-verify" in env["packages"]
    assert "commit" in env["git"] and record["seeds"] == [0, 1]
    assert record["dataset"]["sha256"] and len(record["dataset"]["problem_ids"]) == 10
    assert record["invocations"][-1]["rows_after"] == 20


def test_budget_error_becomes_a_wrong_row(arith, tmp_path):
    cfgs = parse_strategies(["best_of_n"], {"n": 4, "min_sample_tokens": 128, "max_tokens": 512})
    run_eval(
        arith,
        cfgs,
        ["tokens=50"],
        out=tmp_path / "r",
        backend=ScriptedBackend(),
        progress=False,
        selection=None,
    )
    rows = read_rows(tmp_path / "r")
    assert len(rows) == 10
    assert all(r["error"].startswith("BudgetError") and r["correct"] is False for r in rows)


def test_resume_refuses_a_different_run(arith, tmp_path):
    cfgs = parse_strategies(["best_of_n"], {"n": 2})
    run_eval(
        arith, cfgs, ["tokens=1000"], out=tmp_path / "r", backend=ScriptedBackend(), progress=False
    )
    other = parse_strategies(["best_of_n"], {"n": 3})

    def no_engine():  # a mismatch is refused before any engine is loaded
        raise AssertionError("the backend factory was called")

    with pytest.raises(ConfigError, match="rows would mix"):
        run_eval(
            arith, other, ["tokens=1000"], out=tmp_path / "r", backend=no_engine, progress=False
        )
    with pytest.raises(ConfigError, match="rows would mix"):
        run_eval(
            "amc23", cfgs, ["tokens=1000"], out=tmp_path / "r", backend=no_engine, progress=False
        )
    with pytest.raises(ConfigError, match="engine model"):
        run_eval(
            arith,
            cfgs,
            ["tokens=1000", "tokens=1500"],
            out=tmp_path / "r",
            backend=ScriptedBackend(script={"What": ["\\boxed{1}"]}),
            progress=False,
        )
    # Extending the grid (a new budget) is a resume: old rows are kept, new ones added.
    out = run_eval(
        arith,
        cfgs,
        ["tokens=1000", "tokens=2000"],
        out=tmp_path / "r",
        backend=ScriptedBackend(),
        progress=False,
    )
    assert (out.skipped, out.written) == (10, 10)


def test_torn_last_line_is_repaired_without_duplicates(arith, tmp_path):
    cfgs = parse_strategies(["best_of_n"], {"n": 2})
    run = tmp_path / "r"
    run_eval(arith, cfgs, ["tokens=1000"], out=run, backend=ScriptedBackend(), progress=False)
    path = run / ROWS_FILE
    lines = path.read_text().splitlines(keepends=True)
    # Simulate a kill in the middle of writing the last row.
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert len(read_rows(run)) == 9  # a reader ignores the torn tail
    out = run_eval(arith, cfgs, ["tokens=1000"], out=run, backend=ScriptedBackend(), progress=False)
    assert (out.skipped, out.written) == (9, 1)
    final = path.read_text()
    assert final.endswith("\n") and final.count("\n") == 10
    assert [json.loads(x)["key"] for x in final.splitlines()] == [
        json.loads(x)["key"] for x in lines
    ][:9] + [json.loads(lines[-1])["key"]]


def test_resume_after_sigkill_gives_identical_metrics(arith, tmp_path):
    """`ttscale eval` killed with SIGKILL mid-run, rerun: same rows and metrics as a run
    that was never interrupted; nothing written before the kill changes or duplicates."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    p = subprocess.run(_grid_args(arith, full), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    total = 10 * 2 * 2 * 2

    # delay_s slows each engine call so the kill lands mid-run; concurrency 2 keeps rows
    # trickling out one or two at a time.
    slow = ("-B", "delay_s=0.1", "--concurrency", "2")
    proc = subprocess.Popen(
        _grid_args(arith, killed, *slow),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows_path = killed / ROWS_FILE
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if rows_path.exists() and rows_path.read_bytes().count(b"\n") >= 8:
            break
        if proc.poll() is not None:
            pytest.fail(f"eval exited before the kill: {proc.stderr.read()}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = rows_path.read_bytes()
    written = before[: before.rfind(b"\n") + 1]
    n_before = written.count(b"\n")
    assert 8 <= n_before < total, "the kill must land mid-run"

    p = subprocess.run(
        _grid_args(arith, killed, *slow[2:]), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    after = rows_path.read_bytes()
    assert after.startswith(written)  # nothing already written was lost or rewritten
    resumed = read_rows(killed)
    keys = [json.loads(x)["key"] for x in after.splitlines()]
    assert len(keys) == len(set(keys)) == total
    assert _metrics(resumed) == _metrics(read_rows(full))
    _same_rows(resumed, read_rows(full))
    # A second rerun has nothing left to do.
    p = subprocess.run(
        _grid_args(arith, killed, "--json"), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert (data["resumed"], data["written"]) == (total, 0)
    assert rows_path.read_bytes() == after


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_rows_in_flight_then_resumes(arith, tmp_path, sig):
    """SIGTERM/SIGINT once: rows in flight finish and are written, no new row starts, exit
    128+signal; the rerun completes the grid with the same metrics as an uninterrupted run."""
    full, run = tmp_path / "full", tmp_path / "run"
    assert subprocess.run(_grid_args(arith, full), capture_output=True, timeout=120).returncode == 0
    total = 10 * 2 * 2 * 2
    slow = ("-B", "delay_s=0.3", "--concurrency", "3")
    proc = subprocess.Popen(
        _grid_args(arith, run, *slow), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    rows_path = run / ROWS_FILE
    deadline = time.monotonic() + 90
    while not (rows_path.exists() and rows_path.read_bytes().count(b"\n") >= 4):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"eval ended or stalled before the signal: {proc.stderr.read()}")
        time.sleep(0.02)
    before = rows_path.read_bytes().count(b"\n")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    m = re.search(r"finishing the (\d+) row\(s\) in flight", stderr)
    assert m and "rerun to resume" in stderr, stderr
    data = rows_path.read_bytes()
    assert data.endswith(b"\n")  # drained, not torn
    after = data.count(b"\n")
    # rows in flight finished (a few more may have landed before the signal arrived)
    assert before <= after < total and after - before <= int(m.group(1)) + 4
    p = subprocess.run(_grid_args(arith, run), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    resumed = read_rows(run)
    assert len(resumed) == total and _metrics(resumed) == _metrics(read_rows(full))


def test_report_pipeline(arith, tmp_path):
    """`ttscale report` on a scripted run: markdown, HTML and the three plots."""
    run = tmp_path / "run"
    p = subprocess.run(_grid_args(arith, run), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    other = tmp_path / "other"
    cfgs = parse_strategies(["vote:best_of_n"], {"n": 2})
    run_eval(arith, cfgs, ["tokens=600"], out=other, backend=ScriptedBackend(), progress=False)
    report_dir = tmp_path / "rep"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "ttscale.cli",
            "report",
            str(run),
            "--out",
            str(report_dir),
            "--compare",
            str(other),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    md = (report_dir / "report.md").read_text()
    for png in ("accuracy_vs_tokens.png", "accuracy_vs_eflops.png", "accuracy_by_level.png"):
        assert (report_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in md
    assert "| vote" in md and "| greedy" in md and "tokens=4000" in md
    assert "## Accuracy by difficulty level" in md and "level 3" in md
    assert "## Paired comparisons against `vote`" in md
    assert f"## This run vs `{other}`" in md
    assert "ISA **" in md and "pass@4" in md
    assert re.search(r"\(\S+Z, git `[0-9a-f]{12}`", md)
    html = (report_dir / "report.html").read_text()
    assert "<table>" in html and 'src="accuracy_vs_tokens.png"' in html
    files = write_report(run)  # default location
    assert files.markdown == run / "report" / "report.md"


def test_verifier_per_strategy(arith, tmp_path):
    """One run verifier (the LLM judge on the run's backend); `label.verifier=false` runs a
    strategy without it, and verifier scores feed the weighted-vote metric."""
    cfgs = parse_strategies(
        ["greedy:best_of_n,best_of_n"],
        {"greedy.n": 1, "greedy.verifier": False, "best_of_n.n": 4, "select": "majority"},
    )
    assert [c.use_verifier for c in cfgs] == [False, True]
    run_eval(
        arith,
        cfgs,
        ["tokens=3000"],
        out=tmp_path / "r",
        backend=ScriptedBackend(),
        verifier="llm_judge",
        verifier_options={"mode": "outcome"},
        progress=False,
    )
    rows = read_rows(tmp_path / "r")
    greedy = [r for r in rows if r["strategy"] == "greedy"]
    bon = [r for r in rows if r["strategy"] == "best_of_n"]
    assert all(r["ledger"]["verifier_calls"] == 0 for r in greedy)
    assert all(r["ledger"]["verifier_calls"] >= 1 for r in bon)
    assert all(c["score"] is not None for r in bon for c in r["candidates"])
    cells = {c.strategy: c for c in summarize(rows)}
    assert cells["greedy"].weighted is None and cells["best_of_n"].weighted is not None
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["strategies"]["greedy"]["verifier"] is False
    assert record["verifier_options"] == {"mode": "outcome"}
    with pytest.raises(ConfigError, match="verifier"):
        run_eval(
            arith,
            cfgs,
            ["tokens=3000"],
            out=tmp_path / "r",
            backend=ScriptedBackend(),
            verifier="llm_judge",
            verifier_options={"mode": "step"},
            progress=False,
        )


def test_seeding_summary_counts_mixed_modes():
    def row(mode):
        return {"ledger": {"engine": {"seeding": mode}}}

    assert seeding_summary([row("engine")] * 3) == "engine"
    assert seeding_summary([{"ledger": {}}], "per_request") == "per_request"
    mixed = [row("per_request")] * 5 + [row("engine")] * 2
    assert seeding_summary(mixed) == "per_request (5 rows), engine (2 rows)"


def test_report_lists_budgets_ascending(arith, tmp_path):
    """Budgets given large-first (or added by a later command) still read 600 before 1200."""
    cfgs = parse_strategies(["vote:best_of_n"], {"n": 2})
    run_eval(
        arith, cfgs, ["tokens=1200", "tokens=600"], out=tmp_path, backend=ScriptedBackend(),
        progress=False,
    )  # fmt: skip
    md = write_report(tmp_path).markdown.read_text()
    table = md.split("## Accuracy vs compute", 1)[1]
    assert table.index("`tokens=600`") < table.index("`tokens=1200`")
