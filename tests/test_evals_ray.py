"""``--executor ray`` on a local Ray cluster (2 CPUs, 2 workers, scripted backend): every row
is solved once, work is spread over both workers, and the rows equal a local run's."""

from __future__ import annotations

import json

import pytest

from ttscale.backends import ScriptedBackend
from ttscale.evals.runner import parse_strategies, run_eval
from ttscale.evals.store import read_rows

ray = pytest.importorskip("ray")

PAIRS = [(12, 7), (3, 4), (10, 10), (25, 4), (8, 9), (6, 6)]


def test_ray_executor_matches_local(tmp_path):
    data = tmp_path / "arith.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"a{i}", "problem": f"What is {a}*{b}?", "answer": str(a * b)}) + "\n"
            for i, (a, b) in enumerate(PAIRS)
        )
    )
    cfgs = parse_strategies(["best_of_n"], {"n": 4, "round_size": 4})
    common = dict(seeds=2, backend_name="scripted", progress=False)
    run_eval(
        data, cfgs, ["tokens=2000"], out=tmp_path / "local", backend=ScriptedBackend(), **common
    )
    outcome = run_eval(
        data,
        cfgs,
        ["tokens=2000"],
        out=tmp_path / "ray",
        executor="ray",
        workers=2,
        concurrency=3,
        ray_init={"num_cpus": 2, "object_store_memory": 100 * 1024**2},
        **common,
    )
    assert (outcome.total, outcome.written) == (12, 12)
    assert not ray.is_initialized()  # the cluster it started is shut down
    rows = read_rows(tmp_path / "ray")
    local = {r["key"]: r for r in read_rows(tmp_path / "local")}
    assert sorted(r["key"] for r in rows) == sorted(local)
    assert len({r["worker"] for r in rows}) == 2
    for r in rows:
        assert (r["answer"], r["correct"], r["candidates"]) == (
            local[r["key"]]["answer"],
            local[r["key"]]["correct"],
            local[r["key"]]["candidates"],
        )
        assert r["ledger"]["generated_tokens"] == local[r["key"]]["ledger"]["generated_tokens"]
    record = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert record["environment"]["engine"]["ray_workers"] == 2
    assert record["invocations"][-1]["executor"] == "ray"
    # Resuming with the ray executor finds nothing left to do (no cluster work needed).
    again = run_eval(
        data,
        cfgs,
        ["tokens=2000"],
        out=tmp_path / "ray",
        executor="ray",
        workers=2,
        ray_init={"num_cpus": 2, "object_store_memory": 100 * 1024**2},
        **common,
    )
    assert (again.skipped, again.written) == (12, 0)


DRIVER = """
import sys
from ttscale.evals.runner import RunStopped, parse_strategies, run_eval
cfgs = parse_strategies(["best_of_n"], {"n": 4, "round_size": 4})
try:
    run_eval(sys.argv[1], cfgs, ["tokens=2000"], out=sys.argv[2], seeds=4,
             backend_name="scripted", backend_options={"delay_s": float(sys.argv[3])},
             executor="ray", workers=2, concurrency=1, progress=False,
             ray_init={"num_cpus": 2, "object_store_memory": 100 * 1024**2})
except RunStopped as exc:
    sys.exit(128 + exc.signum)
"""


def test_ray_driver_drains_on_sigterm_then_resumes(tmp_path):
    """SIGTERM to the driver: the rows on the workers finish and are written, no new row
    is submitted, the run ends with RunStopped; a rerun completes the grid."""
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "arith.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"a{i}", "problem": f"What is {a}*{b}?", "answer": str(a * b)}) + "\n"
            for i, (a, b) in enumerate(PAIRS)
        )
    )
    out, rows_path, total = tmp_path / "ray", tmp_path / "ray" / "rows.jsonl", len(PAIRS) * 4
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(data), str(out), "0.5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (rows_path.exists() and rows_path.read_bytes().count(b"\n") >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the Ray run ended or stalled before the signal: {proc.communicate()[1]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "finishing the" in stderr and "in flight" in stderr, stderr
    written = rows_path.read_bytes()
    assert written.endswith(b"\n") and written.count(b"\n") < total
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, str(data), str(out), "0"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stderr
    rows = read_rows(out)
    assert rows_path.read_bytes().startswith(written)
    assert len(rows) == len({r["key"] for r in rows}) == total


def test_ray_pool_build_matches_local(tmp_path):
    """``ttscale pool build --executor ray``: every problem drawn once over two workers, with
    the same samples as a local build (per-request seeds), and the manifest says so."""
    from ttscale.evals.pool import build_pool
    from ttscale.pools import Sampling, load_pool

    data = tmp_path / "arith.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"a{i}", "problem": f"What is {a}*{b}?", "answer": str(a * b)}) + "\n"
            for i, (a, b) in enumerate(PAIRS)
        )
    )
    sampling = Sampling(k=4, temperature=0.7, max_tokens=256)
    build_pool(
        data, out=tmp_path / "local", sampling=sampling, backend=ScriptedBackend(), progress=False
    )
    outcome = build_pool(
        data,
        out=tmp_path / "ray",
        sampling=sampling,
        backend_name="scripted",
        executor="ray",
        workers=2,
        concurrency=2,
        ray_init={"num_cpus": 2, "object_store_memory": 100 * 1024**2},
        progress=False,
    )
    assert (outcome.total, outcome.written) == (len(PAIRS), len(PAIRS))
    assert not ray.is_initialized()
    local, remote = load_pool(tmp_path / "local"), load_pool(tmp_path / "ray")
    assert list(remote.problems) == list(local.problems)
    for pid, p in local.problems.items():
        assert [s.text for s in remote.problems[pid].samples] == [s.text for s in p.samples]
    assert remote.manifest["engine"]["ray_workers"] == 2
    assert remote.manifest["invocations"][-1]["executor"] == "ray"
    assert remote.manifest["model_spec"] == local.manifest["model_spec"]
