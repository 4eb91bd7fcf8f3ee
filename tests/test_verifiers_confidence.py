"""Confidence verifiers: every DeepConf statistic on hand-computed token confidences, the
candidate-level verifier interface, best-of-N's ``filtered`` selection, and the step
interface (prefix confidences steer beam search, particle filtering and ETS)."""

from __future__ import annotations

import asyncio
import math
from itertools import product
from types import SimpleNamespace

import pytest

from ttscale import Budget, solve
from ttscale.backends import ScriptedBackend
from ttscale.backends.scripted import _OFFSET
from ttscale.budget import Ledger
from ttscale.errors import ConfigError, VerifierRequired
from ttscale.protocols import CandidateVerifier, TokenStepVerifier, Verifier
from ttscale.strategies import ETS, BeamSearch, BestOfN, ParticleFilter
from ttscale.strategies.search import Node, score_nodes
from ttscale.types import Candidate, Completion, Problem, topk_confidence
from ttscale.verifiers import ConfidenceVerifier, ScriptedVerifier, load_verifier
from ttscale.verifiers.confidence import (
    bottom_fraction_confidence,
    group_confidences,
    lowest_group_confidence,
    tail_confidence,
    trace_confidence,
)
from ttscale.verifiers.voting import filter_top

CONF = [4.0, 2.0, 6.0, 8.0, 1.0, 3.0]


def test_token_confidence_is_minus_the_mean_top_k_logprob():
    assert topk_confidence([-1.0, -2.0, -3.0]) == 2.0
    assert topk_confidence([-0.0]) == 0.0 and topk_confidence([]) == 0.0


def test_group_statistics_by_hand():
    # windows of 2: (4+2)/2, (2+6)/2, (6+8)/2, (8+1)/2, (1+3)/2
    assert group_confidences(CONF, 2).tolist() == [3.0, 4.0, 7.0, 4.5, 2.0]
    assert lowest_group_confidence(CONF, 2) == 2.0
    assert lowest_group_confidence(CONF, 3) == pytest.approx(min(4, 16 / 3, 5, 4))
    # 5 groups -> the lowest 10% is one group (at least one is kept)
    assert bottom_fraction_confidence(CONF, 2) == 2.0
    assert bottom_fraction_confidence(CONF, 2, fraction=0.4) == pytest.approx((2.0 + 3.0) / 2)
    assert tail_confidence(CONF, 2) == 2.0 and tail_confidence(CONF, 100) == 4.0
    assert group_confidences(CONF, 50).tolist() == [4.0]  # shorter than a window: one group
    assert trace_confidence(CONF, "mean") == 4.0
    assert trace_confidence(CONF, "lowest_group", window=2) == 2.0
    assert trace_confidence(CONF, "bottom10", window=2) == 2.0
    assert trace_confidence(CONF, "tail", tail=3) == 4.0
    with pytest.raises(ConfigError, match="unknown confidence statistic"):
        trace_confidence(CONF, "median")


def _cand(answer: str, conf: list[float] | None) -> Candidate:
    return Candidate(
        f"\\boxed{{{answer}}}",
        answer,
        len(conf or [1]),
        "stop",
        token_confidence=None if conf is None else tuple(conf),
    )


def test_verifier_scores_candidates_and_refuses_text_only_use():
    v = ConfidenceVerifier(stat="lowest_group", window=2)
    assert isinstance(v, CandidateVerifier) and isinstance(v, Verifier)
    assert v.name == "confidence_lowest_group_w2" and v.logprobs == 20
    scores = asyncio.run(
        v.score_candidates([Problem("q")] * 2, [_cand("1", CONF), _cand("2", [5.0, 5.0])])
    )
    assert scores == [2.0, 5.0]
    with pytest.raises(ConfigError, match="request logprobs=20"):
        asyncio.run(v.score_candidates([Problem("q")], [_cand("1", None)]))
    with pytest.raises(ConfigError, match="not texts"):
        asyncio.run(v.score([Problem("q")], [["step"]]))
    with pytest.raises(ConfigError, match="stat="):
        ConfidenceVerifier(stat="median")  # type: ignore[arg-type]
    assert load_verifier("confidence", stat="tail", tail=64).name == "confidence_tail_t64"


