"""The ``code`` strategy on a scripted model, with programs run in the real sandbox: each
``select`` mode picks what it should, programs that write no code, loop, raise or print
garbage, generated inputs parsed and used, S*'s pairwise judge and its fallbacks, self-debug,
the adaptive stop, budget caps, the entry point inferred, and hidden tests never reaching a
request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from ttscale.backends import ScriptedBackend
from ttscale.budget import Budget
from ttscale.errors import BudgetError, ConfigError
from ttscale.sandbox import default_sandbox, detect_isolation
from ttscale.strategies import STRATEGIES, CodeSelect, make_strategy
from ttscale.strategies.code import (
    behaviour_inputs,
    code_problem,
    inputs_problem,
    parse_verdict,
)
from ttscale.types import (
    CODE_INSTRUCTION,
    PROGRAM_SYSTEM_PROMPT,
    Completion,
    GenerationOutput,
    GenerationRequest,
    Problem,
    PublicTest,
)
from ttscale.verifiers.code_tests import assemble_program, infer_entry_point, parse_calls

pytestmark = pytest.mark.skipif(
    detect_isolation().level != "namespaces",
    reason="the code strategy runs programs in the sandbox, which needs namespaces here",
)

PROMPT = (
    "def sort_desc(xs: list) -> list:\n"
    '    """Return the numbers in xs sorted from largest to smallest.\n'
    "    >>> sort_desc([1, 3, 2])\n"
    "    [3, 2, 1]\n"
    '    """\n'
)


def fence(body: str) -> str:
    return f"Here is the function.\n```python\n{body}\n```\nIt sorts the list."


RIGHT = fence("def sort_desc(xs):\n    return sorted(xs, reverse=True)")
RIGHT2 = fence("def sort_desc(xs):\n    return sorted(xs)[::-1]")
WRONG = fence("def sort_desc(xs):\n    return xs[::-1]")  # fails the public example
OVERFIT = fence("def sort_desc(xs):\n    return [3, 2, 1]")  # passes it, wrong elsewhere
LOOPS = fence("def sort_desc(xs):\n    while True:\n        pass")
RAISES = fence("def sort_desc(xs):\n    raise ValueError('model bug')")
PRINTS = fence(
    "import sys\n"
    "def sort_desc(xs):\n"
    '    print(\'@ttscale:0123456789abcdef01234567:{"i": 0, "passed": false}\')\n'
    "    sys.stderr.write('garbage' * 1000)\n"
    "    return sorted(xs, reverse=True)"
)
NO_CODE = "I am not sure how to do this."
INPUTS = (
    "Here are some inputs:\n```python\nsort_desc([5, 1, 4])\nsort_desc([])\n"
    "this line is garbage\nsort_desc(xs)\nprint('hi')\nsort_desc([1, 3, 2])\n"
    "sort_desc([2, 2, 1])\n```"
)

INPUTS_KEY = "diverse test inputs"
DEBUG_KEY = "Your previous program"
DISTINGUISH_KEY = "return different results"
JUDGE_KEY = "Which result is correct"


@dataclass
class CodeModel(ScriptedBackend):
    """A scripted coder that serves ``programs`` in order (cycling) to sampling requests and
    a fixed reply to each other kind of request (matched by a phrase of its prompt)."""

    programs: list[str] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    """Every request's full prompt text, in order."""
    served: int = 0

    def _one(self, req: GenerationRequest) -> GenerationOutput:
        text = self.decode(req.prompt_token_ids)
        self.texts.append(text)
        kind = next((k for k in self.replies if k in text), None)
        outs = []
        for _ in range(req.n):
            if kind is not None:
                reply = self.replies[kind]
            else:
                reply = self.programs[self.served % len(self.programs)]
                self.served += 1
            ids = self.encode(reply)[: req.max_tokens]
            outs.append(Completion(self.decode(ids), ids, "stop"))
        return GenerationOutput(
            tuple(outs), len(req.prompt_token_ids), self._hit(req.prompt_token_ids)
        )


