"""Beam search, DVTS, particle filtering, PDR and sequential refinement on the scripted
backend with scripted verifiers: each algorithm's selection logic (top-scored prefixes kept,
DVTS subtrees independent, resampling follows the weights, PDR workspace bounded), batching
(one engine call per step carrying every live beam/particle), registry wiring, reentrancy
and configuration errors."""

from __future__ import annotations

import asyncio
from itertools import product

import pytest

from ttscale import Budget, ConfigError, solve
from ttscale.backends import ScriptedBackend
from ttscale.strategies import (
    DVTS,
    PDR,
    STRATEGIES,
    BeamSearch,
    BestOfN,
    ParticleFilter,
    SequentialRefine,
    make_strategy,
)
from ttscale.types import Problem
from ttscale.verifiers import ScriptedVerifier

SEARCH = ("beam_search", "dvts", "particle_filter", "pdr", "sequential_refine")


def chain_solutions(depth: int = 3) -> list[str]:
    """Every path of ``depth`` steps, each step X (good) or Y (bad); answer = number of X."""
    sols = []
    for combo in product("XY", repeat=depth):
        steps = [f"{c}{i}." for i, c in enumerate(combo)]
        sols.append("\n\n".join(steps) + f"\n\nSo \\boxed{{{combo.count('X')}}}.")
    return sols


def likes_x(problem, steps):
    """Per-step score: X steps 0.9, Y steps 0.1, the answer step 0.5."""
    return [0.9 if s.startswith("X") else 0.1 if s.startswith("Y") else 0.5 for s in steps]


VERIFIER = ScriptedVerifier(likes_x)


def chain_backend(depth: int = 3) -> ScriptedBackend:
    return ScriptedBackend(script={"chain": chain_solutions(depth)})


def run(strategy, gen, verifier=VERIFIER, budget=None, prompt="Walk the chain."):
    return asyncio.run(strategy.run(Problem(prompt), gen, verifier, Budget.parse(budget)))


def check_selection(res, slots_per_group):
    """Every step: each group keeps its best distinct children, as many as it expanded, and
    only kept, unfinished children are expanded at the next step."""
    live_slots = dict(slots_per_group)
    prev_kept: set[int] | None = None
    for rec in res.trace:
        children = rec["children"]
        if prev_kept is not None:
            assert {c["parent"] for c in children} <= prev_kept
        for g, slots in live_slots.items():
            mine = [c for c in children if c["group"] == g]
            kept = [c for c in mine if c["kept"]]
            distinct = {c["step"] for c in mine}
            assert len(kept) == min(slots, len(distinct)), (rec["step"], g)
            dropped = [c for c in mine if not c["kept"]]
            if kept and dropped:  # nothing dropped scores above anything kept (unless a dup)
                kept_steps = {c["step"] for c in kept}
                worst_kept = min(c["score"] for c in kept)
                assert all(c["score"] <= worst_kept or c["step"] in kept_steps for c in dropped)
        live_slots = {
            g: sum(c["group"] == g and c["kept"] and not c["done"] for c in children)
            for g in live_slots
        }
        prev_kept = {c["id"] for c in children if c["kept"] and not c["done"]}


# -- beam search ---------------------------------------------------------------------------


def test_beam_search_keeps_top_scored_prefixes():
    gen = chain_backend()
    res = run(BeamSearch(n=8, beam_width=2, seed=3), gen)
    check_selection(res, {0: 4})
    # With a verifier that likes X, the all-X path survives and wins a best-of selection.
    best = run(BeamSearch(n=8, beam_width=2, seed=3, select="best"), chain_backend())
    assert best.answer == "3"
    assert all(c["step"].startswith("X") for c in best.trace[1]["children"] if c["kept"])


def test_beam_search_one_engine_call_per_step_with_all_beams():
    gen = chain_backend()
    res = run(BeamSearch(n=8, beam_width=2), gen)
    assert len(gen.calls) == res.extras["steps"] == res.ledger.engine_calls
    # Step 0: the 4 copies of the root go out as ONE request with n = 8 (shared prefix).
    assert len(gen.calls[0]) == 1 and gen.calls[0][0].n == 8
    for call, rec in zip(gen.calls, res.trace, strict=True):
        assert sum(r.n for r in call) == rec["live"] * 2 == rec["samples"]
        assert all(r.stop == ("\n\n",) and r.include_stop for r in call)
    assert res.ledger.verifier_calls == res.extras["steps"]  # one verifier call per step


