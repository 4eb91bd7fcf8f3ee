"""ETS tree search (``strategies/tree_search.py``) and its pruning helpers
(``strategies/_prune.py``) on the scripted backend: the selection ILP on hand-built trees
with known optima (and against brute force), KV counting with shared ancestors, semantic
cluster coverage, the greedy fallback (solver timeout, failure, PuLP missing), REBASE
allocation, one engine call per step, KV accounting in trace/extras, degenerate runs
(empty expansions, all-zero scores, budget exhaustion mid-step) and hard budget caps."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pulp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ttscale import Budget, BudgetError, ConfigError, solve
from ttscale.backends import ScriptedBackend
from ttscale.evals.trace import kv_profile
from ttscale.strategies import ETS, STRATEGIES, make_strategy
from ttscale.strategies._prune import (
    PruneProblem,
    cluster_steps,
    objective,
    rebase_allocate,
    reward_values,
    select_greedy,
    select_ilp,
    select_leaves,
)
from ttscale.strategies.tree_search import held_tokens
from ttscale.types import Problem
from ttscale.verifiers import LLMJudge, ScriptedVerifier

# -- hand-built trees ------------------------------------------------------------------------
# root -> A (30 tokens) -> L0 (1), L1 (1);  root -> L2 (10).
PAIR = dict(
    values=[0.3, 0.3, 0.4],
    paths=[["A", "L0"], ["A", "L1"], ["L2"]],
    tokens={"A": 30, "L0": 1, "L1": 1, "L2": 10},
    clusters=[0, 1, 2],
)


def brute_force(problem: PruneProblem) -> float:
    n = len(problem.values)
    return max(
        objective(problem, keep)
        for r in range(1, n + 1)
        for keep in itertools.combinations(range(n), r)
    )


def test_ilp_finds_known_optimum_that_greedy_misses():
    # lambda_kv=0.5, no diversity: {L2} = 0.4 - 0.5*10/42 = 0.281; the siblings only pay
    # together with it: {all} = 1 - 0.5 = 0.5 (optimal). Greedy stops at {L2}.
    problem = PruneProblem(**PAIR, lambda_kv=0.5, lambda_div=0.0)
    sel = select_leaves(problem)
    assert sel.method == "ilp" and sel.keep == (0, 1, 2)
    assert sel.objective == pytest.approx(0.5) == pytest.approx(brute_force(problem))
    assert sel.kv_tokens == 42
    greedy = select_greedy(problem)
    assert greedy.keep == (2,) and greedy.objective == pytest.approx(0.4 - 0.5 * 10 / 42)


def test_ilp_prefers_siblings_sharing_an_ancestor():
    # Expensive shared ancestor A: keeping L0 and L1 together costs A once.
    problem = PruneProblem(
        values=[0.3, 0.3, 0.4],
        paths=[["A", "L0"], ["A", "L1"], ["B", "L2"]],
        tokens={"A": 10, "L0": 5, "L1": 5, "B": 40, "L2": 5},
        clusters=[0, 0, 0],
        lambda_kv=1.0,
        lambda_div=0.0,
    )
    sel = select_leaves(problem)
    # {L0, L1}: 0.6 - 20/65 = 0.292 beats {L2}: 0.4 - 45/65 and any set with B.
    assert sel.keep == (0, 1) and sel.kv_tokens == 20
    assert sel.objective == pytest.approx(0.6 - 20 / 65) == pytest.approx(brute_force(problem))


def test_kv_counting_with_shared_ancestors():
    tree = nx.DiGraph()
    tree.add_node(0, tokens=100)  # the prompt
    for v, parent, tok in [(1, 0, 10), (2, 1, 5), (3, 1, 7), (4, 0, 20), (5, 2, 3)]:
        tree.add_node(v, tokens=tok)
        tree.add_edge(parent, v)
    assert held_tokens(tree, [5]) == 100 + 10 + 5 + 3
    assert held_tokens(tree, [5, 3]) == 100 + 10 + 5 + 3 + 7  # node 1 counted once
    assert held_tokens(tree, [5, 3, 4, 2]) == 100 + 10 + 5 + 3 + 7 + 20
    problem = PruneProblem(
        values=[0.5, 0.5],
        paths=[[1, 2, 5], [1, 3]],
        tokens={1: 10, 2: 5, 3: 7, 5: 3},
        clusters=[0, 1],
        lambda_kv=1.0,
        lambda_div=0.0,
    )
    assert problem.total_tokens == 25
    assert objective(problem, [0, 1]) == pytest.approx(1.0 - 1.0)
    assert objective(problem, [1]) == pytest.approx(0.5 - 17 / 25)


def test_cluster_coverage_term_keeps_one_leaf_per_cluster():
    # Four cheap leaves, two clusters; reward favours cluster 0 heavily. With a strong
    # coverage weight the best leaf of cluster 1 is kept too; without it, it is not.
    base = dict(
        values=reward_values([0.9, 0.8, 0.2, 0.1], 0.2),
        paths=[["a"], ["b"], ["c"], ["d"]],
        tokens={"a": 5, "b": 5, "c": 5, "d": 5},
        clusters=[0, 0, 1, 1],
        lambda_kv=2.0,
    )
    without = select_leaves(PruneProblem(**base, lambda_div=0.0))
    assert without.keep == (0,) and without.covered == 1
    with_div = select_leaves(PruneProblem(**base, lambda_div=1.5))
    assert with_div.keep == (0, 2) and with_div.covered == 2
    assert with_div.objective == pytest.approx(brute_force(PruneProblem(**base, lambda_div=1.5)))


def test_cluster_steps_groups_near_duplicates():
    texts = [
        "We compute 12 * 7 = 84.\n\n",
        "we compute 12*7 = 84.",
        "We  compute 12 * 7 = 84.\n\n",  # whitespace only: identical after normalising
        "Let x be the number of apples; then 3x + 2 = 11.",
        "",
        "",
    ]
    labels = cluster_steps(texts, threshold=0.3)
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] != labels[0] and labels[4] == labels[5] != labels[0]
    assert labels == [0, 0, 0, 1, 2, 2]  # first-occurrence numbering
    assert cluster_steps(texts, threshold=0.0)[:3] == [0, 1, 0]  # 0: identical only
    assert len(set(cluster_steps(texts, threshold=1.0))) <= 2
    assert cluster_steps([], 0.3) == [] and cluster_steps(["x"], 0.3) == [0]
    with pytest.raises(ConfigError, match="cosine distance"):
        cluster_steps(texts, threshold=-1)


class _Solver:
    """A PuLP solver double: ``status`` as CBC reports it after stopping on its time cap."""

    def __init__(self, sol_status, keep=()):
        self.sol_status, self.keep = sol_status, keep

    def actualSolve(self, lp, **kwargs):  # noqa: N802 - PuLP's name
        for v in lp.variables():
            v.varValue = 1.0 if v.name in {f"x{i}" for i in self.keep} else 0.0
        lp.assignStatus(pulp.LpStatusNotSolved, self.sol_status)
        return lp.status


def test_greedy_fallback_on_solver_timeout_without_solution():
    problem = PruneProblem(**PAIR, lambda_kv=0.5, lambda_div=0.0)
    timed_out = lambda nodes, secs: _Solver(pulp.LpSolutionNoSolutionFound)  # noqa: E731
    keep, reason = select_ilp(problem, node_limit=5, solver=timed_out)
    assert keep is None and "node limit 5" in reason
    sel = select_leaves(problem, node_limit=5, time_limit=0.01, solver=timed_out)
    assert sel.method == "greedy" and sel.keep == (2,) and "time cap 0.01s" in sel.reason


def test_timeout_incumbent_used_only_if_it_beats_greedy():
    problem = PruneProblem(**PAIR, lambda_kv=0.5, lambda_div=0.0)
    good = lambda nodes, secs: _Solver(pulp.LpSolutionIntegerFeasible, keep=(0, 1, 2))  # noqa: E731
    sel = select_leaves(problem, solver=good)
    assert sel.method == "ilp_incumbent" and sel.keep == (0, 1, 2)
    bad = lambda nodes, secs: _Solver(pulp.LpSolutionIntegerFeasible, keep=(0,))  # noqa: E731
    sel = select_leaves(problem, solver=bad)
    assert sel.method == "greedy" and sel.keep == (2,)


def test_real_cbc_node_limit_is_respected():
    # A bigger instance under a tiny node limit: CBC either proves the optimum or the greedy
    # fallback answers; either way a valid, non-empty selection.
    n = 60
    problem = PruneProblem(
        values=reward_values([(i * 37 % 11) / 10 for i in range(n)], 0.2),
        paths=[[f"p{i % 7}", f"q{i % 13}", i] for i in range(n)],
        tokens={
            **{f"p{j}": 20 for j in range(7)},
            **{f"q{j}": 9 for j in range(13)},
            **{i: 3 for i in range(n)},
        },
        clusters=[i % 9 for i in range(n)],
        lambda_kv=1.0,
        lambda_div=1.5,
    )
    sel = select_leaves(problem, node_limit=2)
    assert sel.keep and sel.method in ("ilp", "ilp_incumbent", "greedy")
    assert sel.objective >= select_greedy(problem).objective - 1e-9


def test_solver_crash_and_missing_pulp_fall_back(monkeypatch):
    problem = PruneProblem(**PAIR, lambda_kv=0.5, lambda_div=0.0)

    class Crash:
        def actualSolve(self, lp, **kwargs):  # noqa: N802
            raise RuntimeError("cbc binary segfaulted")

    sel = select_leaves(problem, solver=lambda nodes, secs: Crash())
    assert sel.method == "greedy" and "segfaulted" in sel.reason
    monkeypatch.setitem(sys.modules, "pulp", None)
    sel = select_leaves(problem)
    assert sel.method == "greedy" and "pulp is not installed" in sel.reason


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_ilp_matches_brute_force(data):
    n = data.draw(st.integers(2, 6))
    inner = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))
    paths = []
    for i in range(n):
        anc = data.draw(st.lists(st.integers(0, len(inner) - 1), max_size=2, unique=True))
        paths.append([f"a{j}" for j in anc] + [f"l{i}"])
    tokens = {f"a{j}": t for j, t in enumerate(inner)}
    tokens.update({f"l{i}": data.draw(st.integers(0, 30)) for i in range(n)})
    problem = PruneProblem(
        values=reward_values(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), 0.2),
        paths=paths,
        tokens=tokens,
        clusters=data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        lambda_kv=data.draw(st.floats(0, 3)),
        lambda_div=data.draw(st.floats(0, 3)),
    )
    sel = select_leaves(problem)
    assert sel.method == "ilp"
    assert sel.objective == pytest.approx(brute_force(problem), abs=1e-6)
    assert select_greedy(problem).objective <= sel.objective + 1e-6


def test_rebase_allocation():
    assert rebase_allocate([0.9, 0.1], 4, 0.2) == [4, 0]  # ceil(4 * 0.98) = 4
    assert rebase_allocate([0.5, 0.5, 0.5], 4, 0.2) == [2, 1, 1]
    assert sum(rebase_allocate([0.3, 0.2, 0.9, 0.1], 7, 1.0)) == 7
    assert rebase_allocate([0.0, 0.0], 0, 0.2) == [0, 0] and rebase_allocate([], 3, 0.2) == []
    with pytest.raises(ConfigError):
        reward_values([0.1], 0.0)


# -- the strategy --------------------------------------------------------------------------
def chain(depth: int = 3) -> list[str]:
    """Every path of ``depth`` steps, each X (good) or Y (bad); answer = number of X."""
    out = []
    for combo in itertools.product("XY", repeat=depth):
        steps = [
            f"{c}{i} " + ("long reasoning " * (3 if c == "X" else 1)) for i, c in enumerate(combo)
        ]
        out.append("\n\n".join(steps) + f"\n\nSo \\boxed{{{combo.count('X')}}}.")
    return out


def likes_x(problem, steps):
    return [0.9 if s.startswith("X") else 0.1 if s.startswith("Y") else 0.5 for s in steps]


def run(strategy, gen, verifier=None, budget="tokens=20000", prompt="Walk the chain."):
    verifier = verifier or ScriptedVerifier(likes_x)
    return asyncio.run(strategy.run(Problem(prompt), gen, verifier, Budget.parse(budget)))


def test_registered_and_solve_works():
    assert STRATEGIES["ets"] is ETS
    assert isinstance(make_strategy("ets", width=4, lambda_kv=0.5), ETS)
    with pytest.raises(ConfigError, match="no option"):
        make_strategy("ets", beam_width=2)
    with pytest.raises(ConfigError, match="verifier"):
        solve("What is 12*7?", budget="tokens=2000", strategy="ets", backend="scripted")
    res = solve(
        "What is 12*7?",
        budget="tokens=4000",
        strategy="ets",
        backend="scripted",
        verifier=ScriptedVerifier(lambda p, s: [0.5] * len(s)),
        width=4,
    )
    assert res.strategy == "ets" and res.answer in ("83", "84", "85")
    assert res.to_json()  # trace and extras are JSON-serialisable


@pytest.mark.parametrize(
    "bad",
    [
        dict(width=0),
        dict(lambda_kv=-1),
        dict(softmax_temperature=0),
        dict(cluster_threshold=3),
        dict(agg="max"),
        dict(ilp_time_limit=0),
        dict(ilp_node_limit=0),
    ],
)
def test_config_errors(bad):
    with pytest.raises(ConfigError):
        ETS(**bad)


def test_one_engine_call_per_step_and_kv_accounting():
    gen = ScriptedBackend(script={"chain": chain()})
    res = run(ETS(width=6, step_tokens=64, max_tokens=256, seed=1), gen)
    assert len(gen.calls) == res.extras["steps"] == len(res.trace) == res.ledger.engine_calls
    assert res.ledger.verifier_calls == len(res.trace)
    for call, rec in zip(gen.calls, res.trace, strict=True):
        assert sum(r.n for r in call) == rec["samples"] <= 6
        assert len(call) == rec["requests"]
        # Every request extends an expanded node's ids (prompt ids never re-tokenised).
        assert len({r.prompt_token_ids for r in call}) == len(call)
    ids = {c["id"]: c for rec in res.trace for c in rec["children"]}
    for rec in res.trace[1:]:
        parents = {c["parent"] for c in rec["children"]}
        assert all(ids[p]["kept"] and not ids[p]["done"] for p in parents)
    # KV: sharing beats no-sharing; the engine's prefix cache served the extended prefixes.
    assert res.extras["kv_peak"] <= res.extras["kv_no_sharing_peak"]
    assert res.extras["kv_sharing_ratio"] > 1
    assert res.extras["policy_hit_rate"] > 0 and res.ledger.cached_tokens > 0
    for rec in res.trace:
        assert rec["hit_rate"] == pytest.approx(
            rec["cached_tokens"] / rec["prompt_tokens"], abs=1e-6
        )
        assert rec["kv_kept"] <= rec["kv_tree"] <= rec["kv_no_sharing"]
    # The trace-only recomputation (used to compare with beam search) agrees.
    data = res.to_dict()
    prof = kv_profile(data)
    assert [p["kv_tree"] for p in prof] == [r["kv_tree"] for r in res.trace]
    assert [p["kv_no_sharing"] for p in prof] == [r["kv_no_sharing"] for r in res.trace]
    assert [p["prompt_tokens"] for p in prof] == [r["prompt_tokens"] for r in res.trace]


def test_search_prefers_good_steps_and_answers():
    gen = ScriptedBackend(script={"chain": chain()})
    res = run(ETS(width=8, step_tokens=64, max_tokens=256, seed=0), gen)
    assert res.answer == "3"  # X X X: the verifier's favourite path
    assert res.extras["stop_reason"] in ("width_used", "all_finished")
    assert res.extras["finished"] == 8  # every unit of width ends in a finished sample
    assert set(res.extras["solver"]) <= {"ilp", "trivial"}


def test_lambda_kv_prunes_harder_than_rebase():
    def kept(strategy):
        res = run(strategy, ScriptedBackend(script={"chain": chain(4)}))
        return sum(c["kept"] for rec in res.trace for c in rec["children"]), res

    n_rebase, rebase = kept(
        ETS(
            width=8,
            lambda_kv=0,
            lambda_div=0,
            softmax_temperature=5.0,
            step_tokens=64,
            max_tokens=400,
        )
    )
    n_ets, ets = kept(
        ETS(
            width=8,
            lambda_kv=3.0,
            lambda_div=0,
            softmax_temperature=5.0,
            step_tokens=64,
            max_tokens=400,
        )
    )
    assert set(rebase.extras["solver"]) <= {"rebase", "trivial"}
    assert n_ets < n_rebase
    assert ets.extras["kv_mean"] < rebase.extras["kv_mean"]


def test_greedy_mode_and_solver_failure_still_answer(monkeypatch):
    gen = ScriptedBackend(script={"chain": chain()})
    res = run(ETS(width=6, ilp=False, step_tokens=64, max_tokens=256), gen)
    assert res.answer is not None and set(res.extras["solver"]) <= {"greedy", "trivial"}
    monkeypatch.setattr(
        "ttscale.strategies._prune._cbc",
        lambda nodes, secs: (_ for _ in ()).throw(pulp.PulpSolverError("no cbc")),
    )
    res = run(
        ETS(width=6, step_tokens=64, max_tokens=256), ScriptedBackend(script={"chain": chain()})
    )
    assert res.answer is not None and "greedy" in res.extras["solver"]
    reasons = [
        r["selection"]["reason"]
        for r in res.trace
        if r.get("selection") and r["selection"]["method"] == "greedy"
    ]
    assert reasons and all("no cbc" in x for x in reasons)


def test_all_zero_scores_still_answer():
    res = run(
        ETS(width=4, step_tokens=64, max_tokens=256),
        ScriptedBackend(script={"chain": chain()}),
        verifier=ScriptedVerifier(lambda p, s: [0.0] * len(s)),
    )
    assert res.answer is not None and res.candidates
    assert all(c.score == 0.0 for c in res.candidates)


def test_empty_expansions_return_partial_answer():
    # The policy emits nothing (EOS at once): every child is an empty finished step.
    res = run(ETS(width=4, step_tokens=64, max_tokens=256), ScriptedBackend(script={"chain": [""]}))
    assert res.answer is None and res.candidates and res.ledger.engine_calls == 1
    assert res.extras["stop_reason"] in ("width_used", "all_finished")
    assert res.extras["tree_nodes"] == 2  # root + one (deduplicated) empty child


def test_budget_exhaustion_mid_step_returns_partial_answer():
    # Enough for a couple of steps only: the search stops on the token cap and answers from
    # the open leaves (partial candidates carry no boxed answer, so answer may be None).
    gen = ScriptedBackend(script={"chain": chain(6)})
    res = run(
        ETS(width=4, step_tokens=40, max_tokens=400, min_step_tokens=8), gen, budget="tokens=300"
    )
    assert res.extras["stop_reason"].startswith("budget:")
    assert res.ledger.generated_tokens <= 300 and res.ledger.stopped_by is not None
    assert res.candidates and all(
        c.finish_reason == "length" for c in res.candidates if c.answer is None
    )
    # The verifier's own engine call refused mid-step: the children generated are kept.
    judge = LLMJudge(ScriptedBackend(script=lambda p: ["Yes"]), yes_words=("y",), no_words=("n",))
    res = run(
        ETS(width=4, step_tokens=40, max_tokens=400, min_step_tokens=8, verifier_reserve=0),
        ScriptedBackend(script={"chain": chain(6)}),
        judge,
        budget="rollouts=5",
    )
    assert res.extras["stop_reason"] == "budget:verifier" and res.ledger.verifier_calls == 0
    assert res.candidates and res.ledger.rollouts <= 5 and res.ledger.engine_calls == 1


def test_missing_clustering_libraries_fail_before_spending(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)
    gen = ScriptedBackend(script={"chain": chain()})
    with pytest.raises(ConfigError, match="lambda_div=0"):
        run(ETS(width=4), gen)
    assert gen.calls == []
    res = run(ETS(width=4, lambda_div=0.0, step_tokens=64, max_tokens=256), gen)
    assert res.answer is not None  # no clusters needed without the coverage term


def test_budget_too_small_for_one_step():
    gen = ScriptedBackend(script={"chain": chain()})
    with pytest.raises(BudgetError, match="ets step"):
        run(ETS(width=8, min_step_tokens=32), gen, budget="tokens=100")
    assert gen.calls == []


def test_reentrant_and_deterministic():
    def go():
        return run(
            ETS(width=6, step_tokens=64, max_tokens=256, seed=3),
            ScriptedBackend(script={"chain": chain()}),
        )

    def strip(trace):  # solver wall time differs run to run
        return [
            {**r, "selection": {**r["selection"], "seconds": 0} if r.get("selection") else None}
            for r in trace
        ]

    a, b = go(), go()
    assert a.answer == b.answer and strip(a.trace) == strip(b.trace)


SOLUTIONS = [
    "We set up.\n\nWe compute 6 * 7.\n\nSo \\boxed{42}.",
    "We guess.\n\nWe compute 6 * 8.\n\nThen we check it twice.\n\nSo \\boxed{48}.",
    "Let us think.\n\nSo \\boxed{42}.",
]

budgets = st.builds(
    Budget,
    tokens=st.one_of(st.none(), st.integers(1, 3000)),
    rollouts=st.one_of(st.none(), st.integers(1, 40)),
    flops=st.one_of(st.none(), st.floats(8.0, 10.5).map(lambda e: 10.0**e)),
).map(lambda b: Budget(tokens=400) if b.is_unlimited else b)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    budget=budgets,
    generative=st.booleans(),
    width=st.integers(1, 8),
    step_tokens=st.integers(4, 64),
    min_step=st.integers(1, 8),
    max_tokens=st.integers(16, 200),
    expansions=st.integers(1, 8),
    lambda_kv=st.floats(0, 3),
    lambda_div=st.floats(0, 3),
    ilp=st.booleans(),
)
def test_ets_never_exceeds_a_hard_cap(
    budget,
    generative,
    width,
    step_tokens,
    min_step,
    max_tokens,
    expansions,
    lambda_kv,
    lambda_div,
    ilp,
):
    strategy = ETS(
        width=width,
        step_tokens=step_tokens,
        min_step_tokens=min_step,
        max_tokens=max_tokens,
        expansions=expansions,
        lambda_kv=lambda_kv,
        lambda_div=lambda_div,
        ilp=ilp,
    )
    gen = ScriptedBackend(script={"6": SOLUTIONS})
    verifier = (
        LLMJudge(ScriptedBackend(script=lambda p: ["Yes"]), yes_words=("y",), no_words=("n",))
        if generative
        else ScriptedVerifier(lambda p, s: [0.3] * len(s))
    )
    try:
        res = asyncio.run(strategy.run(Problem("What is 6 times 7?"), gen, verifier, budget))
    except BudgetError:
        assert gen.calls == []
        event("BudgetError before the first step")
        return
    event(f"ran: stop={res.extras['stop_reason']}")
    led = res.ledger
    if budget.tokens is not None:
        assert led.generated_tokens <= budget.tokens
    if budget.rollouts is not None:
        assert led.rollouts <= budget.rollouts
    if budget.flops is not None:
        assert led.eflops <= budget.flops
    assert not {k: v for k, v in led.overshoot.items() if k != "seconds"}
    assert res.candidates and len(gen.calls) == len(res.trace) <= expansions
    assert all(sum(r.n for r in call) <= width for call in gen.calls)


def test_benchmark_script_scripted_dry_run(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "tree_search.py"
    cmd = [
        sys.executable,
        str(script),
        "--backend",
        "scripted",
        "--problems",
        "2",
        "--results",
        str(tmp_path),
        "--traces",
        str(tmp_path / "traces"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT kv_reduction=") and "acc_ets=" in last and "acc_beam=" in last
    rows = (tmp_path / "tree_search_scripted_rows.jsonl").read_text().splitlines()
    assert len(rows) == 6  # 2 problems x (beam_search, ets, rebase)
    assert (tmp_path / "tree_search_scripted.md").exists()
    assert len(list((tmp_path / "traces").glob("*.json"))) == 6
    groups = tmp_path / "tree_search_scripted_rows_groups.jsonl"
    assert len(groups.read_text().splitlines()) == 3  # one concurrent group per strategy
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # resumable
    assert (
        again.returncode == 0
        and len((tmp_path / "tree_search_scripted_rows.jsonl").read_text().splitlines()) == 6
        and len(groups.read_text().splitlines()) == 3
    )
