"""Answer extraction fallbacks (property-tested) and ``grade`` on tricky equivalences.

Verifies: the last ``\\boxed{}`` always wins; without a box, the last "The answer is X" or
GSM8K ``#### N`` is taken (``$...$`` and a final period removed); ``grade`` accepts a full
solution or a bare answer and decides equivalence with math-verify (fractions vs decimals,
``\\dfrac``, intervals, ``x=3``, degrees, thousands separators, AIME zero padding).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttscale.errors import GradingError
from ttscale.verifiers import extract_answer, grade


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 0.5.", "0.5"),
        ("So the final answer is: $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("Thus the answer is \\(7\\)", "7"),
        ("Natalia sold 72 clips.\n#### 72", "72"),
        ("#### 1,234\n", "1,234"),
        ("The answer is 5. Then the answer is 7.", "7"),
        ("The answer is 3\n#### 4", "4"),
        ("#### 4\nThe answer is 3", "3"),
        ("The answer is \\boxed{9}. Later: the answer is 8.", "9"),
        ("#### 2 but \\boxed{1} earlier? no: \\boxed{3}", "3"),
        ("the answer is .", None),
        ("The answer is 3.14", "3.14"),
        ("the answer is not known", "not known"),
        ("no answer here", None),
    ],
)
def test_fallback_extraction(text, expected):
    assert extract_answer(text) == expected


def test_fallbacks_can_be_switched_off():
    assert extract_answer("The answer is 5.", fallbacks=False) is None
    assert extract_answer("#### 5", fallbacks=False) is None


number = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.decimals(-1000, 1000, places=3, allow_nan=False, allow_infinity=False).map(str),
)
filler = st.text(alphabet="abc xyz,;=\n", max_size=30)


@given(before=filler, n=number, after=st.sampled_from(["", ".", ".\n", "\n", ". Done."]))
def test_answer_is_recovers_any_number(before, n, after):
    assert extract_answer(f"{before}\nThe answer is {n}{after}") == n


@given(before=filler, n=number)
def test_gsm8k_marker_recovers_any_number(before, n):
    assert extract_answer(f"{before}\n#### {n}") == n


@given(before=filler, boxed=number, other=number, where=st.booleans())
def test_box_always_wins_over_fallbacks(before, boxed, other, where):
    box, fallback = f"\\boxed{{{boxed}}}", f"The answer is {other}.\n#### {other}"
    text = f"{before}{box}\n{fallback}" if where else f"{before}{fallback}\n{box}"
    assert extract_answer(text) == boxed


@given(st.text(max_size=80))
def test_never_crashes_and_strips(text):
    out = extract_answer(text)
    assert out is None or (isinstance(out, str) and out == out.strip() and out)


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),
        ("\\dfrac34", "0.75"),
        ("(0, 1]", "(0,1]"),
        ("[-2, 5)", "[-2,5)"),
        ("x=3", "3"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("1,000,000", "1000000"),
        ("025", "25"),
        ("So the answer is \\boxed{025}.", "25"),
        ("The answer is $\\frac{3}{35}$.", "\\frac{3}{35}"),
        ("Natalia sold 72 clips.\n#### 72", "72"),
        ("We get \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}2"),
        ("\\boxed{2}", "\\boxed{2}"),
    ],
)
def test_grade_accepts_equivalent_answers(prediction, gold):
    assert grade(prediction, gold)


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("0.6", "\\frac{1}{2}"),
        ("(0, 1)", "(0,1]"),
        ("[1,2]", "(1,2)"),
        ("52", "025"),
        ("x=4", "3"),
        ("I think it is 5\nbut not sure", "5"),  # no final answer in a solution
        ("", "5"),
        ("\\boxed{", "5"),
    ],
)
def test_grade_rejects_wrong_or_missing_answers(prediction, gold):
    assert not grade(prediction, gold)


@pytest.mark.parametrize("gold", ["", "   ", None])
def test_grade_needs_a_gold_answer(gold):
    with pytest.raises(GradingError, match="gold answer"):
        grade("5", gold)