def test_filter_top_keeps_the_most_confident_fraction():
    answers, scores = filter_top(["a", "b", "b", "c"], [9.0, 1.0, 2.0, 9.0], keep=0.5)
    assert answers == ["a", None, None, "c"] and scores == [9.0, 0.0, 0.0, 9.0]
    answers, _ = filter_top(["a", "b"], [1.0, 2.0], keep=0.01)  # at least one kept
    assert answers == [None, "b"]


def test_filtered_selection_overrules_an_unconfident_majority():
    bon = BestOfN(select="filtered", keep=0.4)
    cands = [_cand("83", [1.0]) for _ in range(3)] + [_cand("84", [9.0]) for _ in range(2)]
    for c, s in zip(cands, [1.0, 1.1, 0.9, 9.0, 8.5], strict=True):
        c.score = s
    answer, table = bon._select("filtered", cands)
    assert answer == "84" and table[0]["votes"] == 2
    assert bon._select("majority", cands)[0] == "83"
    with pytest.raises(ConfigError, match="keep"):
        BestOfN(keep=0.0)


def _logprob(ids, i):
    return -0.05 if i % 3 else -1.5  # some unsure tokens


def test_best_of_n_asks_for_logprobs_and_candidates_carry_confidences():
    backend = ScriptedBackend(logprob_fn=_logprob)
    v = ConfidenceVerifier(stat="mean")
    r = solve(
        "What is 12*7?",
        "rollouts=4",
        backend=backend,
        verifier=v,
        n=4,
        round_size=4,
        adaptive=False,
    )
    assert all(req.logprobs == 20 for call in backend.calls for req in call)
    for c in r.candidates:
        assert c.token_confidence is not None and len(c.token_confidence) == c.tokens
        assert c.score == pytest.approx(sum(c.token_confidence) / c.tokens)
        assert math.isfinite(c.score)
    assert r.extras["select"] == "weighted"
    assert "token_confidence" not in r.to_dict()["candidates"][0]  # traces stay small
    plain = ScriptedBackend()
    solve("What is 12*7?", "rollouts=2", backend=plain, n=2)
    assert all(req.logprobs is None for call in plain.calls for req in call)


def test_filtered_without_a_verifier_names_the_cli_fix():
    with pytest.raises(VerifierRequired) as info:
        solve("What is 12*7?", "rollouts=2", backend=ScriptedBackend(), select="filtered")
    assert "-o select=majority" in info.value.cli_message()


def test_vllm_confidence_skips_the_sampled_token_outside_the_top_k():
    from ttscale.backends.vllm import _convert

    def lp(v, rank):
        return SimpleNamespace(logprob=v, rank=rank, decoded_token=str(rank))

    # top-2 requested; position 1's sampled token (id 9) ranked 5th is added by vLLM
    pos = [{1: lp(-0.1, 1), 2: lp(-2.0, 2)}, {3: lp(-0.5, 1), 4: lp(-1.0, 2), 9: lp(-4.0, 5)}]
    comp = SimpleNamespace(text="ab", token_ids=[1, 9], logprobs=pos, finish_reason="stop")
    out = SimpleNamespace(
        outputs=[comp], prompt_token_ids=[0], prompt_logprobs=None, num_cached_tokens=0
    )
    c = _convert(out, 2).completions[0]
    assert c.confidence == (pytest.approx(1.05), pytest.approx(0.75))
    assert c.logprobs == (-0.1, -4.0)