def model(programs, **replies):
    replies.setdefault("inputs", "I have no inputs to suggest.")
    keys = {
        "inputs": INPUTS_KEY,
        "debug": DEBUG_KEY,
        "distinguish": DISTINGUISH_KEY,
        "judge": JUDGE_KEY,
    }
    return CodeModel(programs=list(programs), replies={keys[k]: v for k, v in replies.items()})


def run(strategy, backend, problem=None, budget="tokens=200000"):
    problem = problem or Problem(PROMPT)
    return asyncio.run(strategy.run(problem, backend, None, Budget.parse(budget)))


def body(reply: str) -> str:
    return reply.split("```python\n", 1)[1].split("\n```", 1)[0]


def program(reply: str) -> str:
    return assemble_program(PROMPT, body(reply))


MIXED = [WRONG, WRONG, WRONG, OVERFIT, RIGHT, RIGHT2]


@pytest.mark.parametrize(
    ("select", "want"),
    [
        ("first", 0),  # no execution: the first program, a wrong one
        ("public", 3),  # the first passing the example: the overfit one
        ("majority", 0),  # the largest behaviour cluster: the three wrong ones
        ("cluster", 4),  # passes the example, then the largest cluster: the right pair
        ("pairwise", 4),  # the judge agrees with the cluster choice
    ],
)
def test_each_select_picks_what_it_should(select, want):
    backend = model(
        MIXED, inputs=INPUTS, distinguish="sort_desc([7, 8])", judge="It sorts.\nAnswer: A"
    )
    res = run(CodeSelect(n=6, round_size=6, select=select, adaptive=False), backend)
    assert res.extras["selection"]["candidate"] == want
    assert res.answer == program(MIXED[want]) == res.candidates[want].program
    assert res.strategy == "code" and res.extras["entry_point"] == "sort_desc"
    assert res.extras["n_public"] == 1
    assert res.extras["passed_public"] == (0 if want == 0 else 1)
    assert res.extras["tests"] == [
        {
            "call": "sort_desc([1, 3, 2])",
            "expected": "[3, 2, 1]",
            "raises": None,
            "passed": want != 0,
            "actual": "[2, 3, 1]" if want == 0 else "[3, 2, 1]",
            "error": None,
        }
    ]
    # Every candidate: its full program, its public-test run; every run on the ledger.
    assert all(
        c.answer == c.program == program(t) for c, t in zip(res.candidates, MIXED, strict=True)
    )
    assert all(c.execution is not None and c.execution.ok for c in res.candidates)
    clustered = select in ("majority", "cluster", "pairwise")
    runs = 6 * (2 if clustered else 1) + (2 if select == "pairwise" else 0)
    assert res.ledger.programs == runs and res.ledger.sandbox_seconds > 0
    # One engine call for the samples (with the inputs request batched in when clustering).
    sample_calls = [c for c in backend.calls if any(r.n == 6 for r in c)]
    assert len(sample_calls) == 1 and len(sample_calls[0]) == (2 if clustered else 1)
    if clustered:
        sizes = [(c["size"], c["passed_public"]) for c in res.extras["clusters"]]
        assert sorted(sizes) == [(1, 1), (2, 1), (3, 0)]
        assert all(len(c["signature_hash"]) == 16 for c in res.extras["clusters"])
    else:
        assert res.extras["clusters"] == [] and res.extras["inputs"] == []
    assert res.extras["failures"] == {"failed_public": 3}


def test_sampling_prompt_is_the_code_prompt():
    backend = model([RIGHT])
    run(CodeSelect(n=2, round_size=2, select="first"), backend)
    text = backend.texts[0]
    assert CODE_INSTRUCTION in text and PROGRAM_SYSTEM_PROMPT in text and PROMPT.strip() in text
    assert backend.texts[0] == backend.decode(backend.render(code_problem(Problem(PROMPT))))


