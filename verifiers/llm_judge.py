"""LLM-as-judge verifier: P("Yes") of a yes/no judgement, read from one token's logprobs.

For every candidate and every step prefix (or only the full solution, ``mode="outcome"``)
the judge model is asked whether the last step (the solution) is correct, and is sampled for
exactly **one** token with ``logprobs=k``. The score is the probability mass on the "yes"
token variants over the mass on "yes" and "no" variants among the top-``k`` alternatives::

    P(correct) = sum p(yes variants) / (sum p(yes variants) + sum p(no variants))

Variants are matched on the decoded token with whitespace stripped, case folded and
surrounding punctuation removed, so ``"Yes"``, ``" yes"`` and ``"YES"`` all count as "yes".
When neither appears among the top-``k`` the judge has said nothing usable and the step
scores ``NEUTRAL`` (0.5). A judge prompt that does not fit the context window also scores
``NEUTRAL`` (with a warning) unless ``overflow="error"``.

Performance contract: all judge prompts of all candidates go to the engine in **one**
``generate`` call (through ``ledger.generate`` when a ledger is given, so the judge's prompt
and generated tokens are accounted). Step prompts of one candidate extend each other, so the
engine's prefix cache serves the shared part. Each distinct prompt is judged once per call,
and once per run when a ledger is given (``reuse``): a step-wise search asks about the same
prefixes at every step (siblings share their parent's, and step mode re-scores every earlier
step), and the greedy one-token judgement of an identical prompt cannot change.

The judge is the policy model by default (any ``Generator`` with logprobs works); the
approach follows the "LLM-as-a-judge" / generative-verifier line of work (Zheng et al. 2023;
Zhang et al. 2024, "Generative Verifiers"), reduced to a single next-token probability.
"""

from __future__ import annotations

import hashlib
import logging
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ttscale.budget import Ledger
from ttscale.errors import ConfigError, VerifierError
from ttscale.protocols import Generator
from ttscale.types import GenerationOutput, GenerationRequest, Problem
from ttscale.verifiers.base import check_scores

__all__ = [
    "DEFAULT_JUDGE_SYSTEM",
    "DEFAULT_OUTCOME_TEMPLATE",
    "DEFAULT_STEP_TEMPLATE",
    "LLMJudge",
    "NEUTRAL",
    "yes_probability",
]

log = logging.getLogger(__name__)

NEUTRAL = 0.5
"""Score of a step the judge could not assess (no yes/no token, or prompt too long)."""

DEFAULT_JUDGE_SYSTEM = "You are a strict math teacher. You check solutions carefully."
DEFAULT_STEP_TEMPLATE = (
    "Here is a math problem and the beginning of a student's solution.\n\n"
    "Problem:\n{problem}\n\n"
    "Solution so far:\n{solution}\n\n"
    "Is the last step of this solution correct? Answer Yes or No."
)
"""Judge prompt per step prefix; ``{problem}`` and ``{solution}`` (steps 1..i) are filled."""
DEFAULT_OUTCOME_TEMPLATE = (
    "Here is a math problem and a student's solution.\n\n"
    "Problem:\n{problem}\n\n"
    "Solution:\n{solution}\n\n"
    "Is this solution correct, with the right final answer? Answer Yes or No."
)
"""Judge prompt for ``mode="outcome"``; ``{problem}`` and ``{solution}`` are filled."""

_PUNCT = " \t\r\n.,:;!?\"'`*()[]<>_"


def _digest(ids: Sequence[int]) -> bytes:
    """A prompt's memo key: 16 bytes instead of the token ids themselves."""
    return hashlib.blake2b(array("q", ids).tobytes(), digest_size=16).digest()


def _normalise(token: str) -> str:
    return token.strip(_PUNCT).casefold()


