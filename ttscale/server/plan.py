"""Request planning: an OpenAI chat request -> strategy, options, budget and problem.

Every client mistake is found here and answered with a 4xx before any compute (or any
streamed byte) is spent. The model alias names the strategy (``ttscale/<strategy>``,
optionally ``/<budget>``); ``extra_body`` may add ``strategy``, ``budget`` and ``options``,
and for code ``tests`` and ``entry_point``, which select the ``code`` strategy unless the
request names another (then they are a 400).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ttscale.api import CODE_STRATEGY, code_request
from ttscale.budget import UNITS, Budget
from ttscale.errors import ConfigError
from ttscale.integrations import problem_from_chat
from ttscale.server.errors import APIError
from ttscale.server.schemas import ChatCompletionRequest, ChatMessage
from ttscale.strategies import STRATEGIES, make_strategy
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Problem

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_BUDGET",
    "MODEL_PREFIX",
    "Plan",
    "ServerConfig",
    "cap_budget",
    "plan_request",
]

DEFAULT_MAX_BUDGET = "tokens=65536,rollouts=64,seconds=120"
DEFAULT_BUDGET = "rollouts=8"

MODEL_PREFIX = "ttscale"
"""Model aliases: ``ttscale``, ``ttscale/<strategy>``, ``ttscale/<strategy>/<budget>``."""

# OpenAI sampling fields forwarded to the strategy option of the same meaning, if it has one.
_FORWARDED = (
    ("max_tokens", "max_tokens"),
    ("max_completion_tokens", "max_tokens"),
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("seed", "seed"),
)


class ServerConfig(BaseModel):
    """Operator settings; validated once when the app is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = None
    """Bearer token required on ``/v1/*``; ``None`` disables auth (``/health`` is open)."""
    max_budget: Budget = Budget.parse(DEFAULT_MAX_BUDGET)
    """Per-request caps. A request asking for more in any unit gets a 400; a unit the
    request leaves uncapped is capped at this value."""
    default_budget: Budget = Budget.parse(DEFAULT_BUDGET)
    """Budget of requests that name none (then capped by ``max_budget``)."""
    default_strategy: str = "best_of_n"
    max_concurrency: int = Field(default=4, ge=1)
    """Requests solved at once (the engine batches within a request, not across)."""
    max_queue: int = Field(default=64, ge=0)
    """Requests allowed to wait for a slot; beyond that, 429."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Per-request limit, queue wait included; then 504."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    """Larger request bodies get a 413."""
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    """Used when a request has no system message."""

    @field_validator("max_budget", "default_budget", mode="before")
    @classmethod
    def _parse_budget(cls, value: Any) -> Budget:
        return Budget.parse(value)

    @field_validator("default_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; choose one of {', '.join(STRATEGIES)}")
        return value


@dataclass(frozen=True, slots=True)
class Plan:
    """What one request runs: validated, capped, ready for ``asolve``."""

    model: str
    strategy: str
    budget: Budget
    options: dict[str, Any]
    problem: Problem


def cap_budget(requested: Budget, cap: Budget) -> Budget:
    """Apply the operator's caps: uncapped units get the cap; asking for more is an error.

    Raises:
        APIError: 400 naming the unit, the value asked for and the server's maximum.
    """
    fields = requested.model_dump()
    for unit in UNITS:
        limit, asked = getattr(cap, unit), fields[unit]
        if limit is None:
            continue
        if asked is None:
            fields[unit] = limit
        elif asked > limit:
            raise APIError(
                400,
                f"budget {unit}={asked:g} exceeds this server's maximum {unit}={limit:g} "
                f"(per-request caps: {cap}); ask for at most {unit}={limit:g}",
                code="budget_exceeds_cap",
                param="budget",
            )
    return Budget(**fields)


def _parse_alias(model: str) -> tuple[str | None, str | None]:
    head, _, rest = model.partition("/")
    strategy, _, budget = rest.partition("/")
    if head != MODEL_PREFIX or (rest and strategy not in STRATEGIES):
        names = ", ".join(f"{MODEL_PREFIX}/{s}" for s in STRATEGIES)
        raise APIError(
            404,
            f"model {model!r} is not served here; use {MODEL_PREFIX!r}, one of {names}, or "
            f"'{MODEL_PREFIX}/<strategy>/<budget>' (GET /v1/models lists them)",
            code="model_not_found",
            param="model",
        )
    return strategy or None, budget or None


def _text(msg: ChatMessage, index: int) -> str:
    if msg.content is None or isinstance(msg.content, str):
        return msg.content or ""
    parts = []
    for part in msg.content:
        if part.type != "text" or part.text is None:
            raise APIError(
                400,
                f"messages[{index}] has a {part.type!r} content part; only text is supported",
                param=f"messages[{index}].content",
            )
        parts.append(part.text)
    return "\n".join(parts)


def plan_request(req: ChatCompletionRequest, cfg: ServerConfig) -> Plan:
    """Resolve strategy, options, budget and problem; every client mistake is a 4xx here,
    before any compute (or any streamed byte) is spent."""
    alias_strategy, alias_budget = _parse_alias(req.model)
    if req.strategy is not None and alias_strategy not in (None, req.strategy):
        raise APIError(
            400,
            f"strategy {req.strategy!r} conflicts with model {req.model!r}; "
            f"name the strategy in one place",
            param="strategy",
        )
    named = req.strategy or alias_strategy
    code = bool(req.tests) or req.entry_point is not None
    if code and named not in (None, CODE_STRATEGY):
        given = "tests" if req.tests else "entry_point"
        where = f"model {req.model!r}" if req.strategy is None else f"strategy {named!r}"
        raise APIError(
            400,
            f"{given} is for the {CODE_STRATEGY!r} strategy, which runs candidate programs "
            f"against public tests; {where} would ignore it: ask for strategy "
            f"{CODE_STRATEGY!r} (model '{MODEL_PREFIX}/{CODE_STRATEGY}'), leave the strategy "
            f"out, or drop {given}",
            param="strategy",
        )
    strategy = CODE_STRATEGY if code else named or cfg.default_strategy
    if strategy not in STRATEGIES:
        raise APIError(
            400,
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}",
            param="strategy",
        )
    if req.budget is not None and alias_budget is not None:
        raise APIError(
            400,
            f"budget given both in model {req.model!r} and in 'budget'; use one",
            param="budget",
        )
    spec = req.budget if req.budget is not None else alias_budget
    try:
        asked = cfg.default_budget if spec is None else Budget.parse(spec)
    except ConfigError as exc:
        raise APIError(400, str(exc), code="invalid_value", param="budget") from None
    budget = cap_budget(asked, cfg.max_budget)
    if req.n not in (None, 1):
        raise APIError(
            400,
            f"n={req.n} is not supported: a request returns one answer; to draw more samples "
            f"set the strategy option instead (extra_body={{'options': {{'n': {req.n}}}}})",
            param="n",
        )
    if req.tools:
        raise APIError(
            400,
            "tools are not supported by ttscale serve (it returns reasoned answers, not tool "
            "calls); call it as a tool from your agent instead",
            param="tools",
        )
    options = dict(req.options)
    fields = {f.name for f in dataclasses.fields(STRATEGIES[strategy])}
    for src, dst in _FORWARDED:
        value = getattr(req, src)
        if value is not None and dst in fields:
            options.setdefault(dst, value)
    try:
        make_strategy(strategy, **options)  # validate now: a bad option is a 400, not a 500
        problem = problem_from_chat(
            [(m.role, _text(m, i)) for i, m in enumerate(req.messages)], cfg.system_prompt
        )
    except ConfigError as exc:
        raise APIError(400, str(exc), code="invalid_value") from None
    if code:
        try:
            _, problem = code_request(
                problem.prompt,
                problem.system_prompt,
                strategy=strategy,
                tests=req.tests,
                entry_point=req.entry_point,
            )
        except ConfigError as exc:
            message = str(exc)
            param = "tests" if req.tests and not message.startswith("entry_point") else None
            raise APIError(
                400, message, code="invalid_value", param=param or "entry_point"
            ) from None
    return Plan(req.model, strategy, budget, options, problem)
