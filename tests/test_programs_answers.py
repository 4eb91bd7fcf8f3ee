"""Program-aided answers: code blocks out of a reply, and printed output into gradable answers.

Verifies: ``extract_program``/``extract_code_blocks`` take closed ```` ```python ````/
```` ```py ```` blocks (and untagged blocks that are code, not printed values), the last
one wins, ``\\r\\n`` and prose around them are fine, an unclosed block is ignored;
``normalize_printed`` turns the forms sympy/Python programs really print into answers that
``answers_equal`` (math-verify) grades right against MATH-style LaTeX gold answers, refuses
errors, ``None``/``nan``, unsafe and pathological lines (quickly), and never raises;
``printed_answer`` takes the last non-empty line of stdout.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.verifiers.answers import answers_equal
from ttscale.verifiers.programs import (
    extract_code_blocks,
    extract_program,
    normalize_printed,
    printed_answer,
)

# --- extracting programs -------------------------------------------------------------


def test_single_python_block_with_prose():
    reply = (
        "Here is the program:\n```python\nimport sympy\nprint(sympy.Rational(1, 3))\n```\n"
        "It prints 1/3."
    )
    assert extract_program(reply) == "import sympy\nprint(sympy.Rational(1, 3))"


def test_last_python_block_wins_and_other_languages_are_skipped():
    reply = (
        "```python\nprint(1)\n```\nthen\n```py\nx = 2\nprint(x)\n```\n"
        "Output:\n```output\n2\n```\n```bash\npython run.py\n```\n"
    )
    assert extract_program(reply) == "x = 2\nprint(x)"
    assert extract_code_blocks(reply) == ["print(1)", "x = 2\nprint(x)"]


def test_crlf_and_indented_fences():
    reply = "Steps:\r\n  ```Python\r\n  a = 3\r\n  print(a)\r\n  ```\r\nDone."
    assert extract_program(reply) == "a = 3\nprint(a)"


def test_bare_fence_counts_only_when_it_is_code():
    assert extract_program("```\nfrom sympy import *\nprint(pi)\n```") == (
        "from sympy import *\nprint(pi)"
    )
    # An untagged block holding a value is printed output, not a program.
    reply = "```python\nprint(13/15)\n```\n```\n0.8666666666666667\n```"
    assert extract_program(reply) == "print(13/15)"
    assert extract_program("```\nthis is not python at all\n```") is None
    # The embedded 0.5B coder's real reply to the EvalPlus prompt: the tag on its own line.
    reply = "```\npython\ndef add(a, b):\n    return a + b\n```"
    assert extract_program(reply) == "def add(a, b):\n    return a + b"
    assert extract_program("```\nbash\nls -la\n```") is None


def test_unclosed_block_is_ignored():
    assert extract_program("```python\nprint(1)\n") is None
    reply = "```python\nprint(1)\n```\nand a second try\n```python\nprint(2"
    assert extract_program(reply) == "print(1)"


def test_closing_fence_glued_to_last_line():
    assert extract_program("```python\nx = 4\nprint(x)```") == "x = 4\nprint(x)"


@pytest.mark.parametrize("text", ["", "no code here", "`inline` code", "```"])
def test_no_program(text):
    assert extract_program(text) is None
    assert extract_code_blocks(text) == []


# --- normalising printed values -------------------------------------------------------

# (printed line, MATH-style gold answer): normalize_printed(line) must grade equal to gold.
GRADED = [
    ("13/15", r"\frac{13}{15}"),
    ("11*sqrt(2)", r"11\sqrt{2}"),
    ("[11.0000000000000]", "11"),
    ("(-1.0, 6.0)", "(-1,6)"),
    ("Matrix([[-1, 0], [0, -1]])", r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}"),
    ("{x: 3}", "3"),
    ("[{x: 3}]", "3"),
    ("{'x': 3}", "3"),
    ("[-2, 3]", "-2, 3"),
    ("[-2, 3]", "-2,3"),
    ("[{x: -2}, {x: 3}]", "-2, 3"),
    ("-2 3", "-2, 3"),
    ("pi/4", r"\frac{\pi}{4}"),
    ("3*pi", r"3\pi"),
    ("2*sqrt(3)/3", r"\frac{2\sqrt{3}}{3}"),
    ("sqrt(2)/2", r"\frac{\sqrt{2}}{2}"),
    ("0.333333333333333", r"\frac{1}{3}"),
    ("0.785398163397448", r"\frac{\pi}{4}"),
    ("0.5", r"\frac12"),
    ("1.00000000000000", "1"),
    ("1e3", "1000"),
    ("-0.0", "0"),
    ("x**2 + 2*x + 1", "x^2+2x+1"),
    ("x^2 + 1", "x^2+1"),
    ("E", "e"),
    ("exp(1)", "e"),
    ("oo", r"\infty"),
    ("-inf", r"-\infty"),
    ("1 + 2*I", "1+2i"),
    ("3 - 4*I", "3-4i"),
    ("2*I", "2i"),
    ("1/2 + sqrt(3)*I/2", r"\frac{1}{2}+\frac{\sqrt{3}}{2}i"),
    ("30", r"30^\circ"),
    ("30°", "30"),
    ("The answer is 5", "5"),
    ("Answer: 5", "5"),
    ("The final answer is: 7.", "7"),
    ("x = 5", "5"),
    ("Eq(x, 3)", "3"),
    ("**42**", "42"),
    (r"$\frac{1}{2}$", r"\frac{1}{2}"),
    (r"\boxed{5}", "5"),
    (r"The answer is $\boxed{\frac{3}{4}}$", r"\frac34"),
    ("Interval(0, 1)", "[0,1]"),
    ("Interval.Ropen(2, oo)", r"[2,\infty)"),
    ("Union(Interval.open(-oo, 0), Interval.open(1, oo))", r"(-\infty,0)\cup(1,\infty)"),
    ("FiniteSet(1, 2)", r"\{1,2\}"),
    ("FiniteSet(1, 2)", "1, 2"),
    ("{1, 2}", "1, 2"),
    ("1,000", "1000"),
    ("Rational(1, 3)", r"\frac13"),
    ("2**(2/3)", r"2^{2/3}"),
    ("EmptySet", r"\emptyset"),
    ("[np.float64(0.5)]", r"\frac12"),
    ("[Fraction(13, 15)]", r"\frac{13}{15}"),
    ("x >= 2", r"x \ge 2"),
    ("[-sqrt(2), sqrt(2)]", r"\pm\sqrt{2}"),
]


@pytest.mark.parametrize(("line", "gold"), GRADED)
def test_printed_forms_grade_right(line, gold):
    answer = normalize_printed(line)
    assert answer is not None
    assert answers_equal(gold, answer), (line, answer, gold)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("13/15", r"\frac{13}{15}"),
        ("[11.0000000000000]", "11"),
        ("(-1.0, 6.0)", "(-1, 6)"),
        ("[{x: 3}]", "3"),
        ("[-2, 3]", "-2, 3"),  # not "[-2, 3]": math-verify reads that as an interval
        ("{x: 1, y: 2}", "(1, 2)"),
        ("FiniteSet(2, 1)", "1, 2"),
        ("1 + 2*I", "1 + 2i"),
        ("-0.0", "0"),
        ("1e3", "1000"),
        ("0.5", "0.5"),
        ("0.333333333333333", "0.333333333333333"),  # floats are not rationalised
        ("3.14159", "3.14159"),  # and never turned into pi
        ("True", "True"),
        ("False", "False"),
        ("1,000", "1,000"),
        (r"$\frac{1}{2}$", r"\frac{1}{2}"),
        ("$2^{10}$", "2^{10}"),
        ("5 cm", "5 cm"),
        ("no solution", "no solution"),
    ],
)
def test_normalised_text(line, expected):
    assert normalize_printed(line) == expected


def test_short_decimal_is_not_pi():
    assert not answers_equal(r"\pi", normalize_printed("3.14159"))
    assert answers_equal(r"\pi", normalize_printed("3.14159265358979"))


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "None",
        "nan",
        "-nan",
        "zoo",
        "oo - oo",
        "1/0",
        "[]",
        "Traceback (most recent call last):",
        "ZeroDivisionError: division by zero",
        "NameError: name 'x' is not defined",
        "Error: something failed",
        "1" * 501,
        "x + " * 130,
    ],
)
def test_unusable_lines(line):
    assert normalize_printed(line) is None


@pytest.mark.parametrize(
    "line",
    [
        "__import__('os').system('echo hi')",
        "x.__class__",
        "lambda: 1",
        "(lambda x: x)(1)",
        "import os",
        "os.system('ls')",
        "a; b",
        "Symbol('x').evalf()",
        "Matrix([[1, 2]]).T",
        "[0] * 10**9",
        "(1,) * 10**9",
        "[x for x in range(10**9)]",
        "{1: 2}[1]",
    ],
)
def test_unsafe_lines_are_refused(line):
    assert normalize_printed(line) is None


@pytest.mark.parametrize(
    "line",
    [
        "9**9**9**9",
        "9**(9**9)",
        "2^3^4^5",
        "2^{2^{100}}",
        "2**100000",
        "(10**499)**9",
        "10**4000 * 10**4000",
        "Matrix([[9, 9], [9, 9]])**9999",
        "'a' * 10**9",
        "Tuple(1, 2) * 10**9",
        "x**(10**9)",
        "exp(10**10)",
        "floor(exp(10**10))",
        "Min(3**(10*10**8), 2)",
        "Eq(3**(10*10**8), 1)",
        "Interval(0, 3**(10*10**8))",
        "Pow(3, 10**9)",
        "Matrix(10000, 10000, Max)",
        "Float(pi, 10**7)",
        "1e999",
    ],
)
def test_pathological_lines_return_quickly(line):
    normalize_printed("1/2")  # sympy imported before the clock starts
    start = time.perf_counter()
    answer = normalize_printed(line)
    assert time.perf_counter() - start < 2.0
    assert answer is None or len(answer) < 100


def test_non_string_input():
    assert normalize_printed(None) is None  # type: ignore[arg-type]
    assert printed_answer(None) is None  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_arbitrary_text(text):
    assert isinstance(normalize_printed(text), str | None)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789+-*/^()[]{},.xyIEpiqrtoO= ", max_size=60))
def test_never_raises_on_math_like_text(text):
    assert isinstance(normalize_printed(text), str | None)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_printed_integers_round_trip(n):
    answer = normalize_printed(str(n))
    assert answer is not None
    assert answers_equal(str(n), answer)


# --- the last printed line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("13/15\n", r"\frac{13}{15}"),
        ("step 1: 4\nstep 2: 9\n13\n\n  \n", "13"),
        ("a\r\nb\r\n7\r\n", "7"),
        ("x = 3\nThe answer is 12\n", "12"),
        ("Matrix([[1, 0],\n [0, 1]])\n", r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}"),
        ("", None),
        ("\n \n\t\n", None),
        ("None\n", None),
        ("5\nTraceback (most recent call last):\n  File 'x'\nValueError: bad\n", None),
        ("nan", None),
    ],
)
def test_printed_answer(stdout, expected):
    assert printed_answer(stdout) == expected