def test_generated_inputs_are_parsed_deduplicated_and_split_clusters():
    backend = model([OVERFIT, RIGHT, RIGHT2], inputs=INPUTS)
    res = run(CodeSelect(n=3, round_size=3, adaptive=False), backend)
    # Public call first, then the new literal calls; garbage, `sort_desc(xs)` and the repeat
    # of the public call are dropped.
    assert res.extras["inputs"] == [
        "sort_desc([1, 3, 2])",
        "sort_desc([5, 1, 4])",
        "sort_desc([])",
        "sort_desc([2, 2, 1])",
    ]
    assert [c["size"] for c in res.extras["clusters"]] == [2, 1]
    assert res.answer == program(RIGHT)
    record = next(r for r in res.trace if r["phase"] == "inputs")
    assert record["parsed"] == 4 and record["used"] == 3
    # The inputs request: greedy, the inputs prompt, in the first round's engine call.
    req = backend.calls[0][1]
    assert req.temperature == 0 and req.n == 1
    assert backend.decode(req.prompt_token_ids) == backend.decode(
        backend.render(inputs_problem(PROMPT, "sort_desc", 8))
    )
    # Without generated inputs the three agree on the example: one cluster, the first wins.
    res = run(CodeSelect(n=3, round_size=3, adaptive=False, generated_inputs=0), model(MIXED[3:]))
    assert [c["size"] for c in res.extras["clusters"]] == [3]
    assert res.answer == program(OVERFIT) and res.extras["inputs"] == ["sort_desc([1, 3, 2])"]


def test_inputs_capped_and_helpers():
    tests = [PublicTest("sort_desc([1, 3, 2])", "[3, 2, 1]")]
    assert behaviour_inputs(tests, INPUTS, "sort_desc", 1) == [
        "sort_desc([1, 3, 2])",
        "sort_desc([5, 1, 4])",
    ]
    assert behaviour_inputs(tests, None, "sort_desc", 8) == ["sort_desc([1, 3, 2])"]
    assert parse_calls("assert f(1, 'a') == 2\nf(g(1))\ndef f(x):\nf( [1,2] )", "f") == [
        "f(1, 'a')",
        "f([1, 2])",
    ]
    assert parse_calls("nothing here", "f") == []
    assert parse_verdict("Hmm. Answer: B\nActually, Answer: **A**") == "A"
    assert parse_verdict("The answer is \\boxed{B}") == "B"
    assert parse_verdict("Both look fine to me.") is None


def test_failing_programs_cast_nothing_and_the_printer_wins():
    programs = [NO_CODE, LOOPS, RAISES, PRINTS]
    res = run(
        CodeSelect(n=4, round_size=4, timeout=0.5, generated_inputs=0, adaptive=False),
        model(programs),
    )
    assert res.answer == program(PRINTS) and res.extras["passed_public"] == 1
    no_code, loops, raises, prints = res.candidates
    assert no_code.answer is None and no_code.program is None and no_code.execution is None
    assert res.extras["tests"][0]["actual"] == "[3, 2, 1]"  # the forged record is ignored
    cands = [(c["size"], c["passed_public"]) for c in res.extras["clusters"]]
    assert sorted(cands) == [(1, 0), (1, 0), (1, 1)]
    assert res.extras["failures"] == {"no_program": 1, "failed_public": 2}
    assert res.ledger.programs == 6  # 3 programs x (public run + behaviour run)
    trace = [r for r in res.trace if r["phase"] == "sample"][0]
    assert trace["passed_public"] == [None, 0, 0, 1]


def test_programs_that_do_not_load_join_no_cluster():
    broken = fence("import no_such_module_here\ndef sort_desc(xs):\n    return xs")
    syntax = fence("def sort_desc(xs)\n    return xs")
    res = run(CodeSelect(n=3, round_size=3, select="majority"), model([broken, syntax, WRONG]))
    assert res.answer == program(WRONG)
    assert [c["size"] for c in res.extras["clusters"]] == [1]
    assert res.extras["failures"] == {"load_error": 2, "failed_public": 1}
    res = run(CodeSelect(n=2, round_size=2, select="majority"), model([broken, syntax]))
    assert res.answer == program(broken) and res.extras["clusters"] == []
    assert "no program loads" in res.extras["selection"]["rule"]
    res = run(CodeSelect(n=2, round_size=2), model([NO_CODE]))
    assert res.answer is None and res.extras["selection"]["candidate"] is None
    assert res.extras["failures"] == {"no_program": 2} and res.extras["tests"] == []