def test_step_scores_are_the_squashed_prefix_statistic():
    v = ConfidenceVerifier(stat="mean", center=4.0, spread=2.0)
    assert isinstance(v, TokenStepVerifier)
    (row,) = v.score_token_steps([CONF], [[2, 6]])  # prefix means 3.0 and 4.0
    assert row == [pytest.approx(1 / (1 + math.exp(0.5))), pytest.approx(0.5)]
    low = ConfidenceVerifier(stat="lowest_group", window=2, center=0.0, spread=1.0)
    (row,) = low.score_token_steps([CONF], [[4, 6]])  # lowest window means 3.0, then 2.0
    assert row == [pytest.approx(1 / (1 + math.exp(-3.0))), pytest.approx(1 / (1 + math.exp(-2.0)))]
    with pytest.raises(ConfigError, match="spread"):
        ConfidenceVerifier(spread=0.0)


def test_nodes_keep_confidences_per_step_and_score_nodes_reads_them():
    first = Completion("ab\n\n", (1, 2, 3, 4), "stop", confidence=(4.0, 2.0, 6.0, 8.0))
    second = Completion("c.", (5, 6), "stop", confidence=(1.0, 3.0))
    node = Node((9,)).extend(first, id=1, delimiter="\n\n", max_tokens=100)
    node = node.extend(second, id=2, delimiter="\n\n", max_tokens=100)
    assert node.confidence == tuple(CONF) and node.step_ends == (4, 6)
    v = ConfidenceVerifier(stat="mean", center=4.0, spread=2.0)
    ledger = Ledger(Budget())
    (scored,) = asyncio.run(score_nodes(Problem("q"), v, [node], ledger, "min"))
    assert scored.step_scores == pytest.approx((1 / (1 + math.exp(-0.5)), 0.5))
    assert scored.score == pytest.approx(0.5) and ledger.verifier_calls == 1
    bare = Node((9,)).extend(Completion("ab", (1, 2), "stop"), id=1, delimiter="\n\n", max_tokens=9)
    with pytest.raises(ConfigError, match="returns logprobs"):
        asyncio.run(score_nodes(Problem("q"), v, [bare], ledger, "last"))


def _chain() -> list[str]:
    """Every path of 3 steps, X (sure) or Y (unsure); the answer counts the X steps."""
    sols = []
    for combo in product("XY", repeat=3):
        steps = [f"{c}{i}." for i, c in enumerate(combo)]
        sols.append("\n\n".join(steps) + f"\n\nSo \\boxed{{{combo.count('X')}}}.")
    return sols


def _sure_of(letter: str):
    """A model that is sure when it writes ``letter`` and unsure when it writes the other."""

    def logprob(ids, i):
        tok = chr(ids[i] - _OFFSET) if ids[i] >= _OFFSET else ""
        return -0.01 if tok == letter else -2.5 if tok in "XY" and tok else -0.2

    return logprob


@pytest.mark.parametrize(
    "strategy",
    [
        BeamSearch(n=8, beam_width=2, select="best", seed=3),
        ParticleFilter(n=8, weight_temperature=0.01, select="best", seed=3),
        ETS(width=8, select="best", seed=0),
    ],
    ids=["beam_search", "particle_filter", "ets"],
)
def test_confidence_steers_step_searches_to_the_sure_path(strategy):
    v = ConfidenceVerifier(stat="mean", center=10.0, spread=2.0)
    for letter, answer in (("X", "3"), ("Y", "0")):  # the path of sure steps wins
        gen = ScriptedBackend(script={"chain": _chain()}, logprob_fn=_sure_of(letter))
        res = asyncio.run(strategy.run(Problem("Walk the chain."), gen, v, Budget()))
        assert all(req.logprobs == 20 for call in gen.calls for req in call)
        assert res.answer == answer
    plain = ScriptedBackend(script={"chain": _chain()})
    asyncio.run(strategy.run(Problem("Walk the chain."), plain, _x_judge, Budget()))
    assert all(req.logprobs is None for call in plain.calls for req in call)


_x_judge = ScriptedVerifier(lambda p, steps: [0.9 if s.startswith("X") else 0.1 for s in steps])


def test_lookahead_with_a_token_verifier_names_the_fix():
    with pytest.raises(ConfigError, match="lookahead=0"):
        asyncio.run(
            BeamSearch(n=4, beam_width=2, lookahead=1).run(
                Problem("q"), ScriptedBackend(), ConfidenceVerifier(), Budget()
            )
        )
