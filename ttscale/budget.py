"""Compute budgets and the ledger that enforces them.

A ``Budget`` caps spending in any subset of four units:

- ``tokens``: generated (decoded) tokens, summed over every sample and every engine call;
- ``rollouts``: sampled sequences (one per completion returned by the engine);
- ``flops``: estimated eFLOPs (``ttscale.cost``), prefill + decode + KV traffic;
- ``seconds``: wall-clock time since the run started.

The ``Ledger`` counts what was actually spent. Every engine call goes through
``Ledger.generate``, which refuses a call whose *worst case* (every sample running to
``max_tokens``) could exceed a token, rollout or eFLOPs cap, so those caps are hard by
construction. Wall time cannot be reserved ahead: it is checked before each call, and the
overshoot of the last in-flight call is recorded in ``Ledger.overshoot``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttscale.cost import Hardware, default_hardware, request_eflops
from ttscale.errors import BudgetError, ConfigError, describe

if TYPE_CHECKING:
    from ttscale.protocols import Generator
    from ttscale.types import GenerationOutput, GenerationRequest

__all__ = ["UNITS", "Budget", "Ledger"]

UNITS = ("tokens", "rollouts", "flops", "seconds")
_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}


class Budget(BaseModel):
    """Caps on what one ``solve`` may spend; any subset of the units, ``None`` = no cap.

    Examples:
        >>> Budget.parse("tokens=20000,seconds=60")
        Budget(tokens=20000, rollouts=None, flops=None, seconds=60.0)
        >>> Budget.parse(4000).tokens
        4000
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: int | None = Field(default=None, gt=0)
    """Generated tokens, all samples and calls together."""
    rollouts: int | None = Field(default=None, gt=0)
    """Sampled sequences."""
    flops: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Estimated eFLOPs (see ``ttscale.cost``)."""
    seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Wall-clock seconds."""

    @classmethod
    def parse(cls, spec: Budget | str | int | Mapping[str, Any] | None) -> Budget:
        """Build a budget from a string, an int (= tokens), a dict, or a ``Budget``.

        Strings look like ``"tokens=20000,seconds=60"``; numbers accept ``k/M/G/T/P``
        suffixes (``tokens=20k``, ``flops=3P``).

        Raises:
            ConfigError: Naming the bad field and value, and the accepted form.
        """
        if isinstance(spec, Budget):
            return spec
        if spec is None:
            return cls()
        if isinstance(spec, bool):
            raise ConfigError(f"budget must be a string, int or dict, got {spec!r}")
        if isinstance(spec, int):
            fields: dict[str, Any] = {"tokens": spec}
        elif isinstance(spec, str):
            fields = _parse_string(spec)
        elif isinstance(spec, Mapping):
            fields = dict(spec)
        else:
            raise ConfigError(
                f"budget must be a string like 'tokens=20000,seconds=60', an int (tokens) "
                f"or a dict; got {type(spec).__name__} {describe(spec)}"
            )
        unknown = sorted(set(fields) - set(UNITS))
        if unknown:
            raise ConfigError(
                f"unknown budget field {unknown[0]!r}; use any of {', '.join(UNITS)} "
                f"(e.g. 'tokens=20000,seconds=60')"
            )
        try:
            return cls(**fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = err["loc"][0] if err["loc"] else "budget"
            raise ConfigError(
                f"budget field {name}={describe(err.get('input'))} is invalid: {err['msg']}; "
                f"caps must be positive numbers"
            ) from None

    def __str__(self) -> str:
        # repr, not :g, so str() round-trips through parse() exactly.
        parts = [f"{u}={getattr(self, u)!r}" for u in UNITS if getattr(self, u) is not None]
        return ",".join(parts) or "unlimited"

    @property
    def is_unlimited(self) -> bool:
        return all(getattr(self, u) is None for u in UNITS)


def _parse_string(spec: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    text = spec.strip()
    if not text:
        raise ConfigError("budget string is empty; use e.g. 'tokens=20000' or 'seconds=60'")
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if not sep or not key or not raw:
            raise ConfigError(
                f"budget part {part.strip()!r} is not 'unit=value'; "
                f"use e.g. 'tokens=20000,seconds=60' (units: {', '.join(UNITS)})"
            )
        if key in fields:
            raise ConfigError(f"budget field {key!r} given twice in {spec!r}")
        m = re.fullmatch(r"([-+]?[0-9]*\.?[0-9]+(?:e[-+]?\d+)?)([kmgtp]?)", raw.lower())
        if not m:
            raise ConfigError(
                f"budget field {key}={raw!r} is not a number; use e.g. {key}=20000 or {key}=20k"
            )
        value = float(m.group(1)) * _SUFFIX.get(m.group(2), 1.0)
        if key in ("tokens", "rollouts"):
            if value != int(value):
                raise ConfigError(f"budget field {key}={raw!r} must be a whole number")
            value = int(value)
        fields[key] = value
    return fields


@dataclass(slots=True)
class Ledger:
    """What a run actually spent, checked against its ``Budget``.

    Strategies read ``remaining()`` to size the next step and send every engine call through
    ``generate`` so the accounting cannot be skipped. One ledger per run; not thread-safe.
    """

    budget: Budget = field(default_factory=Budget)
    hardware: Hardware = field(default_factory=lambda: default_hardware())
    """Prices memory traffic in eFLOPs (see ``ttscale.cost``); by default this host's preset
    (``ttscale.cost.default_hardware``: measured by ``ttscale calibrate --hardware``, else
    chosen by the CPU's ISA)."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens the engine served from its prefix cache."""
    generated_tokens: int = 0
    rollouts: int = 0
    engine_calls: int = 0
    verifier_calls: int = 0
    verifier_tokens: int = 0
    """Tokens a verifier prefilled on its own model (a probe, a judge outside the engine)."""
    eflops: float = 0.0
    programs: int = 0
    """Model-written programs run in the sandbox (program-aided strategies)."""
    sandbox_seconds: float = 0.0
    """Wall time those programs ran (they run concurrently, so this can exceed wall time)."""
    engine_seconds: float = 0.0
    """Time spent inside engine calls; wall - engine = orchestration overhead."""
    wall_seconds: float = 0.0
    stopped_by: str | None = None
    """The cap that ended the run early, if one did."""
    overshoot: dict[str, float] = field(default_factory=dict)
    """Amount by which a cap was exceeded (only ``seconds`` can be: calls can't be cut)."""
    engine: dict[str, Any] = field(default_factory=dict)
    """Engine profile (backend, model, dtype, seeding) for reproducibility."""
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    """Results a component may reuse later in this run (the LLM judge's score of a prompt it
    has already judged). Scoped to the ledger, so no run is charged less for another run's
    work; not serialised."""
    _start: float = field(default_factory=time.perf_counter, repr=False)

    # -- reading -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def spent(self, unit: str) -> float:
        """Amount spent in ``unit`` (one of ``UNITS``)."""
        return {
            "tokens": self.generated_tokens,
            "rollouts": self.rollouts,
            "flops": self.eflops,
            "seconds": self.elapsed(),
        }[unit]

    def remaining(self, unit: str) -> float:
        """Budget left in ``unit``; ``math.inf`` when uncapped."""
        cap = getattr(self.budget, unit)
        return math.inf if cap is None else max(cap - self.spent(unit), 0)

    def unused(self) -> dict[str, float]:
        """Budget left per capped unit (``seconds`` from the frozen wall time once finished):
        what an early stop saved."""
        out: dict[str, float] = {}
        for unit in UNITS:
            cap = getattr(self.budget, unit)
            if cap is None:
                continue
            used = self.wall_seconds if unit == "seconds" and self.wall_seconds else None
            out[unit] = max(cap - used, 0.0) if used is not None else self.remaining(unit)
        return out

    def exhausted(self) -> str | None:
        """The first cap already used up, or ``None``."""
        for unit in UNITS:
            if self.remaining(unit) <= 0:
                return unit
        return None

    def affords(self, requests: Sequence[GenerationRequest], generator: Generator) -> bool:
        """True if the worst case of ``requests`` fits every reservable cap and time is left."""
        return self._shortfall(requests, generator) is None

    def worst_case_eflops(
        self, requests: Sequence[GenerationRequest], generator: Generator
    ) -> float:
        """eFLOPs if every sample ran to ``max_tokens`` with no prefix-cache hits."""
        spec = generator.model_spec
        if spec is None:
            return 0.0
        return sum(
            request_eflops(
                spec,
                self.hardware,
                prompt_tokens=len(r.prompt_token_ids),
                cached_tokens=0,
                generated=[r.max_tokens] * r.n,
            )
            for r in requests
        )

    def _shortfall(self, requests: Sequence[GenerationRequest], generator: Generator) -> str | None:
        if self.remaining("seconds") <= 0:
            return "seconds"
        if sum(r.n * r.max_tokens for r in requests) > self.remaining("tokens"):
            return "tokens"
        if sum(r.n for r in requests) > self.remaining("rollouts"):
            return "rollouts"
        if self.budget.flops is not None:
            if self.worst_case_eflops(requests, generator) > self.remaining("flops"):
                return "flops"
        return None

    # -- spending ------------------------------------------------------------------------
    async def generate(
        self, generator: Generator, requests: Sequence[GenerationRequest]
    ) -> list[GenerationOutput]:
        """Run one batched engine call and record it.

        Raises:
            BudgetError: If the call's worst case could exceed a hard cap, or time is up.
                Strategies size calls with ``remaining()`` first, so this is a safety net.
        """
        unit = self._shortfall(requests, generator)
        if unit is not None:
            raise BudgetError(
                f"engine call refused: its worst case would exceed the {unit} cap "
                f"({self.budget}); spent {self.spent(unit):g} {unit}"
            )
        t0 = time.perf_counter()
        outputs = await generator.generate(list(requests))
        self.engine_seconds += time.perf_counter() - t0
        self.engine_calls += 1
        spec = generator.model_spec
        for out in outputs:
            gen = [c.num_tokens for c in out.completions]
            self.prompt_tokens += out.prompt_tokens
            self.cached_tokens += out.cached_tokens
            self.generated_tokens += sum(gen)
            self.rollouts += len(gen)
            if spec is not None:
                self.eflops += request_eflops(
                    spec,
                    self.hardware,
                    prompt_tokens=out.prompt_tokens,
                    cached_tokens=out.cached_tokens,
                    generated=gen,
                )
        return outputs

    def record_programs(self, seconds: Sequence[float]) -> None:
        """Record programs run in the sandbox, one wall time each (replayed runs charge
        the times stored in the pool)."""
        self.programs += len(seconds)
        self.sandbox_seconds += float(sum(seconds))

    def record_verifier(self, calls: int = 1) -> None:
        self.verifier_calls += calls

    def charge_verifier(self, eflops: float, tokens: int) -> None:
        """Charge work a verifier did outside ``generate`` (its own prefill). Recorded after
        the fact, like wall time: an eFLOPs cap can be overshot by one verifier call, and
        ``finish`` reports it in ``overshoot``."""
        self.eflops += float(eflops)
        self.verifier_tokens += int(tokens)

    def finish(self, stopped_by: str | None = None) -> Ledger:
        """Freeze wall time and compute overshoot; call once when the run ends."""
        self.wall_seconds = self.elapsed()
        if stopped_by is not None:
            self.stopped_by = stopped_by
        for unit in UNITS:
            cap = getattr(self.budget, unit)
            over = (self.wall_seconds if unit == "seconds" else self.spent(unit)) - (cap or 0)
            if cap is not None and over > 0:
                self.overshoot[unit] = round(over, 6)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget.model_dump(exclude_none=True),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "generated_tokens": self.generated_tokens,
            "rollouts": self.rollouts,
            "engine_calls": self.engine_calls,
            "verifier_calls": self.verifier_calls,
            "verifier_tokens": self.verifier_tokens,
            "eflops": self.eflops,
            "programs": self.programs,
            "sandbox_seconds": round(self.sandbox_seconds, 6),
            "hardware": self.hardware.name,
            "engine_seconds": round(self.engine_seconds, 6),
            "wall_seconds": round(self.wall_seconds, 6),
            "stopped_by": self.stopped_by,
            "overshoot": dict(self.overshoot),
            "unused": self.unused(),
            "engine": dict(self.engine),
        }

    def brief(self) -> str:
        return (
            f"gen={self.generated_tokens} rollouts={self.rollouts} calls={self.engine_calls} "
            f"eflops={self.eflops:.3g} wall={self.elapsed():.2f}s"
        )