PAIR = [OVERFIT, OVERFIT, RIGHT]  # cluster picks the overfit pair; the right one is runner-up


def test_pairwise_picks_the_judged_cluster():
    backend = model(
        PAIR,
        inputs=INPUTS,
        distinguish="Try these:\n```python\nsort_desc([1, 3, 2])\nsort_desc([7, 8])\n```",
        judge="Sorting [7, 8] descending gives [8, 7].\nAnswer: B",
    )
    res = run(
        CodeSelect(n=3, round_size=3, select="cluster", adaptive=False), model(PAIR, inputs=INPUTS)
    )
    assert res.answer == program(OVERFIT)
    res = run(CodeSelect(n=3, round_size=3, select="pairwise", adaptive=False), backend)
    assert res.answer == program(RIGHT)
    pw = res.extras["selection"]["pairwise"]
    # The first input on which they differ is used (they agree on the public one).
    assert pw["used"] and pw["verdict"] == "B" and pw["call"] == "sort_desc([7, 8])"
    assert (pw["output_a"], pw["output_b"]) == ("[3, 2, 1]", "[8, 7]")
    assert res.extras["selection"]["cluster"] == 1
    judge = next(t for t in backend.texts if JUDGE_KEY in t)
    assert "`[3, 2, 1]`" in judge and "`[8, 7]`" in judge and "sort_desc([7, 8])" in judge
    judge_req = backend.calls[-1][0]
    assert judge_req.temperature == 0
    assert res.ledger.programs == 3 * 2 + 2


@pytest.mark.parametrize(
    ("distinguish", "judge", "why"),
    [
        ("```python\nsort_desc([7, 8])\n```", "I cannot tell which one is right.", "unparsable"),
        ("No idea, sorry.", "Answer: B", "no input parsed"),
        ("```python\nsort_desc([1, 3, 2])\n```", "Answer: B", "agree on every input"),
    ],
)
def test_pairwise_falls_back_to_the_cluster_choice(distinguish, judge, why):
    backend = model(PAIR, inputs=INPUTS, distinguish=distinguish, judge=judge)
    res = run(CodeSelect(n=3, round_size=3, select="pairwise", adaptive=False), backend)
    assert res.answer == program(OVERFIT)
    pw = res.extras["selection"]["pairwise"]
    assert not pw["used"] and why in pw["why"]
    assert any(r["phase"] == "select" and r["pairwise"]["why"] == pw["why"] for r in res.trace)


def test_pairwise_with_one_surviving_cluster_asks_nothing():
    backend = model([RIGHT, RIGHT2, WRONG], inputs=INPUTS, distinguish="x", judge="Answer: B")
    res = run(CodeSelect(n=3, round_size=3, select="pairwise", adaptive=False), backend)
    assert res.answer == program(RIGHT)
    assert not res.extras["selection"]["pairwise"]["used"]
    assert not any(DISTINGUISH_KEY in t or JUDGE_KEY in t for t in backend.texts)


