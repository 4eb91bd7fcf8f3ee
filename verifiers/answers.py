"""Final-answer extraction, equivalence and grading.

Extraction takes the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with nested
braces matched, the PRM/MATH convention; only when there is no box does it fall back to the
last "The answer is X" or GSM8K ``#### N``. Equivalence is decided by ``math-verify``
(``\\frac{1}{2}`` == ``0.5``, ``\\dfrac``, intervals, ...), never by a hand-written
normaliser. math-verify's timeouts use ``signal.alarm``, which only works on the main
thread, so off the main thread it runs without its timeout.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Any

from ttscale.errors import GradingError

__all__ = ["answers_equal", "extract_answer", "gold_answer", "grade", "parse_answer"]

log = logging.getLogger(__name__)

_BOX_COMMANDS = ("\\boxed", "\\fbox")

# "The answer is X" / "the final answer is: $X$." up to the end of the line or sentence.
# A sentence ends at ". " or a final "." — not at a decimal point ("is 0.5.").
_ANSWER_IS = re.compile(
    r"(?i)\bthe\s+(?:final\s+)?answer\s+is\s*:?\s*(?P<ans>[^\n]*?)\s*(?:\.\s|\.?$|\n)",
    re.MULTILINE,
)
# GSM8K's "#### 1,234" (its reference solutions and models trained on them).
_GSM8K = re.compile(r"####\s*(?P<ans>[^\n]*?)\s*$", re.MULTILINE)


def extract_answer(text: str, *, fallbacks: bool = True) -> str | None:
    """Final answer in ``text``: the last ``\\boxed{...}``/``\\fbox{...}``, or ``None``.

    Nested braces are matched; escaped ``\\{``/``\\}`` do not count. An unclosed box
    (e.g. cut off at the token limit) yields ``None``. ``\\boxed 5`` (no braces) yields ``5``.

    Args:
        text: A model's solution.
        fallbacks: When there is no box, take the last "The answer is X" (surrounding
            ``$...$`` and a final period removed) or GSM8K ``#### N``, whichever comes
            last. A box always wins over a fallback, wherever it is.
    """
    boxed = _last_box(text)
    if boxed is not None or not fallbacks:
        return boxed
    return _last_fallback(text)


def _last_fallback(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for pattern in (_ANSWER_IS, _GSM8K):
        for m in pattern.finditer(text):
            ans = _strip_math(m.group("ans"))
            if ans and (best is None or m.start() > best[0]):
                best = (m.start(), ans)
    return None if best is None else best[1]


def _strip_math(ans: str) -> str:
    ans = ans.strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(ans) > len(left) + len(right) and ans.startswith(left) and ans.endswith(right):
            ans = ans[len(left) : -len(right)].strip()
            break
    return ans.rstrip(".").strip()


def _last_box(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for cmd in _BOX_COMMANDS:
        start = text.rfind(cmd)
        while start != -1:
            content = _box_content(text, start + len(cmd))
            if content is not None:
                if best is None or start > best[0]:
                    best = (start, content)
                break
            start = text.rfind(cmd, 0, start)
    if best is None:
        return None
    answer = best[1].strip()
    return answer or None


def _box_content(text: str, i: int) -> str | None:
    """Parse the argument starting at ``text[i]``: ``{...}`` or ``␣token``."""
    if i < len(text) and text[i] == " ":
        j = i + 1
        while j < len(text) and not text[j].isspace() and text[j] not in "$}":
            j += 1
        return text[i + 1 : j] if j > i + 1 else None
    if i >= len(text) or text[i] != "{":
        return None
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch == "\\" and j + 1 < len(text) and text[j + 1] in "{}":
            j += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
    return None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@functools.lru_cache(maxsize=4096)
def parse_answer(answer: str) -> tuple[Any, ...]:
    """math-verify parse of a bare answer (wrapped in ``$...$`` so LaTeX is recognised)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    timeout = 5 if _on_main_thread() else None
    return tuple(
        parse(
            f"${answer}$",
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            parsing_timeout=timeout,  # type: ignore[arg-type]
        )
    )


@functools.lru_cache(maxsize=16384)
def answers_equal(a: str, b: str) -> bool:
    """True if two extracted answers are mathematically equivalent (per math-verify).

    Symmetric by construction: checked both ways, since math-verify treats its first
    argument as the gold answer.
    """
    if a == b:
        return True
    from math_verify import verify

    pa, pb = parse_answer(a), parse_answer(b)
    if not pa or not pb:
        return _squash(a) == _squash(b)
    timeout = 5 if _on_main_thread() else None
    try:
        return bool(
            verify(list(pa), list(pb), timeout_seconds=timeout)  # type: ignore[arg-type]
            or verify(list(pb), list(pa), timeout_seconds=timeout)  # type: ignore[arg-type]
        )
    except Exception as exc:  # math-verify raises on pathological sympy input
        log.debug("math-verify failed on %r vs %r: %s", a, b, exc)
        return _squash(a) == _squash(b)


def _squash(s: str) -> str:
    return "".join(s.split())


def grade(prediction: str, gold: str) -> bool:
    """True if ``prediction`` answers ``gold`` correctly, judged by math-verify.

    For evals only; strategies never see the gold answer.

    Args:
        prediction: A full solution (its final answer is extracted with ``extract_answer``,
            fallbacks included) or a bare answer such as ``"0.5"``. A multi-line text with
            no extractable answer is wrong.
        gold: The reference answer, bare (``"\\frac{1}{2}"``) or boxed.

    Raises:
        GradingError: ``gold`` is empty or not a string.
    """
    gold_ans = gold_answer(gold)
    if not isinstance(prediction, str):
        return False
    pred = extract_answer(prediction)
    if pred is None:
        bare = prediction.strip()
        if not bare or "\n" in bare:
            return False  # a solution with no final answer
        pred = bare
    return answers_equal(gold_ans, pred)


def gold_answer(gold: str) -> str:
    """The reference answer to compare against: its last box, or the text itself.

    Raises:
        GradingError: ``gold`` is empty or not a string.
    """
    if not isinstance(gold, str) or not gold.strip():
        raise GradingError(
            f"gold answer {gold!r} is empty; every graded problem needs a reference answer"
        )
    return _last_box(gold) or gold.strip()
