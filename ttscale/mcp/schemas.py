"""What the MCP tools return: pydantic models (published as each tool's output schema and
sent as ``structuredContent``) and their plain-text rendering (the ``content`` an agent's
model reads).

A ``solve`` result is the answer, the vote table, a short ledger and the chosen solution
text; for code (``tests``/``entry_point`` given, strategy ``code``) also the chosen
program, its result on each public test and the behaviour clusters. ``solve_batch``
returns one such item per question plus the batch totals;
``strategies`` lists every registered strategy with its options and defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ttscale.budget import Budget, Ledger
from ttscale.integrations import representative
from ttscale.server.schemas import code_report, jsonable
from ttscale.strategies import STRATEGIES
from ttscale.types import Result

__all__ = [
    "BatchItem",
    "BatchOutput",
    "Cluster",
    "LedgerBrief",
    "SolveOutput",
    "StrategiesOutput",
    "StrategyInfo",
    "StrategyOption",
    "TestResult",
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


class TestResult(BaseModel):
    """One public test and what the chosen program did on it."""

    model_config = ConfigDict(extra="ignore")
    __test__ = False  # not a pytest class

    call: str
    expected: str | None
    """The expected value as Python source (``None`` when an exception is expected)."""
    raises: str | None = None
    passed: bool
    actual: str | None = None
    """repr of what the call returned (``!Name`` for an exception); ``None`` if it never
    finished."""
    error: str | None = None
    """Why it failed without a value (exception, time limit, the program did not load)."""

    def line(self) -> str:
        want = f"== {self.expected}" if self.raises is None else f"raises {self.raises}"
        if self.passed:
            return f"- {self.call} {want}: passed"
        got = f"got {self.actual}" if self.actual is not None else "no value"
        why = f" ({self.error})" if self.error else ""
        return f"- {self.call} {want}: FAILED, {got}{why}"


class Cluster(BaseModel):
    """Candidate programs that behaved alike on the clustering inputs."""

    model_config = ConfigDict(extra="ignore")

    size: int
    passed_public: int
    """Public tests the cluster's programs pass."""
    signature_hash: str


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
    """The text of the solution that stands for the answer (the model's whole reply)."""
    program: str | None = None
    """Code: the chosen program (full source, defines the entry point); also ``answer``."""
    entry_point: str | None = None
    """Code: the function the program defines and the tests call."""
    tests: list[TestResult] = Field(default_factory=list)
    """Code: the chosen program's result on each public test."""
    passed_public: int | None = None
    """Code: public tests the chosen program passes (of ``len(tests)``)."""
    clusters: list[Cluster] = Field(default_factory=list)
    """Code: the candidates grouped by behaviour, largest first."""
    selection: dict[str, Any] | None = None
    """Code: how the program was chosen (``select``, the ``rule`` applied, the cluster and
    candidate picked)."""

    @classmethod
    def of(cls, result: Result, strategy: str, budget: Budget) -> SolveOutput:
        cand = representative(result)
        code = code_report(result) or {}
        return cls(
            answer=result.answer,
            strategy=strategy,
            budget=str(budget),
            votes=[Vote.model_validate(jsonable(v)) for v in result.extras.get("votes", [])],
            ledger=LedgerBrief.of(result.ledger),
            solution=cand.text if cand is not None else "",
            program=code.get("program"),
            entry_point=code.get("entry_point"),
            tests=[TestResult.model_validate(t) for t in code.get("tests") or []],
            passed_public=code.get("passed_public"),
            clusters=[Cluster.model_validate(c) for c in code.get("clusters") or []],
            selection=code.get("selection"),
        )

    def text(self) -> str:
        """Plain text for the calling model: answer, votes and ledger first, then the
        solution; for code the program and its test results instead."""
        head = f"ledger: {self.ledger.line()}\nstrategy: {self.strategy} under budget {self.budget}"
        if self.strategy == "code":
            return f"{self._code_text()}\n\n{head}"
        votes = ", ".join(f"{v.answer} x{v.votes}" for v in self.votes) or "none"
        return f"answer: {self.answer}\nvotes: {votes}\n{head}\n\nsolution:\n{self.solution}"

    def _code_text(self) -> str:
        if self.program is None:
            return (
                f"no program: no candidate wrote a ```python block defining "
                f"{self.entry_point or 'the function'}\n\nlast reply:\n{self.solution}"
            )
        passed = sum(t.passed for t in self.tests)
        program = self.program.strip("\n")
        lines = [
            f"program ({self.entry_point}; passes {passed}/{len(self.tests)} public tests):",
            f"```python\n{program}\n```",
        ]
        if self.tests:
            lines += ["tests:", *(t.line() for t in self.tests)]
        if self.clusters:
            sizes = ", ".join(f"{c.size} ({c.passed_public} passed)" for c in self.clusters)
            rule = (self.selection or {}).get("rule", "")
            lines.append(f"behaviour clusters (size, public tests passed): {sizes}; chosen: {rule}")
        return "\n".join(lines)


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
