"""Core value types: what goes into an engine call, what comes out, and what a strategy returns.

Everything here is a plain (mostly frozen, slotted) dataclass: no validation cost inside the
search loop. Validation of user input happens once, at the boundary (``Budget``, ``solve``,
the CLI and the server).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ttscale.budget import Ledger

__all__ = [
    "Candidate",
    "Completion",
    "CODE_INSTRUCTION",
    "ConfidenceStop",
    "DEFAULT_SYSTEM_PROMPT",
    "ExecResult",
    "FinishReason",
    "GenerationOutput",
    "GenerationRequest",
    "PROGRAM_INSTRUCTION",
    "PROGRAM_SYSTEM_PROMPT",
    "Problem",
    "PublicTest",
    "TIR_INSTRUCTION",
    "TestOutcome",
    "Result",
    "code_user_text",
    "topk_confidence",
]

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

PROGRAM_SYSTEM_PROMPT = "You are a helpful assistant."
"""System message of program-aided prompts (PoT, TIR): the coder models' own default."""

PROGRAM_INSTRUCTION = (
    "\n\nWrite a Python program that solves this problem. Use sympy to keep results exact "
    "(fractions, radicals, pi) and simplify the result. The program must print only the final "
    "answer. Put the whole program in a single ```python code block."
)
"""Appended to a problem for Program-of-Thought sampling (Chen et al. 2022; Gao et al. 2022's
PAL). Measured on the embedded 0.5B coder, 150 MATH-500 problems, greedy: 0.31 right when the
program runs, against 0.14 for chain-of-thought, at under half the tokens."""

TIR_INSTRUCTION = (
    "\n\nSolve this problem by reasoning step by step, and write Python code (with sympy for "
    "exact results) whenever a computation helps. Put each piece of code in a ```python code "
    "block that prints what you need; its output will be shown to you in an ```output block. "
    "Put your final answer within \\boxed{}."
)
"""Appended to a problem for tool-integrated reasoning (ToRA, Gou et al. 2023; the TIR prompt
of Qwen2.5-Math, reworded for a coder model that was not trained on ```output turns)."""

CODE_INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:"
)
"""Code problems: the prompt (a signature + docstring, or a task in words) is sent after this
line inside a ``` fence (``code_user_text``): EvalPlus's instruct prompt, the one the
Qwen2.5-Coder report's HumanEval numbers use."""


def code_user_text(prompt: str) -> str:
    """The user message of a code problem: ``CODE_INSTRUCTION`` and the prompt, fenced."""
    return f"{CODE_INSTRUCTION}\n```\n{prompt.strip()}\n```\n"


FinishReason = Literal["stop", "length", "confidence"]
"""As in vLLM: ``stop`` = EOS or a stop string was hit; ``length`` = cut at ``max_tokens``;
``confidence``: ended by a ``ConfidenceStop`` (DeepConf online early termination)."""


@dataclass(frozen=True, slots=True)
class ConfidenceStop:
    """End a sample once its model grows unsure: DeepConf's online early termination (Fu et
    al. 2025). The group confidence at token i is the mean token confidence
    (``topk_confidence``) of tokens ``i - window + 1 .. i``. Every ``every`` tokens the groups
    that ended since the last check are tested; if one is below ``threshold``, the sample
    ends there, at that check point. ``every=1`` is DeepConf's per-token check; an engine
    without native support generates in chunks of ``every`` tokens, so live and replayed
    samples stop at the same token."""

    window: int
    threshold: float
    every: int = 16

    def cut(self, confidence: Sequence[float]) -> int | None:
        """Tokens kept (a check point) if the sample stops within ``confidence``, else None."""
        c = list(confidence)
        if len(c) < self.window:
            return None
        run = sum(c[: self.window])
        low = [run / self.window]  # group ending at token window - 1
        for i in range(self.window, len(c)):
            run += c[i] - c[i - self.window]
            low.append(run / self.window)
        # low[j] is the group ending at token j + window - 1; check at t = every, 2 every, ...
        for t in range(self.every, len(c) + 1, self.every):
            first, last = max(t - self.every, self.window - 1), t - 1
            if first <= last and min(low[first - self.window + 1 : last - self.window + 2]) < (
                self.threshold
            ):
                return t
        return None


@dataclass(frozen=True, slots=True)
class PublicTest:
    """One example a code problem shows the model: a call of the entry point and what it
    should give. Strategies may run these (they are part of the question); hidden tests
    never travel in a ``Problem``."""

    call: str
    """The call as Python source, e.g. ``"add(2, 3)"``."""
    expected: str | None
    """The expected value as Python source (``"5"``, ``"[1, 2]"``, ``"'abc'"``, ``"0.5"``);
    ``None`` when the example shows an exception instead."""
    raises: str | None = None
    """The exception class name the example shows (``"ValueError"``), else ``None``."""


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """What one public test gave for one program."""

    __test__ = False  # not a pytest class

    test: PublicTest
    passed: bool
    actual: str | None
    """repr of the returned value (capped), ``!Name`` for an exception,
    or ``None`` when the call never finished."""
    error: str | None
    """Why it failed without a value (exception, time limit, the program did not load)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One question to answer. Strategies never see its ground truth.

    A code problem also names the function to write (``entry_point``) and may carry public
    ``tests`` (examples the model may see; the ``code`` strategy runs candidates on them)."""

    prompt: str
    """The user's question."""
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    """System message of the chat template; ``None`` leaves it out."""
    step_delimiter: str = "\n\n"
    """A reasoning *step* is text up to this delimiter (PRM convention)."""
    id: str | None = None
    """Optional identifier carried into traces and eval rows."""
    entry_point: str | None = None
    """Code problems: the function a candidate must define (``None``: inferred from the
    prompt's last ``def`` or the tests' calls)."""
    tests: tuple[PublicTest, ...] = ()
    """Code problems: public tests a strategy may run candidates against."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One prompt (as token ids) to sample ``n`` continuations from.

    Prompts are token ids, never re-rendered text: children of a search node extend the
    parent's ids, so the engine's prefix cache sees identical prefixes.
    """

    prompt_token_ids: tuple[int, ...]
    n: int = 1
    """Samples drawn from this prompt."""
    max_tokens: int = 1024
    """Cap on generated tokens per sample."""
    temperature: float = 0.8
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    """Stop strings; the sample ends at the first one (``finish_reason='stop'``)."""
    include_stop: bool = False
    """Keep the matched stop string in the text (needed to extend prefixes exactly)."""
    seed: int | None = None
    """Per-request seed. Backends that cannot honour it say so (``Generator.seeding``)."""
    logprobs: int | None = None
    """Return the sampled token's logprob and this many top alternatives per position."""
    prompt_logprobs: bool = False
    """Return the logprob of every prompt token (implicit PRMs)."""
    stop_below: ConfidenceStop | None = None
    """End samples whose group confidence drops below a threshold (needs ``logprobs``)."""