def test_beam_search_prefixes_extend_parent_token_ids():
    gen = chain_backend()
    run(BeamSearch(n=4, beam_width=2), gen)
    prompts = [r.prompt_token_ids for call in gen.calls for r in call]
    root = prompts[0]
    assert all(p[: len(root)] == root for p in prompts)
    for later in gen.calls[2]:  # every step-2 prompt extends some step-1 prompt
        assert any(
            later.prompt_token_ids[: len(p.prompt_token_ids)] == p.prompt_token_ids
            and len(later.prompt_token_ids) > len(p.prompt_token_ids)
            for p in gen.calls[1]
        )


def test_beam_search_finishes_on_box_and_votes_finished_beams():
    gen = ScriptedBackend(
        script={"half": ["Compute.\n\nSo \\boxed{\\frac{1}{2}}.", "Guess.\n\nSo \\boxed{3}."]}
    )
    ver = ScriptedVerifier(lambda p, s: [0.9 if "frac" in x or "Compute" in x else 0.2 for x in s])
    res = run(BeamSearch(n=4, beam_width=2), gen, ver, prompt="half of one?")
    assert res.answer == "\\frac{1}{2}" and res.extras["stop_reason"] == "no_live_beams"
    assert all(c.finish_reason == "stop" and c.score is not None for c in res.candidates)


def test_lookahead_scores_children_after_a_greedy_rollout():
    gen = chain_backend(depth=4)
    res = run(BeamSearch(n=4, beam_width=2, lookahead=1), gen)
    # Per step: one expansion call, then one greedy lookahead call for all unfinished
    # children (none when every child finished); still one verifier call per step.
    expansions = [c for c in gen.calls if c[0].temperature > 0]
    lookaheads = [c for c in gen.calls if c[0].temperature == 0]
    assert len(expansions) == res.extras["steps"] == res.ledger.verifier_calls
    assert len(lookaheads) == sum(any(not c["done"] for c in t["children"]) for t in res.trace)
    assert res.ledger.engine_calls == len(gen.calls)
    assert all(r.n == 1 and r.stop == () for c in lookaheads for r in c)
    assert res.trace[0]["lookahead_tokens"] > 0


def test_max_steps_leaves_unfinished_candidates():
    res = run(BeamSearch(n=4, beam_width=2, max_steps=1), chain_backend())
    assert res.extras["stop_reason"] == "max_steps"
    assert res.candidates and all(c.finish_reason == "length" for c in res.candidates)


# -- DVTS ----------------------------------------------------------------------------------


def test_dvts_subtrees_are_independent():
    gen = chain_backend()
    res = run(DVTS(n=8, beam_width=2, seed=1), gen)
    assert res.strategy == "dvts" and res.extras["subtrees"] == 4
    check_selection(res, {g: 1 for g in range(4)})
    for rec in res.trace:
        for c in rec["children"]:  # a child stays in its parent's subtree
            parent_group = next(
                (p["group"] for r in res.trace for p in r["children"] if p["id"] == c["parent"]),
                c["group"],
            )
            assert c["group"] == parent_group
        groups = {c["group"] for c in rec["children"]}
        kept = [c for c in rec["children"] if c["kept"]]
        assert len(kept) == len(groups)  # exactly one survivor per live subtree
    # One engine call per step; step 0 is one request with n=8 split over the 4 subtrees.
    assert len(gen.calls) == res.extras["steps"] and gen.calls[0][0].n == 8
    assert sorted(c["group"] for c in res.trace[0]["children"]) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_dvts_is_beam_search_with_one_beam_per_subtree():
    assert DVTS(n=8, beam_width=2).num_subtrees == 4
    assert BeamSearch(n=8, beam_width=2, subtrees=None).num_subtrees == 4
    assert isinstance(DVTS(), BeamSearch)


# -- particle filtering --------------------------------------------------------------------