def yes_probability(
    top_logprobs: Mapping[str, float],
    yes_words: Sequence[str] = ("yes",),
    no_words: Sequence[str] = ("no",),
) -> float | None:
    """P(yes) normalised over the yes/no variants in one position's top logprobs.

    Args:
        top_logprobs: Decoded token -> logprob (``Completion.top_logprobs[0]``).
        yes_words: Normalised forms counting as "yes" (compared after stripping whitespace
            and punctuation and case folding).
        no_words: Normalised forms counting as "no".

    Returns:
        The probability, or ``None`` when neither a yes nor a no variant is present.
    """
    yes = {_normalise(w) for w in yes_words}
    no = {_normalise(w) for w in no_words}
    p_yes = p_no = 0.0
    for token, lp in top_logprobs.items():
        if lp is None or math.isnan(lp):
            continue
        word = _normalise(token)
        if word in yes:
            p_yes += math.exp(lp)
        elif word in no:
            p_no += math.exp(lp)
    total = p_yes + p_no
    if total <= 0.0:
        return None
    return p_yes / total


@dataclass(frozen=True)
class LLMJudge:
    """Per-step (or outcome) P("correct") from a judge model's yes/no logprobs.

    Args:
        generator: The judge engine; must return ``top_logprobs`` (vLLM, HF, scripted; an
            OpenAI-compatible server only if it returns logprobs).
        mode: ``"step"``: one score per step prefix; ``"outcome"``: one score for the full
            solution (cheaper: one prompt per candidate).
        top_k: Alternatives requested per judgement (``logprobs=k``); yes/no variants
            outside the top ``k`` are not seen.
        step_template: Prompt for step mode, with ``{problem}`` and ``{solution}``.
        outcome_template: Prompt for outcome mode, with ``{problem}`` and ``{solution}``.
        system_prompt: The judge's system message (``None`` leaves it out).
        yes_words: Normalised token forms counting as "yes" (tokenizer dependent: a
            byte-level toy tokenizer needs ``("y",)``).
        no_words: Normalised token forms counting as "no".
        max_model_len: Context window of the judge; ``None`` reads
            ``generator.max_model_len`` when the backend has one.
        overflow: A judge prompt longer than the window scores ``NEUTRAL`` (``"neutral"``,
            logged) or raises ``VerifierError`` (``"error"``).
        name: Verifier name in traces.
        reuse: Keep each judgement in ``ledger.memo`` and answer an identical prompt later
            in the same run from it (no engine call, nothing charged). Judgements are
            greedy, so only engine numerics could differ; ``False`` re-asks every time.

    Raises:
        ConfigError: Unknown mode/overflow, ``top_k < 1``, or a template without
            ``{problem}``/``{solution}``.
    """

    generator: Generator
    mode: Literal["step", "outcome"] = "step"
    top_k: int = 10
    step_template: str = DEFAULT_STEP_TEMPLATE
    outcome_template: str = DEFAULT_OUTCOME_TEMPLATE
    system_prompt: str | None = DEFAULT_JUDGE_SYSTEM
    yes_words: tuple[str, ...] = ("yes",)
    no_words: tuple[str, ...] = ("no",)
    max_model_len: int | None = None
    overflow: Literal["neutral", "error"] = "neutral"
    name: str = "llm_judge"
    reuse: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("step", "outcome"):
            raise ConfigError(f"mode={self.mode!r}; use 'step' or 'outcome'")
        if self.overflow not in ("neutral", "error"):
            raise ConfigError(f"overflow={self.overflow!r}; use 'neutral' or 'error'")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k!r} must be a positive integer (e.g. 10)")
        for field_name in ("step_template", "outcome_template"):
            template = getattr(self, field_name)
            if "{problem}" not in template or "{solution}" not in template:
                raise ConfigError(
                    f"{field_name} must contain {{problem}} and {{solution}}; got {template[:80]!r}"
                )
        if not self.yes_words or not self.no_words:
            raise ConfigError("yes_words and no_words must each name at least one token form")

    @property
    def template(self) -> str:
        return self.step_template if self.mode == "step" else self.outcome_template

    def prompts(self, problem: Problem, steps: Sequence[str]) -> list[str]:
        """The judge's user messages for one candidate (one per scored position)."""
        sep = problem.step_delimiter
        ends = range(1, len(steps) + 1) if self.mode == "step" else [len(steps)]
        return [
            self.template.format(problem=problem.prompt, solution=sep.join(steps[:k]))
            for k in ends
            if steps
        ]

    async def score(
        self,
        problems: Sequence[Problem],
        step_lists: Sequence[Sequence[str]],
        *,
        ledger: Ledger | None = None,
    ) -> list[list[float]]:
        """Score every step (or every solution) of every candidate in one engine call.

        Args:
            problems: The problem of each candidate.
            step_lists: Each candidate's steps. A candidate with no steps scores ``[]``
                (``aggregate`` maps that to 0.0) and costs nothing.
            ledger: Records the judge's engine call when given.

        Returns:
            Per candidate: one score per step (``mode="step"``) or a single score.

        Raises:
            ConfigError: ``problems`` and ``step_lists`` differ in length.
            VerifierError: The backend returned no ``top_logprobs``, or a prompt overflows
                with ``overflow="error"``.
        """
        if len(problems) != len(step_lists):
            raise ConfigError(
                f"got {len(problems)} problems for {len(step_lists)} step lists; pass one "
                f"problem per candidate (repeat it for candidates of the same problem)"
            )
        limit = self.max_model_len or getattr(self.generator, "max_model_len", None)
        memo = ledger.memo if ledger is not None and self.reuse else {}
        requests: list[GenerationRequest] = []
        keys: dict[tuple[int, bytes], int] = {}  # prompt -> its request in this call
        known: dict[tuple[int, bytes], float] = {}  # prompt -> score, from the memo or this call
        slots: list[list[tuple[int, bytes] | None]] = []  # per position: its prompt, or neutral
        for i, (problem, steps) in enumerate(zip(problems, step_lists, strict=True)):
            row: list[tuple[int, bytes] | None] = []
            for text in self.prompts(problem, list(steps)):
                ids = self.generator.render(Problem(text, system_prompt=self.system_prompt))
                key = (id(self), _digest(ids))
                if key in memo:
                    known[key] = memo[key]
                if key in known or key in keys:  # judged earlier in the run, or in this call
                    row.append(key)
                    continue
                if limit is not None and len(ids) + 1 > limit:
                    if self.overflow == "error":
                        raise VerifierError(
                            f"{self.name}: judge prompt for candidate {i} has {len(ids)} tokens, "
                            f"over the context window of {limit}; shorten the solutions, raise "
                            f"max_model_len, or use overflow='neutral'"
                        )
                    log.warning(
                        "%s: judge prompt of %d tokens exceeds the window of %d; candidate %d "
                        "step scores %.1f (neutral)",
                        self.name,
                        len(ids),
                        limit,
                        i,
                        NEUTRAL,
                    )
                    row.append(None)
                    continue
                row.append(key)
                keys[key] = len(requests)
                requests.append(
                    GenerationRequest(ids, n=1, max_tokens=1, temperature=0.0, logprobs=self.top_k)
                )
            slots.append(row)
        outputs = await self._generate(requests, ledger)
        fresh = {key: self._probability(outputs[k], k) for key, k in keys.items()}
        memo.update(fresh)
        known.update(fresh)
        scores = [[NEUTRAL if key is None else known[key] for key in row] for row in slots]
        log.debug(
            "%s: %d candidates, %d positions, %d judge prompts in one call",
            self.name,
            len(slots),
            sum(len(row) for row in slots),
            len(requests),
        )
        return check_scores(self.name, scores, step_lists)

    async def _generate(
        self, requests: list[GenerationRequest], ledger: Ledger | None
    ) -> list[GenerationOutput]:
        if not requests:
            return []
        if ledger is not None:
            outputs = await ledger.generate(self.generator, requests)
        else:
            outputs = await self.generator.generate(requests)
        if len(outputs) != len(requests):
            raise VerifierError(
                f"{self.name}: the judge backend returned {len(outputs)} outputs for "
                f"{len(requests)} prompts"
            )
        return outputs

    def _probability(self, out: GenerationOutput, k: int) -> float:
        comp = out.completions[0] if out.completions else None
        if comp is None or not comp.top_logprobs:
            raise VerifierError(
                f"{self.name}: judge backend {getattr(self.generator, 'name', '?')!r} returned "
                f"no top_logprobs for prompt {k}; use a backend that supports logprobs "
                f"(vllm, hf, scripted) or an OpenAI server that returns them"
            )
        p = yes_probability(comp.top_logprobs[0], self.yes_words, self.no_words)
        if p is None:
            log.debug("%s: no yes/no token in the top-%d of prompt %d", self.name, self.top_k, k)
            return NEUTRAL
        return p
