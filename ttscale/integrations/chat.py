"""What the agent integrations share, framework-free: a chat transcript to the one
``Problem`` a strategy solves, and the candidate and summary to show for a ``Result``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttscale.errors import ConfigError, describe
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Candidate, Problem, Result

__all__ = ["SYSTEM_ROLES", "problem_from_chat", "representative", "summarize"]

SYSTEM_ROLES = ("system", "developer")
"""Roles whose text replaces the default system prompt (OpenAI renamed system to developer)."""


def problem_from_chat(
    turns: Sequence[tuple[str, str]], default_system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> Problem:
    """Map a chat transcript to the one problem a strategy solves.

    The last ``user`` message is the prompt; the last system (or developer) message, if
    any, replaces ``default_system_prompt``. Assistant and tool turns are not part of the
    problem: a strategy answers a single question, so earlier turns are ignored.

    Args:
        turns: ``(role, text)`` pairs in conversation order.
        default_system_prompt: Used when no system message is present.

    Raises:
        ConfigError: No user message, or the last one is empty.
    """
    users = [text for role, text in turns if role == "user"]
    if not users:
        roles = [role for role, _ in turns]
        raise ConfigError(
            f"messages contain no user message (roles: {describe(roles)}); "
            f"send the question as a message with role 'user'"
        )
    if not users[-1].strip():
        raise ConfigError("the last user message is empty; send the question as its content")
    systems = [text for role, text in turns if role in SYSTEM_ROLES]
    return Problem(users[-1], systems[-1] if systems else default_system_prompt)


def representative(result: Result) -> Candidate | None:
    """The candidate whose text stands for ``result.answer``.

    The highest-scoring candidate with exactly the chosen answer (vote groups are named
    after their first member, so one exists), the first such on ties; the first candidate
    when no answer was chosen; ``None`` when there are no candidates.
    """
    matching = [c for c in result.candidates if c.answer == result.answer]
    if result.answer is None or not matching:
        return result.candidates[0] if result.candidates else None
    return max(matching, key=lambda c: c.score if c.score is not None else 0.0)


def summarize(result: Result) -> dict[str, Any]:
    """What an integration reports beside the answer text: the answer, the vote table, one
    line per candidate (no texts) and the strategy's other extras. The ledger is separate."""
    return {
        "answer": result.answer,
        "strategy": result.strategy,
        "budget": result.ledger.budget.model_dump(exclude_none=True),
        "votes": result.extras.get("votes", []),
        "candidates": [
            {
                "answer": c.answer,
                "tokens": c.tokens,
                "finish_reason": c.finish_reason,
                "score": c.score,
            }
            for c in result.candidates
        ],
        "extras": {k: v for k, v in result.extras.items() if k != "votes"},
    }