def test_particle_filter_one_call_per_step_for_all_alive_particles():
    gen = chain_backend()
    res = run(ParticleFilter(n=6), gen)
    assert len(gen.calls) == res.extras["steps"] == res.ledger.verifier_calls
    for call, rec in zip(gen.calls, res.trace, strict=True):
        assert sum(r.n for r in call) == rec["alive"]
    assert len(gen.calls[0]) == 1 and gen.calls[0][0].n == 6  # the root, once


def test_resampling_concentrates_on_high_reward_particles():
    res = run(ParticleFilter(n=8, weight_temperature=0.05, seed=2), chain_backend())
    first = res.trace[0]
    assert first["resampled"] and any(p["step"].startswith("X") for p in first["particles"])
    chosen = [first["particles"][a] for a in first["ancestors"]]
    assert all(p["step"].startswith("X") for p in chosen)  # Y weights are ~e^-16
    assert res.answer == "3"


def test_resampled_prefixes_share_requests_and_hit_the_prefix_cache():
    gen = chain_backend()
    res = run(ParticleFilter(n=8, weight_temperature=0.05), gen)
    # After resampling, the copies of one particle are one request with n = copies.
    assert len(gen.calls[1]) < res.trace[1]["alive"]
    assert res.ledger.cached_tokens > 0 and res.extras["cache_hit_rate"] > 0.5


def test_ess_trigger_skips_resampling_when_weights_are_flat():
    flat = ScriptedVerifier(lambda p, s: [0.5] * len(s))
    res = run(ParticleFilter(n=4, resample_when="ess"), chain_backend(), flat)
    assert res.extras["resamples"] == 0 and all(t["ess"] == pytest.approx(4) for t in res.trace)
    always = run(ParticleFilter(n=4, resample_when="always"), chain_backend(), flat)
    assert always.extras["resamples"] == len(always.trace) - 1  # not after the last step


def test_particle_filter_seeded_and_reentrant():
    pf = ParticleFilter(n=6, resampling="multinomial", seed=5)

    async def both():
        return await asyncio.gather(
            *(
                pf.run(Problem("Walk the chain."), chain_backend(), VERIFIER, Budget())
                for _ in range(2)
            )
        )

    a, b = asyncio.run(both())
    c = run(pf, chain_backend())
    assert (
        [t["ancestors"] for t in a.trace]
        == [t["ancestors"] for t in b.trace]
        == [t["ancestors"] for t in c.trace]
    )
    other = run(ParticleFilter(n=6, resampling="multinomial", seed=6), chain_backend())
    assert [t["ancestors"] for t in other.trace] != [t["ancestors"] for t in c.trace]


def test_finished_particles_are_kept_not_extended():
    res = run(ParticleFilter(n=4), chain_backend(depth=2))
    assert all(c.finish_reason == "stop" for c in res.candidates)
    assert len(res.candidates) == 4 and sum(res.extras["weights"]) == pytest.approx(1.0)


# -- PDR and sequential refinement --------------------------------------------------------

LONG = ["Think. " * 60 + "\n\nSo \\boxed{7}.", "Ponder. " * 50 + "\n\nSo \\boxed{8}."]


def test_pdr_select_workspace_is_bounded():
    gen = ScriptedBackend(script={"sum": LONG})
    res = run(
        PDR(drafts=(4, 4, 4, 1), workspace_tokens=64, keep=2), gen, None, prompt="What is the sum?"
    )
    base = len(
        gen.render(Problem(PDR().refine_template.format(problem="What is the sum?", workspace="")))
    )
    for rec in res.trace[:-1]:
        assert rec["distill"] == "select" and rec["workspace_tokens"] <= 64
    # The refine prompt never grows with the number of rounds: problem + <= 64 tokens.
    for call in gen.calls[1:]:
        assert len(call[0].prompt_token_ids) <= base + 64
    assert [c[0].n for c in gen.calls] == [4, 4, 4, 1] and res.answer in ("7", "8")


