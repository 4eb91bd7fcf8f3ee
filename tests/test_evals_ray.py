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
