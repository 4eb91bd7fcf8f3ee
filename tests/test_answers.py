"""Answer extraction (property-tested), math-verify equivalence and the Beta stopping rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttscale.verifiers import answers_equal, extract_answer, leader_confidence, vote


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{84}.", "84"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\fbox{7}", "7"),
        ("\\boxed{3} and later \\fbox{4}", "4"),
        ("\\boxed 5$", "5"),
        ("no box here", None),
        ("cut off \\boxed{12", None),
        ("\\boxed{}", None),
        ("\\boxed{a} \\boxed{b", "a"),
    ],
)
def test_extract(text, expected):
    assert extract_answer(text) == expected


balanced = st.recursive(
    st.text(alphabet="abc123+-=x ", min_size=1, max_size=8),
    lambda inner: st.builds(lambda a, b: f"{a}{{{b}}}", inner, inner),
    max_leaves=6,
)


@given(
    prefix=st.text(alphabet="xyz .\n", max_size=20),
    body=balanced,
    suffix=st.text(alphabet="xyz .\n", max_size=20),
)
def test_extract_recovers_any_balanced_body(prefix, body, suffix):
    expected = body.strip() or None
    assert extract_answer(f"{prefix}\\boxed{{{body}}}{suffix}") == expected


@given(st.text(max_size=60))
def test_extract_never_crashes(text):
    out = extract_answer(text)
    assert out is None or isinstance(out, str)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),
        ("x=3", "3"),
        ("[1, 2)", "[1,2)"),
        ("1,000", "1000"),
        ("90^\\circ", "90"),
        ("\\sqrt{4}", "2"),
    ],
)
def test_equivalent(a, b):
    assert answers_equal(a, b) and answers_equal(b, a)


@pytest.mark.parametrize(("a", "b"), [("1/2", "0.6"), ("3", "4"), ("(1,2)", "[1,2]"), ("x", "y")])
def test_not_equivalent(a, b):
    assert not answers_equal(a, b)


def test_vote_ties_broken_by_first_seen():
    assert vote(["5", "7", "7", "5"]) == "5"
    assert vote([None, None]) is None
    assert vote(["5", "7"], scores=[0.2, 0.9]) == "7"


@pytest.mark.parametrize(
    ("lead", "second", "expected"),
    [(0, 0, 0.5), (1, 0, 0.75), (2, 0, 0.875), (3, 1, 0.8125), (4, 0, 1 - 1 / 32)],
)
def test_leader_confidence_exact(lead, second, expected):
    assert math.isclose(leader_confidence(lead, second), expected)


@given(st.integers(0, 60), st.integers(0, 60))
def test_leader_confidence_is_a_probability_and_monotone(a, b):
    p = leader_confidence(a, b)
    assert 0 < p <= 1  # 1 - 2**-54 rounds to 1.0 in floating point
    assert leader_confidence(a + 1, b) >= p
    assert leader_confidence(a, b + 1) <= p
    if a == b:
        assert math.isclose(p, 0.5)