def test_debug_round_replaces_a_failing_candidate():
    backend = model([WRONG], debug=RIGHT)
    res = run(CodeSelect(temperature=0, debug_rounds=2), backend)
    assert res.answer == program(RIGHT) and res.extras["passed_public"] == 1
    assert len(res.candidates) == 1 and res.extras["debug"] == {"rounds": 1, "replaced": 1}
    # The follow-up shows the failing call, expected against actual, and the old program.
    text = next(t for t in backend.texts if DEBUG_KEY in t)
    assert "`sort_desc([1, 3, 2])` should return [3, 2, 1] but returned [2, 3, 1]" in text
    assert body(WRONG) in text and CODE_INSTRUCTION in text
    record = next(r for r in res.trace if r["phase"] == "debug")
    assert record["failing"] == [0] and record["replaced"] == [0]
    # The fix's tokens add to the candidate's.
    assert res.candidates[0].tokens == len(WRONG.encode()) + len(RIGHT.encode())
    # Round 2 was not needed: nothing failed any more (adaptive stop).
    assert sum(DEBUG_KEY in t for t in backend.texts) == 1
    assert res.extras["stop_reason"] == "adaptive:largest_cluster_passes"
    # Settled before any fix: no debug request.
    backend = model([RIGHT, RIGHT, WRONG], inputs=INPUTS, debug=RIGHT)
    res = run(CodeSelect(n=3, round_size=3, debug_rounds=2), backend)
    assert res.extras["stop_reason"] == "adaptive:largest_cluster_passes"
    assert res.extras["debug"]["rounds"] == 0 and res.candidates[2].program == program(WRONG)
    assert not any(DEBUG_KEY in t for t in backend.texts)


def test_debug_keeps_the_original_when_the_fix_is_no_better():
    backend = model([WRONG, RIGHT], debug=RAISES)
    res = run(CodeSelect(n=2, round_size=2, debug_rounds=2, adaptive=False, timeout=1), backend)
    assert res.candidates[0].program == program(WRONG) and res.answer == program(RIGHT)
    assert res.extras["debug"] == {"rounds": 2, "replaced": 0}
    # One batched engine call per debug round, one request per failing candidate.
    debug_calls = [c for c in backend.calls if DEBUG_KEY in backend.decode(c[0].prompt_token_ids)]
    assert [len(c) for c in debug_calls] == [1, 1]


def test_debug_several_failing_candidates_in_one_call():
    backend = model([WRONG, OVERFIT, LOOPS], debug=RIGHT)
    res = run(
        CodeSelect(n=3, round_size=3, debug_rounds=1, timeout=0.5, adaptive=False, select="public"),
        backend,
    )
    assert res.extras["debug"] == {"rounds": 1, "replaced": 2}
    debug_calls = [c for c in backend.calls if DEBUG_KEY in backend.decode(c[0].prompt_token_ids)]
    assert len(debug_calls) == 1 and len(debug_calls[0]) == 2
    assert [c.program for c in res.candidates] == [program(RIGHT), program(OVERFIT), program(RIGHT)]
    assert res.answer == program(RIGHT)  # public: the first passing program, now the fix


def test_adaptive_stop_saves_budget():
    fixed = run(CodeSelect(n=12, round_size=4, adaptive=False), model([RIGHT], inputs=INPUTS))
    early = run(CodeSelect(n=12, round_size=4), model([RIGHT], inputs=INPUTS))
    assert early.answer == fixed.answer == program(RIGHT)
    assert early.extras["stop_reason"] == "adaptive:largest_cluster_passes"
    assert fixed.extras["stop_reason"] == "n_reached"
    assert len(early.candidates) == 4 and len(fixed.candidates) == 12
    assert early.ledger.generated_tokens < fixed.ledger.generated_tokens
    assert early.ledger.engine_calls == 1 and fixed.ledger.engine_calls == 3
    assert early.ledger.unused()["tokens"] > fixed.ledger.unused()["tokens"]
    # A tie for largest is not settled: two passing singletons keep sampling.
    res = run(CodeSelect(n=8, round_size=2), model([RIGHT, OVERFIT, RIGHT, RIGHT], inputs=INPUTS))
    assert res.extras["stop_reason"] == "adaptive:largest_cluster_passes"
    assert len(res.candidates) == 4 and res.ledger.engine_calls == 2
    assert [r["clusters"] for r in res.trace if r["phase"] == "sample"] == [[1, 1], [3, 1]]
    # public/first settle on their own rule.
    res = run(CodeSelect(n=8, round_size=2, select="public"), model([WRONG, RIGHT]))
    assert res.extras["stop_reason"] == "adaptive:public_passed" and len(res.candidates) == 2