@dataclass(frozen=True, slots=True)
class Completion:
    """One sampled continuation."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    logprobs: tuple[float, ...] | None = None
    """Logprob of each generated token, when requested."""
    top_logprobs: tuple[dict[str, float], ...] | None = None
    """Per position: decoded token -> logprob for the top alternatives, when requested."""
    confidence: tuple[float, ...] | None = None
    """Per position: DeepConf token confidence, minus the mean logprob of the top-k
    alternatives (k = the request's ``logprobs``; ``topk_confidence``), when requested.
    High where the model was sure. Computed by the backend from the engine's raw top-k, so
    alternatives that decode to the same text are not merged."""

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def topk_confidence(top_logprobs: Iterable[float]) -> float:
    """DeepConf token confidence of one position: ``-mean`` of its top-k logprobs
    (Fu et al. 2025, "Deep Think with Confidence", eq. 2). With the top-k only (all an engine
    returns), Kang et al.'s self-certainty reduces to this up to a constant."""
    values = list(top_logprobs)
    return -sum(values) / len(values) if values else 0.0


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """The engine's answer to one ``GenerationRequest``."""

    completions: tuple[Completion, ...]
    prompt_tokens: int
    cached_tokens: int = 0
    """Prompt tokens served from the engine's prefix cache (as reported by the engine)."""
    prompt_logprobs: tuple[float | None, ...] | None = None


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What running one program in the sandbox (``ttscale.sandbox``) gave. A program's own
    failures (an exception, a crash, a limit hit) are data here, never exceptions; ``error``
    is for the sandbox failing (a worker that died and was restarted)."""

    stdout: str
    """Standard output (UTF-8, invalid bytes replaced), at most the output cap."""
    stderr: str
    """Standard error (tracebacks), at most the output cap."""
    exit_code: int | None
    """0, 1 on an uncaught exception, ``SystemExit``'s code; ``None`` if killed by a signal."""
    signal: int | None
    """The signal that ended the program (SIGKILL, SIGSEGV, SIGXCPU, ...), else ``None``."""
    timed_out: bool
    """The wall-clock or CPU-time limit ended it."""
    output_truncated: bool
    """stdout or stderr went past the output cap; the program was killed there."""
    seconds: float
    """Wall time of the program, fork to exit."""
    error: str | None = None
    """A sandbox-side failure (the worker died and was restarted, ...); ``None`` normally."""

    @property
    def ok(self) -> bool:
        """The program ran to the end and exited with 0."""
        return self.exit_code == 0 and not self.timed_out and self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecResult:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class Candidate:
    """A finished (or truncated) solution a strategy considered."""

    text: str
    answer: str | None
    """Extracted final answer (last ``\\boxed{}``), ``None`` if there is none."""
    tokens: int
    """Generated tokens in this candidate."""
    finish_reason: FinishReason
    score: float | None = None
    """Aggregated verifier score, if a verifier was used."""
    step_scores: list[float] | None = None
    token_confidence: tuple[float, ...] | None = field(default=None, repr=False)
    """Per-token DeepConf confidence (``Completion.confidence``), when the strategy asked
    for logprobs (a ``CandidateVerifier`` needs them). Left out of ``Result.to_dict``."""
    program: str | None = None
    """Program-aided candidates: the code that was run (``None``: chain of thought, or no
    closed code block)."""
    execution: ExecResult | None = None
    """What running ``program`` in the sandbox gave; its printed answer is ``answer``."""


@dataclass(slots=True)
class Result:
    """What every strategy returns.

    Attributes:
        answer: The chosen final answer, or ``None`` if no candidate produced one.
        candidates: Every candidate considered, with scores.
        trace: Step records (one dict per engine round / search step), for inspection.
        ledger: What was spent, in every budget unit.
        strategy: Registry name of the strategy that produced it.
        extras: Strategy-specific data (vote table, confidence, stop reason...).
    """

    answer: str | None
    candidates: list[Candidate]
    trace: list[dict[str, Any]]
    ledger: Ledger
    strategy: str
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "strategy": self.strategy,
            "candidates": [
                {k: v for k, v in asdict(c).items() if k != "token_confidence"}
                for c in self.candidates
            ],
            "trace": self.trace,
            "ledger": self.ledger.to_dict(),
            "extras": self.extras,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)
