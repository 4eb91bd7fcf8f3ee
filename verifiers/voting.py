"""Majority and score-weighted voting over extracted answers, and the Beta stopping rule.

Answers are grouped into equivalence classes with ``answers_equal`` (math-verify), so
``0.5`` and ``\\frac{1}{2}`` vote together. Ties are broken deterministically: more votes,
then more weight, then the class seen first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.verifiers.answers import answers_equal

__all__ = [
    "VoteGroup",
    "filter_top",
    "group_answers",
    "leader_confidence",
    "vote",
    "vote_state",
]


@dataclass(frozen=True, slots=True)
class VoteGroup:
    """One equivalence class of answers."""

    answer: str
    """Representative: the first member's answer as written."""
    members: tuple[int, ...]
    """Indices of the candidates in this class."""
    weight: float
    """Sum of member scores (equals ``votes`` for an unweighted vote)."""

    @property
    def votes(self) -> int:
        return len(self.members)


def group_answers(
    answers: Sequence[str | None], scores: Sequence[float] | None = None
) -> list[VoteGroup]:
    """Group equivalent answers; ``None`` answers cast no vote.

    Args:
        answers: Extracted answer per candidate.
        scores: Weight per candidate (verifier score); ``None`` = 1 each.

    Returns:
        Groups sorted winner first (votes/weight order depends on ``scores``: weighted
        when given, else by count), ties broken by first appearance.
    """
    if scores is not None and len(scores) != len(answers):
        raise ValueError(f"got {len(scores)} scores for {len(answers)} answers")
    reps: list[str] = []
    members: list[list[int]] = []
    weights: list[float] = []
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        w = 1.0 if scores is None else float(scores[i])
        for g, rep in enumerate(reps):
            if answers_equal(rep, ans):
                members[g].append(i)
                weights[g] += w
                break
        else:
            reps.append(ans)
            members.append([i])
            weights.append(w)
    groups = [VoteGroup(rep, tuple(m), w) for rep, m, w in zip(reps, members, weights, strict=True)]
    if scores is None:
        key = lambda g: (-g.votes, -g.weight, g.members[0])  # noqa: E731
    else:
        key = lambda g: (-g.weight, -g.votes, g.members[0])  # noqa: E731
    return sorted(groups, key=key)


def vote(answers: Sequence[str | None], scores: Sequence[float] | None = None) -> str | None:
    """Winning answer of a majority (``scores=None``) or score-weighted vote."""
    groups = group_answers(answers, scores)
    return groups[0].answer if groups else None


def filter_top(
    answers: Sequence[str | None], scores: Sequence[float], keep: float
) -> tuple[list[str | None], list[float]]:
    """DeepConf's offline filter: the answers and scores of the ``ceil(keep * n)``
    highest-scoring candidates (at least one), others replaced by ``None`` (no vote) so
    indices still name candidates. Ties keep the earlier candidate."""
    if len(scores) != len(answers):
        raise ValueError(f"got {len(scores)} scores for {len(answers)} answers")
    n = len(answers)
    kept = set(sorted(range(n), key=lambda i: (-scores[i], i))[: max(1, math.ceil(keep * n))])
    return (
        [a if i in kept else None for i, a in enumerate(answers)],
        [float(s) if i in kept else 0.0 for i, s in enumerate(scores)],
    )


def vote_state(
    answers: Sequence[str | None], scores: Sequence[float] | None = None
) -> tuple[list[VoteGroup], float]:
    """The groups of a vote (``group_answers``) and ``leader_confidence`` of its leader over
    the runner-up by vote count (0 when nobody voted): what the adaptive stops check."""
    groups = group_answers(answers, scores)
    if not groups:
        return groups, 0.0
    second = groups[1].votes if len(groups) > 1 else 0
    return groups, leader_confidence(groups[0].votes, second)


def leader_confidence(leader_votes: int, runner_up_votes: int) -> float:
    """P(leader's true vote share > runner-up's) under a uniform Beta prior.

    The Beta stopping criterion of Adaptive-Consistency (Aggarwal et al. 2023,
    "Let's Sample Step by Step"): with ``a = leader + 1`` and ``b = runner_up + 1``,
    P(X > 1/2) for X ~ Beta(a, b), which for integer a, b is a binomial tail:
    ``sum_{j<a} C(a+b-1, j) / 2^(a+b-1)``. Exact, no scipy.
    """
    if leader_votes < 0 or runner_up_votes < 0:
        raise ValueError("vote counts must be non-negative")
    a, b = leader_votes + 1, runner_up_votes + 1
    n = a + b - 1
    tail = sum(math.comb(n, j) for j in range(a))
    return tail / 2**n