def test_adaptive_never_stops_without_public_tests():
    prompt = "def twice(x):\n    return the double of x\n"  # not Python: no examples either
    problem = Problem(prompt, entry_point="twice")
    right = fence("def twice(x):\n    return 2 * x")
    res = run(CodeSelect(n=6, round_size=2), model([right], inputs="twice(3)\ntwice(-1)"), problem)
    assert res.extras["stop_reason"] == "n_reached" and len(res.candidates) == 6
    assert res.extras["n_public"] == 0 and res.extras["inputs"] == ["twice(3)", "twice(-1)"]
    assert res.answer == body(right)  # the prompt is not Python: the code alone


def test_budget_caps_and_refuses_the_unaffordable():
    res = run(
        CodeSelect(n=8, round_size=8, select="public", adaptive=False),
        model([WRONG]),
        budget="rollouts=3",
    )
    assert len(res.candidates) == 3 and res.ledger.rollouts == 3
    assert res.extras["stop_reason"] == "budget:rollouts"
    # Clustering: the inputs request takes a rollout of the first round.
    res = run(
        CodeSelect(n=8, round_size=8, adaptive=False),
        model([WRONG], inputs=INPUTS),
        None,
        "rollouts=3",
    )
    assert len(res.candidates) == 2 and res.ledger.rollouts == 3
    with pytest.raises(BudgetError, match="cannot pay for one program"):
        run(CodeSelect(), model([RIGHT]), budget="tokens=50")


def test_greedy_draws_one_and_asks_no_inputs():
    backend = model([RIGHT], inputs=INPUTS)
    res = run(CodeSelect(n=8, temperature=0), backend)
    assert len(res.candidates) == 1 and res.answer == program(RIGHT)
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 1 and backend.calls[0][0].n == 1
    assert res.ledger.programs == 1  # the public run only: nothing to cluster


def test_entry_point_and_tests_inferred():
    res = run(CodeSelect(n=2, round_size=2), model([RIGHT], inputs=INPUTS))
    assert res.extras["entry_point"] == "sort_desc" and res.extras["n_public"] == 1
    # A task in words with tests: the entry point comes from the tests' calls.
    words = Problem(
        "Write sort_desc(xs) that returns xs sorted from largest to smallest.",
        tests=(PublicTest("sort_desc([2, 9, 4])", "[9, 4, 2]"), PublicTest("sort_desc([])", "[]")),
    )
    res = run(CodeSelect(n=2, round_size=2), model([RIGHT, WRONG], inputs=INPUTS), words)
    assert res.extras["entry_point"] == "sort_desc" and res.extras["n_public"] == 2
    assert res.answer == body(RIGHT) and res.extras["passed_public"] == 2
    assert infer_entry_point("import math\ndef helper(x): ...\ndef main(y): ...") == "main"
    two = "def helper(x): ...\ndef main(y): ..."
    assert infer_entry_point(two, [PublicTest("helper(1)", "1")]) == "helper"
    assert infer_entry_point(two, [words.tests[0]]) == "sort_desc"  # the tests decide
    assert infer_entry_point("prose", [words.tests[0]]) == "sort_desc"
    assert infer_entry_point("no function here") is None
    with pytest.raises(ConfigError, match="entry_point"):
        run(CodeSelect(), model([RIGHT]), Problem("Write a function that sorts a list."))
    with pytest.raises(ConfigError, match="identifier"):
        run(CodeSelect(), model([RIGHT]), Problem(PROMPT, entry_point="not a name"))


def test_assemble_program():
    code = "def sort_desc(xs):\n    return sorted(xs)[::-1]"
    assert assemble_program(PROMPT, code) == PROMPT + "\n" + code
    assert assemble_program(PROMPT, PROMPT + "    return xs\n") == PROMPT + "    return xs\n"
    assert assemble_program("Sort a list, please.", code) == code


