"""Final-answer extraction and equivalence.

Extraction takes the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with nested
braces matched, the PRM/MATH convention. Equivalence is decided by ``math-verify``
(``\\frac{1}{2}`` == ``0.5``, ``\\dfrac``, intervals, ...), never by a hand-written
normaliser. math-verify's timeouts use ``signal.alarm``, which only works on the main
thread, so off the main thread it runs without its timeout.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

__all__ = ["answers_equal", "extract_answer", "parse_answer"]

log = logging.getLogger(__name__)

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``/``\\fbox{...}`` in ``text``, or ``None``.

    Nested braces are matched; escaped ``\\{``/``\\}`` do not count. An unclosed box
    (e.g. cut off at the token limit) yields ``None``. ``\\boxed 5`` (no braces) yields ``5``.
    """
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
