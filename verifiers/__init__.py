"""Verifiers: answer extraction, grading and voting, step-score aggregation, and reward models.

Strategies depend on these pure tools and on the ``Verifier`` protocol
(``ttscale.protocols``); concrete reward models plug in through that protocol:

- ``ConfidenceVerifier``: DeepConf statistics of a sample's own token confidences (no call);
- ``LLMJudge``: P("Yes") of a judge model's one-token verdict, per step or per solution;
- ``ImplicitPRM``: step rewards from policy/reference log-ratios (Yuan et al. 2024);
- ``QwenPRM``, ``MathShepherdPRM``, ``RLHFlowPRM``: adapters for public PRM checkpoints;
- ``load_verifier`` / ``register_verifier``: build any of them (or your own) by name.

Engines and models are imported only when a verifier is built.
"""

from ttscale.verifiers.answers import answers_equal, extract_answer, grade
from ttscale.verifiers.base import AGGREGATIONS, ScriptedVerifier, aggregate, check_scores
from ttscale.verifiers.confidence import ConfidenceVerifier
from ttscale.verifiers.implicit_prm import ImplicitPRM
from ttscale.verifiers.llm_judge import LLMJudge, yes_probability
from ttscale.verifiers.prm import MathShepherdPRM, QwenPRM, RLHFlowPRM, detect_prm_style
from ttscale.verifiers.registry import VERIFIERS, load_verifier, register_verifier
from ttscale.verifiers.voting import VoteGroup, group_answers, leader_confidence, vote

__all__ = [
    "AGGREGATIONS",
    "ConfidenceVerifier",
    "ImplicitPRM",
    "LLMJudge",
    "MathShepherdPRM",
    "QwenPRM",
    "RLHFlowPRM",
    "ScriptedVerifier",
    "VERIFIERS",
    "VoteGroup",
    "aggregate",
    "answers_equal",
    "check_scores",
    "detect_prm_style",
    "extract_answer",
    "grade",
    "group_answers",
    "leader_confidence",
    "load_verifier",
    "register_verifier",
    "vote",
    "yes_probability",
]
