"""Program-aided strategies on the scripted backend, with programs run in the real sandbox:
votes over executed answers, failed programs cast none, the adaptive stop and budget caps,
the ledger's program accounting, the hybrid vote's one call per round, TIR rounds, and exact
replay from a program pool without running anything."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ttscale import solve
from ttscale.backends import ScriptedBackend
from ttscale.budget import Budget
from ttscale.errors import BudgetError, ConfigError
from ttscale.evals.datasets import Selection
from ttscale.evals.pool import build_pool
from ttscale.pools import ReplayGenerator, Sampling, load_pool
from ttscale.sandbox import detect_isolation
from ttscale.strategies import HybridVote, ProgramOfThought, ToolIntegrated, make_strategy
from ttscale.strategies.tir import CODE_CLOSE, format_output
from ttscale.types import (
    DEFAULT_SYSTEM_PROMPT,
    PROGRAM_INSTRUCTION,
    PROGRAM_SYSTEM_PROMPT,
    ExecResult,
    Problem,
)

pytestmark = pytest.mark.skipif(
    detect_isolation().level != "namespaces",
    reason="program strategies run programs in the sandbox, which needs namespaces here",
)


def prog(body: str) -> str:
    return f"Here is a program.\n```python\n{body}\n```\nIt prints the answer."


PROGRAMS = [
    prog("from sympy import Integer\nprint(Integer(12) * 7)"),
    prog("print(12 * 7)"),
    prog("print(85)"),
    prog("raise ValueError('model bug')"),
    "I cannot write code for this.",
    prog("x = 84\nprint(f'The answer is {x}')"),
]


def script(programs=PROGRAMS, cot=None):
    """Scripted replies: programs for the program prompt, CoT answers for the plain one."""
    cot = cot or ["We multiply.\n\nThe answer is \\boxed{84}."]

    def fn(problem: str) -> list[str]:
        return list(programs) if problem.endswith(PROGRAM_INSTRUCTION) else list(cot)

    return fn


def run(strategy, backend, budget="tokens=100000"):
    return asyncio.run(strategy.run(Problem("What is 12*7?"), backend, None, Budget.parse(budget)))


def test_program_votes_over_executed_answers():
    backend = ScriptedBackend(script=script())
    res = run(ProgramOfThought(n=24, round_size=24, adaptive=False), backend)
    assert res.answer == "84"
    table = {row["answer"]: row["votes"] for row in res.extras["votes"]}
    assert table["84"] > table.get("85", 0) > 0
    ran = [c for c in res.candidates if c.program is not None]
    failed = res.extras["failures"]
    assert failed.get("no_program", 0) == sum(c.program is None for c in res.candidates) > 0
    assert (
        failed.get("exception", 0)
        == sum(c.execution is not None and c.execution.exit_code == 1 for c in res.candidates)
        > 0
    )
    assert all(c.answer is None for c in res.candidates if c.program is None)
    assert res.ledger.programs == len(ran) and res.ledger.sandbox_seconds > 0
    assert res.ledger.to_dict()["programs"] == len(ran)
    assert res.ledger.engine_calls == 1 and res.ledger.rollouts == 24
    # The prompt is the program prompt, with the coder's system message.
    text = backend.decode(backend.calls[0][0].prompt_token_ids)
    assert PROGRAM_INSTRUCTION in text and PROGRAM_SYSTEM_PROMPT in text
    assert DEFAULT_SYSTEM_PROMPT not in text


def test_printed_forms_vote_together():
    programs = [prog("print('1/2')"), prog("print(0.5)"), prog("print(1/3)")]
    res = run(
        ProgramOfThought(n=9, round_size=9, adaptive=False),
        ScriptedBackend(script=script(programs)),
    )
    assert res.extras["votes"][0]["votes"] > res.extras["votes"][-1]["votes"]
    leader = res.extras["votes"][0]
    assert leader["answer"] in ("\\frac{1}{2}", "1/2", "0.5")


def test_adaptive_stop_ends_early_and_keeps_budget():
    res = run(
        ProgramOfThought(n=16, round_size=4), ScriptedBackend(script=script([prog("print(84)")]))
    )
    assert res.answer == "84" and res.extras["stop_reason"] == "confident"
    assert len(res.candidates) == 4 and res.ledger.engine_calls == 1
    assert res.ledger.unused()["tokens"] > 0


def test_budget_caps_programs_and_refuses_the_unaffordable():
    res = run(
        ProgramOfThought(n=8, round_size=8, adaptive=False),
        ScriptedBackend(script=script([prog("print(84)")])),
        budget="rollouts=3",
    )
    assert len(res.candidates) == 3 and res.ledger.rollouts == 3
    assert res.extras["stop_reason"] == "budget:rollouts"
    with pytest.raises(BudgetError, match="cannot pay for one sample"):
        run(ProgramOfThought(), ScriptedBackend(script=script()), budget="tokens=50")


def test_program_limits_reach_the_sandbox():
    res = run(
        ProgramOfThought(n=2, round_size=2, adaptive=False, timeout=0.5),
        ScriptedBackend(script=script([prog("while True:\n    pass")])),
    )
    assert res.answer is None
    assert all(c.execution.timed_out for c in res.candidates)
    assert res.extras["failures"] == {"timeout": 2}


def test_options_are_validated():
    with pytest.raises(ConfigError, match="temperature"):
        ProgramOfThought(temperature=-1)
    with pytest.raises(ConfigError, match="timeout"):
        ProgramOfThought(timeout=0)
    with pytest.raises(ConfigError, match="n_cot"):
        HybridVote(n_cot=0, n_program=0)
    with pytest.raises(ConfigError, match="no option"):
        make_strategy("program", beams=3)


def test_hybrid_draws_both_kinds_in_one_call_and_votes_together():
    # CoT alone would say 85 (2 of 3); the executed programs tip the vote to 84.
    cot = [
        "Guess.\n\nThe answer is \\boxed{85}.",
        "Again.\n\nThe answer is \\boxed{85}.",
        "Careful.\n\nThe answer is \\boxed{84}.",
    ]
    backend = ScriptedBackend(script=script([prog("print(84)")], cot))
    res = run(HybridVote(n_cot=6, n_program=3, round_size=8, adaptive=False, seed=1), backend)
    assert res.ledger.engine_calls == 1 and len(backend.calls[0]) == 2
    assert res.extras["programs"] == 3 and res.extras["cot"] == 6
    assert res.answer == "84" and res.ledger.programs == 3
    # Programs come first, so a tie goes to executed answers.
    assert res.candidates[0].program is not None


def test_hybrid_program_weight_counts():
    cot = ["Guess.\n\nThe answer is \\boxed{85}."]
    res = run(
        HybridVote(n_cot=3, n_program=2, program_weight=2.0, adaptive=False),
        ScriptedBackend(script=script([prog("print(84)")], cot)),
    )
    assert res.answer == "84"  # 2 programs x 2 > 3 CoT votes
    weights = {row["answer"]: row["weight"] for row in res.extras["votes"]}
    assert weights == {"84": 4.0, "85": 3.0}


TIR_SOLUTION = (
    "Let me compute it.\n```python\nprint(6 * 7)\n```\n"
    "```output\n42\n```\n"
    "The program printed 42, so the answer is \\boxed{42}."
)
TIR_ERROR = (
    "Try dividing.\n```python\nprint(1 / 0)\n```\n"
    "```output\nZeroDivisionError: division by zero\n```\n"
    "That failed; by hand it is 42.\n```python\nprint(40 + 2)\n```\n"
    "```output\n42\n```\n"
    "So \\boxed{42}."
)


def test_tir_runs_code_and_continues_with_its_output():
    backend = ScriptedBackend(script=lambda p: [TIR_SOLUTION])
    res = run(ToolIntegrated(n=3, round_size=3, adaptive=False), backend)
    assert res.answer == "42"
    assert all(c.text == TIR_SOLUTION for c in res.candidates)
    assert res.extras["program_calls"] == [1, 1, 1]
    # Round 0: one request of n=3; round 1: the three samples continued in one call.
    assert [len(call) for call in backend.calls] == [1, 3]
    assert backend.calls[0][0].n == 3 and backend.calls[0][0].stop == (CODE_CLOSE,)
    assert res.ledger.programs == 3 and res.ledger.engine_calls == 2
    # Generated tokens exclude the output blocks (those are prompt tokens).
    out_block = "```output\n42\n```\n"
    assert res.candidates[0].tokens == len((TIR_SOLUTION.replace(out_block, "")).encode())


def test_tir_shows_errors_and_allows_several_calls():
    backend = ScriptedBackend(script=lambda p: [TIR_ERROR])
    res = run(ToolIntegrated(n=1, adaptive=False), backend)
    assert res.answer == "42" and res.extras["program_calls"] == [2]
    assert res.candidates[0].text == TIR_ERROR


def test_tir_caps_calls_and_answers_with_the_last_print():
    looping = "```python\nprint(41 + 1)\n```\n```output\n42\n```\n" * 3
    backend = ScriptedBackend(script=lambda p: [looping])
    res = run(ToolIntegrated(n=1, max_calls=2, adaptive=False), backend)
    assert res.extras["program_calls"] == [2]
    assert res.answer == "42"  # no box: what its last program printed


def test_format_output_shows_the_error_line():
    err = ExecResult(
        "", "Traceback...\nZeroDivisionError: division by zero\n", 1, None, False, False, 0.01
    )
    assert format_output(err) == "```output\nZeroDivisionError: division by zero\n```\n"
    slow = ExecResult("", "", None, 9, True, False, 10.0)
    assert "TimeoutError" in format_output(slow)
    long = ExecResult("x" * 5000, "", 0, None, False, False, 0.01)
    assert len(format_output(long)) < 1000


# -- pools and replay ----------------------------------------------------------------------
PROBLEMS = [
    {"id": "a", "problem": "What is 12*7?", "answer": "84", "level": 1},
    {"id": "b", "problem": "What is 3+4?", "answer": "7", "level": 2},
]


def _program_script(problem: str) -> list[str]:
    if "12*7" in problem:
        return [prog("print(84)"), prog("print(83)"), prog("print(1/0)"), "no code"]
    return [prog("print(3 + 4)"), prog("print(8)")]


def _build(tmp_path: Path, *, program: bool) -> Path:
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    out = tmp_path / ("program_pool" if program else "cot_pool")
    build_pool(
        data,
        out=out,
        sampling=Sampling(
            k=8,
            temperature=0.7,
            top_p=0.95 if program else 1.0,
            max_tokens=768 if program else 1024,
            system_prompt=PROGRAM_SYSTEM_PROMPT if program else DEFAULT_SYSTEM_PROMPT,
            instruction=PROGRAM_INSTRUCTION if program else None,
            execute=program,
        ),
        selection=Selection(),
        backend=ScriptedBackend(script=_program_script if program else None),
        progress=False,
    )
    return out


def test_program_pool_stores_programs_and_results(tmp_path):
    pool = load_pool(_build(tmp_path, program=True))
    assert pool.manifest["format_version"] == 2 and pool.sampling.execute
    assert pool.manifest["sandbox"]["isolation"]["level"] == "namespaces"
    samples = pool.problems["a"].samples
    for s in samples:
        if s.program is None:
            assert s.execution is None and s.answer is None and s.correct is False
        elif s.execution.ok:
            assert s.answer == s.execution.stdout.strip() and s.correct == (s.answer == "84")
        else:
            assert s.answer is None and "ZeroDivisionError" in s.execution.stderr


def test_program_replay_is_exact_and_runs_nothing(tmp_path, monkeypatch):
    pool = load_pool(_build(tmp_path, program=True))
    live = ReplayGenerator(pool, order_seed=3)
    opts = dict(
        n=6, round_size=3, adaptive=False, max_tokens=768, temperature=0.7, budget="tokens=100000"
    )
    import ttscale.strategies.program as program_module

    def no_sandbox():
        raise AssertionError("replay must not run programs")

    monkeypatch.setattr(program_module, "default_sandbox", no_sandbox)
    a = solve("What is 12*7?", backend=live, strategy="program", **opts)
    b = solve("What is 12*7?", backend=live.fork(3), strategy="program", **opts)
    assert a.answer == b.answer == "84"
    assert [c.execution for c in a.candidates] == [c.execution for c in b.candidates]
    stored = {s.program: s.execution for s in pool.problems["a"].samples if s.program}
    for c in a.candidates:
        assert c.execution is None or c.execution == stored[c.program]
    assert a.ledger.programs == sum(c.execution is not None for c in a.candidates)
    assert a.ledger.sandbox_seconds == pytest.approx(
        sum(c.execution.seconds for c in a.candidates if c.execution)
    )


def test_hybrid_replays_from_a_cot_and_a_program_pool(tmp_path, monkeypatch):
    cot = load_pool(_build(tmp_path, program=False))
    program = load_pool(_build(tmp_path, program=True))
    gen = ReplayGenerator(cot, order_seed=0, also=[program])
    res = solve(
        "What is 3+4?",
        backend=gen,
        strategy="hybrid",
        n_cot=4,
        n_program=4,
        program_temperature=0.7,
        adaptive=False,
        budget="tokens=100000",
    )
    assert res.answer == "7" and res.ledger.programs == 4
    assert res.extras["executor"] == "pool"


def test_replay_refuses_a_program_strategy_on_a_cot_pool(tmp_path):
    gen = ReplayGenerator(load_pool(_build(tmp_path, program=False)))
    with pytest.raises(ConfigError, match="--format program"):
        solve("What is 12*7?", backend=gen, strategy="program", budget="tokens=100000")


def test_greedy_draws_one_sample_of_each_kind():
    backend = ScriptedBackend(script=script([prog("print(84)")]))
    res = run(ProgramOfThought(n=8, temperature=0.0), backend)
    assert len(res.candidates) == 1 and backend.calls[0][0].n == 1
    res = run(HybridVote(n_cot=4, n_program=4, program_temperature=0.0, adaptive=False), backend)
    assert res.extras["programs"] == 1 and res.extras["cot"] == 4
    res = run(
        ToolIntegrated(n=4, temperature=0.0), ScriptedBackend(script=lambda p: [TIR_SOLUTION])
    )
    assert len(res.candidates) == 1


def test_replay_through_a_wrapper_keeps_the_pool_executor(tmp_path, monkeypatch):
    import ttscale.strategies.program as program_module
    from ttscale.backends import CoalescingGenerator

    def no_sandbox():
        raise AssertionError("replay must not run programs")

    monkeypatch.setattr(program_module, "default_sandbox", no_sandbox)
    gen = CoalescingGenerator(ReplayGenerator(load_pool(_build(tmp_path, program=True))))
    res = solve(
        "What is 12*7?", backend=gen, strategy="program", n=4, temperature=0.7,
        adaptive=False, budget="tokens=100000",
    )  # fmt: skip
    assert res.extras["executor"] == "pool"