def test_runs_go_through_the_generators_executor():
    class Recording:
        name = "recording"

        def __init__(self):
            self.sources = []

        async def arun(self, code, *, limits=None):
            self.sources.append(code)
            return await default_sandbox().arun(code, limits=limits)

    backend = model(MIXED, inputs=INPUTS)
    backend.executor = Recording()  # as a replay backend's PoolExecutor
    res = run(CodeSelect(n=6, round_size=6, adaptive=False), backend)
    assert res.extras["executor"] == "recording"
    assert len(backend.executor.sources) == res.ledger.programs == 12
    # A harness source is a pure function of its inputs: a second run asks the same ones.
    again = model(MIXED, inputs=INPUTS)
    again.executor = Recording()
    run(CodeSelect(n=6, round_size=6, adaptive=False), again)
    assert sorted(again.executor.sources) == sorted(backend.executor.sources)


def test_hidden_tests_never_reach_the_model():
    from ttscale.evals.code import load_humaneval
    from ttscale.evals.datasets import Selection

    (p,) = load_humaneval(Selection(ids=["HumanEval/0"]))
    right = fence(p.prompt + p.canonical_solution)
    wrong = fence(p.prompt + "    return True\n")  # fails a public example
    overfit = fence(p.prompt + "    return len(numbers) > 3\n")  # passes both, wrong elsewhere
    f = p.entry_point
    backend = model(
        [overfit, overfit, right, wrong],
        inputs=f"```python\n{f}([1.0, 1.1], 0.5)\n{f}([], 1.0)\n```",
        debug=wrong,
        distinguish=f"```python\n{f}([1.0, 5.0, 5.05], 0.1)\n```",
        judge="Answer: B",
    )
    problem = Problem(p.prompt, entry_point=p.entry_point, tests=p.public_tests, id=p.id)
    res = run(
        CodeSelect(n=4, round_size=4, select="pairwise", debug_rounds=1, adaptive=False),
        backend,
        problem,
    )
    assert res.extras["n_public"] == len(p.public_tests) == 2
    assert res.answer is not None
    assert res.answer.strip() == (p.prompt + p.canonical_solution).strip()
    assert res.extras["selection"]["pairwise"]["verdict"] == "B"
    kinds = {k for t in backend.texts for k in (DEBUG_KEY, DISTINGUISH_KEY, JUDGE_KEY) if k in t}
    assert kinds == {DEBUG_KEY, JUDGE_KEY, DISTINGUISH_KEY}  # every kind of request was made
    hidden_lines = [ln.strip() for ln in p.hidden.splitlines() if "assert" in ln]
    assert hidden_lines
    for text in backend.texts:
        assert p.hidden.strip() not in text and "def check(" not in text
        assert not any(line in text for line in hidden_lines)


def test_registered_and_options_validated():
    assert STRATEGIES["code"] is CodeSelect
    assert isinstance(make_strategy("code", select="public"), CodeSelect)
    with pytest.raises(ConfigError, match="select"):
        CodeSelect(select="vote")
    with pytest.raises(ConfigError, match="generated_inputs"):
        CodeSelect(generated_inputs=-1)
    with pytest.raises(ConfigError, match="debug_rounds"):
        CodeSelect(debug_rounds=True)
    with pytest.raises(ConfigError, match="timeout"):
        CodeSelect(timeout=0)
    with pytest.raises(ConfigError, match="temperature"):
        CodeSelect(temperature=-0.1)
    with pytest.raises(ConfigError, match="no option"):
        make_strategy("code", beams=2)


def test_a_verifier_is_ignored():
    class Exploding:
        async def score(self, *a, **k):
            raise AssertionError("the code strategy must not call a verifier")

    res = asyncio.run(
        CodeSelect(n=2, round_size=2).run(
            Problem(PROMPT), model([RIGHT], inputs=INPUTS), Exploding(), Budget.parse(None)
        )
    )
    assert res.answer == program(RIGHT)
