"""Verifiers: answer extraction and equivalence, voting, step-score aggregation.

Strategies depend on these pure tools and on the ``Verifier`` protocol
(``ttscale.protocols``); concrete reward models plug in through that protocol.
"""

from ttscale.verifiers.answers import answers_equal, extract_answer
from ttscale.verifiers.base import AGGREGATIONS, ScriptedVerifier, aggregate, check_scores
from ttscale.verifiers.voting import VoteGroup, group_answers, leader_confidence, vote

__all__ = [
    "AGGREGATIONS",
    "ScriptedVerifier",
    "VoteGroup",
    "aggregate",
    "answers_equal",
    "check_scores",
    "extract_answer",
    "group_answers",
    "leader_confidence",
    "vote",
]
