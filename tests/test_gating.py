"""DeepConf online gating: the stop point on hand-made confidence traces, the exact cut in
replay, live chunked generation equal to the replayed trace, and the ledger refund."""

from __future__ import annotations

import asyncio

import pytest

from ttscale import solve
from ttscale.backends import ScriptedBackend
from ttscale.budget import Budget, Ledger
from ttscale.evals.pool import build_pool
from ttscale.pools import ReplayGenerator, Sampling, load_pool
from ttscale.strategies.search import generate_with_stop
from ttscale.types import DEFAULT_SYSTEM_PROMPT, ConfidenceStop, GenerationRequest


@pytest.mark.parametrize(
    "conf, stop, kept",
    [
        ([5, 5, 5, 5, 1, 1, 5, 5], ConfidenceStop(2, 3.0, 2), 6),  # group (1+1)/2 ends at 5
        ([5, 5, 5, 5], ConfidenceStop(2, 3.0, 2), None),
        ([5, 5, 5, 1, 1], ConfidenceStop(2, 3.0, 1), 5),  # (5+1)/2 = 3 is not below 3
        ([5, 5, 5, 1, 1], ConfidenceStop(2, 3.0, 4), None),  # the dip is after the last check
        ([1, 1], ConfidenceStop(4, 3.0, 1), None),  # shorter than a window: no group yet
        ([9, 9, 9, 0, 9, 9, 9, 9], ConfidenceStop(4, 7.0, 4), 4),  # window 0..3 = 6.75
    ],
)
def test_stop_point_on_hand_made_traces(conf, stop, kept):
    assert stop.cut(conf) == kept


# Solutions that differ from their first character, so a continuation from any prefix picks
# the same solution again: live chunked sampling follows the pooled sample exactly.
SCRIPT = {
    "12*7": [
        "Alpha: 12 * 7 = 84 because ten sevens and two sevens.\n\nSo \\boxed{84}.",
        "Beta: hmm hmm hmm hmm hmm hmm hmm hmm hmm hmm hmm.\n\nSo \\boxed{83}.",
        "Gamma: 12 * 7 is 84.\n\nSo \\boxed{84}.",
        "Delta: hmm hmm hmm hmm hmm hmm hmm hmm hmm.\n\nSo \\boxed{85}.",
    ]
}


def _logprob(ids, i):
    # unsure inside runs of "hmm" (byte-level tokens: h=107, m=112), sure elsewhere
    return -3.0 if ids[i] in (107, 112) else -0.05


def _backend() -> ScriptedBackend:
    return ScriptedBackend(script=SCRIPT, logprob_fn=_logprob)


def _pool(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "problem": "What is 12*7?", "answer": "84"}\n')
    build_pool(
        data,
        out=tmp_path / "pool",
        sampling=Sampling(
            k=8, temperature=0.7, max_tokens=200, system_prompt=DEFAULT_SYSTEM_PROMPT
        ),
        backend=_backend(),
        progress=False,
    )
    return load_pool(tmp_path / "pool")


STOP = ConfidenceStop(window=8, threshold=4.5, every=4)  # sure tokens 5.6, unsure 3.0


def test_replay_cut_is_exact_and_the_ledger_charges_only_what_was_kept(tmp_path):
    pool = _pool(tmp_path)
    p = pool.problems["a"]
    req = GenerationRequest(
        p.prompt_token_ids, n=8, max_tokens=200, temperature=0.7, logprobs=20, stop_below=STOP
    )
    ledger = Ledger(Budget(tokens=10_000))
    out = asyncio.run(generate_with_stop(ledger, ReplayGenerator(pool), req))
    for c, s in zip(out.completions, p.samples, strict=True):
        at = STOP.cut(s.confidence.astype(float).tolist())
        if at is not None and at < s.num_tokens:
            assert (c.finish_reason, c.num_tokens) == ("confidence", at)
            assert c.text == s.text_at(at) and "hmm" in c.text
        else:
            assert (c.finish_reason, c.num_tokens) == (s.finish_reason, s.num_tokens)
    assert any(c.finish_reason == "confidence" for c in out.completions)
    assert ledger.generated_tokens == sum(c.num_tokens for c in out.completions)
    assert ledger.generated_tokens < sum(s.num_tokens for s in p.samples)


def test_live_gated_trace_equals_the_replayed_one(tmp_path):
    pool = _pool(tmp_path)
    p = pool.problems["a"]
    req = GenerationRequest(
        p.prompt_token_ids,
        n=8,
        max_tokens=200,
        temperature=0.7,
        seed=p.seed,
        logprobs=20,
        stop_below=STOP,
    )
    live_ledger, replay_ledger = Ledger(), Ledger()
    live = asyncio.run(generate_with_stop(live_ledger, _backend(), req))
    replay = asyncio.run(generate_with_stop(replay_ledger, ReplayGenerator(pool), req))
    view = lambda out: [(c.text, c.token_ids, c.finish_reason) for c in out.completions]  # noqa: E731
    assert view(live) == view(replay)
    assert live_ledger.generated_tokens == replay_ledger.generated_tokens
    assert live_ledger.engine_calls > 1 == replay_ledger.engine_calls  # chunks vs one call


def test_best_of_n_gate_warms_up_then_stops_and_refunds(tmp_path):
    pool = _pool(tmp_path)
    opts = dict(
        n=8,
        round_size=4,
        temperature=0.7,
        max_tokens=200,
        adaptive=False,
        gate_warmup=4,
        gate_keep=0.5,
        gate_window=8,
        gate_every=4,
    )
    gated = solve("What is 12*7?", "rollouts=8", backend=ReplayGenerator(pool), gate=True, **opts)
    plain = solve("What is 12*7?", "rollouts=8", backend=ReplayGenerator(pool), **opts)
    record = gated.extras["gate"]
    warm = gated.candidates[:4]
    assert all(c.finish_reason != "confidence" for c in warm)  # the warm-up runs to the end
    stopped = [c for c in gated.candidates if c.finish_reason == "confidence"]
    assert record["stopped"] == len(stopped) > 0 and all(c.answer is None for c in stopped)
    assert gated.ledger.generated_tokens == plain.ledger.generated_tokens - (
        sum(s.tokens for s in plain.candidates[4:]) - sum(c.tokens for c in gated.candidates[4:])
    )
    assert gated.ledger.generated_tokens < plain.ledger.generated_tokens
    assert gated.answer == "84"