def test_pdr_summary_workspace_is_bounded_by_max_tokens():
    gen = ScriptedBackend(script={"sum": LONG})
    res = run(
        PDR(drafts=(3, 2), distill="summary", workspace_tokens=48),
        gen,
        None,
        prompt="What is the sum?",
    )
    draft0, summary, draft1 = gen.calls  # drafts, distil, refine
    assert draft0[0].n == 3 and summary[0].n == 1 and summary[0].max_tokens == 48
    assert res.trace[0]["distill"] == "summary" and res.trace[0]["workspace_tokens"] <= 48
    assert res.extras["total_tokens"] == (
        sum(res.trace[0]["draft_tokens"])
        + res.trace[0]["summary_tokens"]
        + sum(res.trace[1]["draft_tokens"])
    )
    assert res.extras["sequential_tokens"] == (
        max(res.trace[0]["draft_tokens"])
        + res.trace[0]["summary_tokens"]
        + max(res.trace[1]["draft_tokens"])
    )


def test_pdr_select_uses_verifier_ranking():
    gen = ScriptedBackend(script={"sum": LONG})
    likes_8 = ScriptedVerifier(lambda p, s: [0.9 if "{8}" in "".join(s) else 0.1])
    res = run(
        PDR(drafts=(4, 1), keep=1, workspace_tokens=400, seed=3),
        gen,
        likes_8,
        prompt="What is the sum?",
    )
    assert sorted(res.trace[0]["answers"]) == ["7", "7", "8", "8"]  # a mixed round
    assert "Ponder" in res.trace[0]["workspace"] and "Think" not in res.trace[0]["workspace"]
    assert res.extras["select"] == "weighted" and res.ledger.verifier_calls == 2


def test_sequential_refine_is_the_one_draft_case():
    gen = ScriptedBackend(script={"sum": LONG})
    res = run(SequentialRefine(), gen, None, prompt="What is the sum?")
    assert res.strategy == "sequential_refine" and [c[0].n for c in gen.calls] == [1, 1, 1]
    assert res.extras["sequential_tokens"] == res.extras["total_tokens"]
    prev = gen.decode(gen.encode(res.candidates[0].text)[-200:])
    assert prev[-100:] in gen.decode(gen.calls[1][0].prompt_token_ids)  # refines the draft


def test_pdr_composes_with_best_of_n_drafter():
    gen = ScriptedBackend(script={"sum": LONG})
    drafter = BestOfN(n=3, round_size=3, adaptive=False, min_sample_tokens=16)
    res = run(
        PDR(drafts=(3, 3), drafter=drafter),
        gen,
        None,
        budget="tokens=5000",
        prompt="What is the sum?",
    )
    assert len(res.candidates) == 6 and res.ledger.engine_calls == len(gen.calls) == 2
    assert (
        res.ledger.rollouts == 6
        and res.ledger.generated_tokens
        == sum(c.tokens for c in res.candidates)
        == res.extras["total_tokens"]
    )
    assert res.ledger.generated_tokens <= 5000


# -- wiring and validation -----------------------------------------------------------------


@pytest.mark.parametrize("name", SEARCH)
def test_solve_reaches_every_strategy(name):
    res = solve(
        "What is 12*7?",
        budget="tokens=4000",
        strategy=name,
        backend=ScriptedBackend(),
        verifier=ScriptedVerifier(lambda p, s: [0.5] * len(s)),
    )
    assert res.strategy == name and res.answer is not None
    assert name in STRATEGIES and res.ledger.generated_tokens <= 4000


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="n=10 is not a multiple of beam_width"):
        BeamSearch(n=10, beam_width=4)
    with pytest.raises(ConfigError, match="use n=8 or n=12"):
        BeamSearch(n=10, beam_width=4)
    with pytest.raises(ConfigError, match="drafts"):
        PDR(drafts=())
    with pytest.raises(ConfigError, match="resampling"):
        ParticleFilter(resampling="stratified")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no option"):
        make_strategy("dvts", width=3)
    with pytest.raises(ConfigError, match="verifier"):
        run(BeamSearch(n=4, beam_width=2), chain_backend(), None)
    assert PDR(drafts=[2, 1]).drafts == (2, 1)  # a list is normalised once


def test_beam_search_instance_is_reentrant():
    bs = BeamSearch(n=4, beam_width=2, seed=9)

    async def both():
        return await asyncio.gather(
            *(
                bs.run(Problem("Walk the chain."), chain_backend(), VERIFIER, Budget())
                for _ in range(2)
            )
        )

    a, b = asyncio.run(both())
    assert a.to_dict()["candidates"] == b.to_dict()["candidates"] and a.answer == b.answer
