"""What the MCP tools return: pydantic models (published as each tool's output schema and
sent as ``structuredContent``) and their plain-text rendering (the ``content`` an agent's
model reads).

A ``solve`` result is the answer, the vote table, a short ledger and the chosen solution
text; ``solve_batch`` returns one such item per question plus the batch totals;
``strategies`` lists every registered strategy with its options and defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ttscale.budget import Budget, Ledger
from ttscale.integrations import representative
from ttscale.server.schemas import jsonable
from ttscale.strategies import STRATEGIES
from ttscale.types import Result

__all__ = [
    "BatchItem",
    "BatchOutput",
    "LedgerBrief",
    "SolveOutput",
    "StrategiesOutput",
    "StrategyInfo",
    "StrategyOption",
    "Vote",
    "strategy_catalog",
]


class Vote(BaseModel):
    """One row of the vote table: an answer class, its votes and its (verifier) weight."""

    model_config = ConfigDict(extra="ignore")

    answer: str | None
    votes: int
    weight: float


class LedgerBrief(BaseModel):
    """What the search spent (the full ledger is ``Ledger.to_dict()``)."""

    generated_tokens: int
    prompt_tokens: int
    cached_tokens: int
    rollouts: int
    engine_calls: int
    eflops: float
    """Effective FLOPs of the engine work, from ttscale's cost model."""
    seconds: float
    """Wall-clock seconds of the search."""
    stopped_by: str | None
    """The budget unit that ended the search, if one did."""

    @classmethod
    def of(cls, ledger: Ledger) -> LedgerBrief:
        led = ledger.to_dict()
        return cls(
            generated_tokens=led["generated_tokens"],
            prompt_tokens=led["prompt_tokens"],
            cached_tokens=led["cached_tokens"],
            rollouts=led["rollouts"],
            engine_calls=led["engine_calls"],
            eflops=led["eflops"],
            seconds=round(led["wall_seconds"], 3),
            stopped_by=led["stopped_by"],
        )

    @classmethod
    def total(cls, briefs: list[LedgerBrief], seconds: float) -> LedgerBrief:
        """Sums over a batch; ``seconds`` is the batch's wall time (its items overlap)."""
        return cls(
            generated_tokens=sum(b.generated_tokens for b in briefs),
            prompt_tokens=sum(b.prompt_tokens for b in briefs),
            cached_tokens=sum(b.cached_tokens for b in briefs),
            rollouts=sum(b.rollouts for b in briefs),
            engine_calls=sum(b.engine_calls for b in briefs),
            eflops=sum(b.eflops for b in briefs),
            seconds=round(seconds, 3),
            stopped_by=None,
        )

    def line(self) -> str:
        stop = f"; stopped by {self.stopped_by}" if self.stopped_by else ""
        return (
            f"{self.generated_tokens} generated tokens ({self.prompt_tokens} prompt, "
            f"{self.cached_tokens} cached), {self.rollouts} rollouts, {self.engine_calls} engine "
            f"calls, {self.eflops:.3g} eFLOPs, {self.seconds:.2f} s{stop}"
        )


class SolveOutput(BaseModel):
    """The ``solve`` tool's result."""

    answer: str | None
    """The chosen final answer (``None`` when no sample produced one)."""
    strategy: str
    budget: str
    """The budget the search ran under, after the server's caps."""
    votes: list[Vote]
    ledger: LedgerBrief
    solution: str
    """The text of the solution that stands for the answer."""

    @classmethod
    def of(cls, result: Result, strategy: str, budget: Budget) -> SolveOutput:
        cand = representative(result)
        return cls(
            answer=result.answer,
            strategy=strategy,
            budget=str(budget),
            votes=[Vote.model_validate(jsonable(v)) for v in result.extras.get("votes", [])],
            ledger=LedgerBrief.of(result.ledger),
            solution=cand.text if cand is not None else "",
        )

    def text(self) -> str:
        """Plain text for the calling model: answer, votes and ledger first, then the solution."""
        votes = ", ".join(f"{v.answer} x{v.votes}" for v in self.votes) or "none"
        return (
            f"answer: {self.answer}\nvotes: {votes}\nledger: {self.ledger.line()}\n"
            f"strategy: {self.strategy} under budget {self.budget}\n\n"
            f"solution:\n{self.solution}"
        )


class BatchItem(SolveOutput):
    """One question of a ``solve_batch`` call."""

    question: str
    allocation: dict[str, Any] = Field(default_factory=dict)
    """What the shared-budget allocator gave this question (probe, level, strategy)."""


class BatchOutput(BaseModel):
    """The ``solve_batch`` tool's result: one item per question, in order."""

    budget: str
    """The shared budget of the whole batch, after the server's caps."""
    results: list[BatchItem]
    total: LedgerBrief
    """Spent by the whole batch (within the shared budget)."""

    @classmethod
    def of(
        cls, questions: list[str], results: list[Result], budget: Budget, seconds: float
    ) -> BatchOutput:
        items = [
            BatchItem(
                question=q,
                allocation=jsonable(r.extras.get("allocation", {})),
                **SolveOutput.of(r, r.strategy, budget).model_dump(),
            )
            for q, r in zip(questions, results, strict=True)
        ]
        return cls(
            budget=str(budget),
            results=items,
            total=LedgerBrief.total([i.ledger for i in items], seconds),
        )

    def text(self) -> str:
        lines = [f"{len(self.results)} questions under one budget {self.budget}"]
        lines += [
            f"{i + 1}. {item.question!r} -> {item.answer} ({item.strategy}, "
            f"{item.ledger.rollouts} rollouts, {item.ledger.generated_tokens} tokens)"
            for i, item in enumerate(self.results)
        ]
        lines.append(f"total: {self.total.line()}")
        return "\n".join(lines)


class StrategyOption(BaseModel):
    name: str
    type: str
    default: Any = None


class StrategyInfo(BaseModel):
    name: str
    description: str
    options: list[StrategyOption]


class StrategiesOutput(BaseModel):
    """The ``strategies`` tool's result, with the server's defaults and caps."""

    default_strategy: str
    default_budget: str
    max_budget: str
    """Per-call caps: a call asking for more in any unit is refused."""
    strategies: list[StrategyInfo]

    def text(self) -> str:
        lines = [
            f"default strategy {self.default_strategy}, default budget {self.default_budget}, "
            f"per-call caps {self.max_budget}"
        ]
        for s in self.strategies:
            opts = ", ".join(f"{o.name}={o.default!r}" for o in s.options)
            lines.append(f"- {s.name}: {s.description} Options: {opts or 'none'}")
        return "\n".join(lines)


def strategy_catalog() -> list[StrategyInfo]:
    """Every registered strategy, its one-line description and its options with defaults."""
    infos = []
    for name, cls in STRATEGIES.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        options = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            options.append(StrategyOption(name=f.name, type=type_name, default=jsonable(default)))
        infos.append(StrategyInfo(name=name, description=doc[0] if doc else "", options=options))
    return infos
