"""OpenAI-compatible wire schemas for ``ttscale serve`` (pydantic; no web framework).

Requests accept the OpenAI chat-completions fields plus ttscale fields that the
official client sends through ``extra_body``: ``strategy``, ``budget``, ``options``, and for
code ``tests`` and ``entry_point``. Responses are exactly OpenAI's shapes plus extension
fields the official client keeps as extras: ``usage.ttscale_ledger`` and a top-level
``ttscale`` object (answer, vote table, candidate summary, progress events when streaming;
for code the program, its public-test results and the behaviour clusters).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from ttscale.integrations import representative, summarize
from ttscale.types import Result

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "Delta",
    "ErrorBody",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "ResponseMessage",
    "StreamOptions",
    "TextPart",
    "Usage",
    "code_report",
    "completion_id",
    "content",
    "jsonable",
    "summary",
    "usage",
]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


# -- request ---------------------------------------------------------------------------------
class TextPart(BaseModel):
    """A content part; only ``text`` parts are supported (the models here are text-only)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id...

    role: Role
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False
    """Send a last chunk with ``usage`` (and ``choices: []``), as OpenAI does."""


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body. Unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=512)
    """``ttscale``, ``ttscale/<strategy>`` or ``ttscale/<strategy>/<budget>``."""
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    """Only 1: a request returns one answer; sample count is ``options.n``."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Per-sample token cap (strategy option ``max_tokens``)."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """Alias of ``max_tokens`` (newer OpenAI name)."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    tools: list[Any] | None = None
    """Not supported (ttscale returns reasoning, not tool calls); non-empty is a 400."""
    # ttscale extensions (extra_body)
    strategy: str | None = Field(default=None, max_length=128)
    """Registered strategy name; overrides the model alias's default."""
    budget: str | int | dict[str, float | int] | None = None
    """Budget spec (``"tokens=4000,rollouts=8"``, an int = tokens, or a dict)."""
    options: dict[str, Any] = Field(default_factory=dict, max_length=64)
    """Strategy hyper-parameters, e.g. ``{"n": 8, "max_tokens": 512}``."""
    tests: list[str] | None = None
    """Code: public tests, ``"add(2, 3) == 5"``, ``"assert add(2, 3) == 5"`` or doctest
    text (``ttscale.verifiers.test_specs``); they select the ``code`` strategy."""
    entry_point: str | None = Field(default=None, max_length=256)
    """Code: the function to write; default: the one the tests call."""


# -- responses -------------------------------------------------------------------------------
class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    """OpenAI usage; tokens are summed over every sample and engine call of the search."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    ttscale_ledger: dict[str, Any]
    """The full ``Ledger.to_dict()``: cached tokens, rollouts, eFLOPs, wall time, stop cap."""


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    ttscale: dict[str, Any]
    """Extension: answer, strategy, budget, votes, candidates summary, strategy extras."""


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    ttscale: dict[str, Any] | None = None
    """Extension: ``{"event": "progress", ...}`` while searching, the summary on the last."""


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "ttscale"
    ttscale: dict[str, Any] = Field(default_factory=dict)
    """Extension: strategy name, its options with defaults, and a one-line description."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: ``{"error": {"message", "type", "code", "param"}}``."""

    error: ErrorBody


# -- results -> wire shapes ----------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """JSON-safe copy; numpy scalars become numbers, other unknown objects their ``str``."""
    return to_jsonable_python(value, fallback=lambda v: v.item() if hasattr(v, "item") else str(v))


CODE_STRATEGY = "code"
CODE_FIELDS = ("entry_point", "tests", "passed_public", "n_public", "clusters", "selection")
"""What a code result reports beside its program (``Result.extras`` of the ``code``
strategy): the entry point, one ``{call, expected, raises, passed, actual, error}`` per
public test, the pass count, the behaviour clusters and how the program was selected."""


def code_report(result: Result) -> dict[str, Any] | None:
    """For a ``code`` result: ``{"program", *CODE_FIELDS}`` (JSON-safe); else ``None``."""
    if result.strategy != CODE_STRATEGY:
        return None
    extras = result.extras
    report: dict[str, Any] = {"program": result.answer}
    for key in CODE_FIELDS:
        report[key] = extras.get(key, [] if key in ("tests", "clusters") else None)
    return jsonable(report)


def summary(result: Result) -> dict[str, Any]:
    """The ``ttscale`` extension object (see ``ttscale.integrations.summarize``), JSON-safe.

    A code result also has ``program`` and the ``CODE_FIELDS`` at the top level (and not
    again in ``extras``)."""
    out = jsonable(summarize(result))
    code = code_report(result)
    if code is not None:
        out["extras"] = {k: v for k, v in out["extras"].items() if k not in CODE_FIELDS}
        out.update(code)
    return out


def usage(result: Result) -> Usage:
    """OpenAI usage summed over every sample and engine call, plus the full ledger."""
    led = result.ledger
    return Usage(
        prompt_tokens=led.prompt_tokens,
        completion_tokens=led.generated_tokens,
        total_tokens=led.prompt_tokens + led.generated_tokens,
        ttscale_ledger=jsonable(led.to_dict()),
    )


def content(result: Result) -> tuple[str, str]:
    """Text and finish reason of the candidate that stands for the answer; for a code
    result with a program, the program in a ```python block."""
    cand = representative(result)
    finish = cand.finish_reason if cand is not None else "stop"
    if result.strategy == CODE_STRATEGY and isinstance(result.answer, str):
        program = result.answer.strip("\n")
        return f"```python\n{program}\n```", finish
    return (cand.text, finish) if cand is not None else ("", finish)
