"""Compute-optimal policy: difficulty bin x budget level -> strategy + hyper-parameters.

Snell et al. 2024 ("Scaling LLM Test-Time Compute Optimally...") pick, per question, the
strategy that maximises accuracy at the given budget *within the question's difficulty bin*;
this module holds that table as versioned JSON (validated with pydantic at load time), fits
it from measured strategy runs (``fit_policy``; ``ttscale calibrate --dataset ...``), and
answers lookups (``Policy.choose``).

Each cell keeps a ranked list of choices, best first, so a lookup can skip choices that need
a verifier when none is given. Cells carry ``expected_accuracy`` and ``mean_tokens`` (what
the choice achieved and spent on the calibration problems of that bin), which the batch
allocator turns into a marginal gain per eFLOP (``ttscale.strategies.allocation.allocator``).

A default policy for the embedded model ships as package data (``ttscale/data``). Its
``provenance.fitted`` says whether it came from measured runs; an unfitted table is a prior
and says so.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ttscale.errors import ConfigError, VerifierRequired, describe
from ttscale.strategies.catalog import BASE_STRATEGIES, build_strategy

__all__ = [
    "POLICY_VERSION",
    "VERIFIER_STRATEGIES",
    "BudgetLevel",
    "Cell",
    "Choice",
    "DifficultyBins",
    "Policy",
    "Provenance",
    "default_policy_path",
    "fit_policy",
    "load_policy",
    "normalise_row",
]

POLICY_VERSION = 1

VERIFIER_STRATEGIES = frozenset({"beam_search", "dvts", "particle_filter", "ets"})
"""Strategies that rank steps with a verifier and refuse to run without one."""

ROW_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    # Row names written by benchmarks/strategies.py -> registry name + the options it used.
    "greedy": ("best_of_n", {"n": 1, "round_size": 1, "temperature": 0.0, "adaptive": False}),
    "best_of_n_majority": ("best_of_n", {"select": "majority"}),
    "best_of_n_weighted": ("best_of_n", {"select": "weighted"}),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Choice(_Model):
    """One strategy configuration and what it achieved on the calibration problems."""

    strategy: str
    params: dict[str, Any] = Field(default_factory=dict)
    expected_accuracy: float | None = Field(default=None, ge=0, le=1)
    mean_tokens: float | None = Field(default=None, ge=0)
    """Generated tokens per problem (all samples, judge tokens included) when measured."""
    mean_eflops: float | None = Field(default=None, ge=0)
    n_rows: int = Field(default=0, ge=0)
    """Measured runs behind the figures (0 for a prior)."""

    @property
    def needs_verifier(self) -> bool:
        if self.strategy in VERIFIER_STRATEGIES:
            return True
        return self.params.get("select") in ("weighted", "best")

    @model_validator(mode="after")
    def _known_strategy(self) -> Choice:
        if self.strategy not in BASE_STRATEGIES:
            raise ValueError(
                f"strategy {self.strategy!r} is not a registered strategy; use one of "
                f"{', '.join(BASE_STRATEGIES)}"
            )
        self.build()  # ConfigError names the bad option
        return self

    def build(self) -> Any:
        """Instantiate the strategy (JSON lists become tuples, e.g. PDR ``drafts``)."""
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in self.params.items()}
        return build_strategy(self.strategy, params, BASE_STRATEGIES)


class Cell(_Model):
    bin: int = Field(ge=1, le=5)
    level: str
    choices: list[Choice] = Field(min_length=1)
    source: Literal["fitted", "prior", "filled"] = "prior"
    """``fitted``: ranked from rows of this bin and level; ``filled``: no rows, copied from
    the nearest fitted cell; ``prior``: hand-set, not measured."""


class BudgetLevel(_Model):
    name: str
    tokens: int = Field(gt=0)
    """Generated-token budget this level stands for (flops/rollouts budgets are converted)."""


class DifficultyBins(_Model):
    """How a probe maps to a bin: ``k`` short samples, score = leader share (averaged with the
    leader's mean verifier score when a verifier is given); bin 1 = easiest."""

    probe_k: int = Field(default=4, ge=1, le=64)
    probe_tokens: int = Field(default=512, ge=16)
    thresholds: list[float] = Field(default_factory=lambda: [0.99, 0.74, 0.49, 0.24])
    """Four descending cut points: score >= thresholds[0] -> bin 1, ... , below all -> bin 5."""
    saturation: float = Field(default=0.95, gt=0.5, le=1.0)
    """Stop once P(leader > runner-up) under the Beta rule reaches this."""

    @model_validator(mode="after")
    def _descending(self) -> DifficultyBins:
        t = self.thresholds
        if (
            len(t) != 4
            or any(not 0 <= x <= 1 for x in t)
            or any(a <= b for a, b in zip(t, t[1:], strict=False))
        ):
            raise ValueError(
                f"thresholds={t} must be 4 strictly descending numbers in [0, 1] "
                f"(e.g. [0.99, 0.74, 0.49, 0.24])"
            )
        return self

    probe_fraction: float = Field(default=0.5, gt=0, le=1)
    """At most this share of a budget (in generated tokens) goes to the probe."""

    def bin_of(self, score: float) -> int:
        for i, cut in enumerate(self.thresholds):
            if score >= cut:
                return i + 1
        return 5

    def samples_for(self, budget_tokens: float) -> int:
        """Probe samples (of ``probe_tokens`` each) a budget of ``budget_tokens`` affords:
        ``probe_fraction`` of it, at least 1, at most ``probe_k``. A small budget's probe is
        smaller and its bins noisier, so the fit bins each level's rows with the probe that
        level gets (``fit_policy``)."""
        if not math.isfinite(budget_tokens):
            return self.probe_k
        k = int(self.probe_fraction * budget_tokens // self.probe_tokens)
        return max(1, min(self.probe_k, k))


class Provenance(_Model):
    fitted: bool
    method: str
    dataset: str | None = None
    """Calibration split the rows came from (``math_train200``)."""
    problem_ids: list[str] = Field(default_factory=list)
    """Problems behind the fit; the evaluation asserts it is disjoint from these."""
    rows_file: str | None = None
    rows_sha256: str | None = None
    n_rows: int = 0
    bin_source: str | None = None
    """Where each problem's bin came from: ``difficulty_bin``, ``probe`` or ``level``."""
    model: str | None = None
    hardware: str | None = None
    isa: str | None = None
    created: str | None = None
    notes: str = ""


class Policy(_Model):
    version: int
    model: str
    """Model the table was fitted for (the policy's behaviour is model-specific)."""
    bins: DifficultyBins = Field(default_factory=DifficultyBins)
    levels: list[BudgetLevel] = Field(min_length=1)
    cells: list[Cell]
    provenance: Provenance

    @property
    def fitted(self) -> bool:
        return self.provenance.fitted

    @model_validator(mode="after")
    def _complete(self) -> Policy:
        if self.version != POLICY_VERSION:
            raise ValueError(
                f"version {self.version} is not supported (this ttscale reads version "
                f"{POLICY_VERSION}); refit with `ttscale calibrate`"
            )
        toks = [lv.tokens for lv in self.levels]
        names = [lv.name for lv in self.levels]
        if toks != sorted(set(toks)) or len(set(names)) != len(names):
            raise ValueError("levels must have unique names and strictly increasing tokens")
        seen = {(c.bin, c.level) for c in self.cells}
        want = {(b, n) for b in range(1, 6) for n in names}
        if len(seen) != len(self.cells):
            raise ValueError("cells: a (bin, level) pair appears twice")
        if seen != want:
            missing = sorted(want - seen)
            extra = sorted(seen - want)
            raise ValueError(
                f"cells must cover every bin 1-5 x level exactly once; missing {missing[:4]}, "
                f"unknown {extra[:4]}"
            )
        return self

    def cell(self, bin: int, level: str) -> Cell:
        for c in self.cells:
            if c.bin == bin and c.level == level:
                return c
        raise ConfigError(f"policy has no cell bin={bin} level={level!r}")

    def level_for(self, tokens: float) -> BudgetLevel:
        """Largest level whose token budget fits ``tokens`` (the smallest if none does)."""
        fitting = [lv for lv in self.levels if lv.tokens <= tokens]
        return fitting[-1] if fitting else self.levels[0]

    def choose(self, bin: int, level: str, *, has_verifier: bool) -> Choice:
        """Best choice of the cell that can run with (or without) a verifier."""
        cell = self.cell(bin, level)
        for choice in cell.choices:
            if has_verifier or not choice.needs_verifier:
                return choice
        raise VerifierRequired(
            f"policy cell bin={bin} level={level!r} has only verifier strategies "
            f"({', '.join(c.strategy for c in cell.choices)})",
            python_fix="refit the policy",
            cli_fix="refit it with `ttscale calibrate`",
        )

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n")
        return path


def default_policy_path() -> Path:
    """The policy for the embedded model that ships with the package."""
    return Path(str(resources.files("ttscale") / "data" / "policy_default.json"))


def load_policy(source: Policy | str | Path | Mapping[str, Any] | None = None) -> Policy:
    """Load and validate a policy (a path, a dict, a ``Policy``; ``None`` = the default).

    Raises:
        ConfigError: Missing file, invalid JSON (line and column), or a schema error naming
            the field and the fix.
    """
    if isinstance(source, Policy):
        return source
    if source is None:
        return _default_policy()
    return _load(source)


@functools.cache
def _default_policy() -> Policy:
    """The packaged policy, parsed once per process (callers never mutate it)."""
    return _load(default_policy_path())


def _load(source: str | Path | Mapping[str, Any]) -> Policy:
    where = "policy dict"
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        where = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"policy file {path} cannot be read ({exc.strerror}); pass a file written by "
                f"`ttscale calibrate --dataset math_train200 ...`, or omit policy= for the default"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"policy file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}); fix the syntax or regenerate it with `ttscale calibrate`"
            ) from None
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        raise ConfigError(f"policy must be a path, dict or Policy, got {describe(source)}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"{where}: field {loc}: {msg}; fix that field or regenerate the policy with "
            f"`ttscale calibrate --dataset math_train200 ...`"
        ) from None
    except ConfigError as exc:  # a choice's options rejected by make_strategy
        raise ConfigError(f"{where}: {exc}; fix the cell's params or refit") from None


# -- fitting ------------------------------------------------------------------------------


def normalise_row(row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(registry name, params) of a measured row; benchmark aliases resolved."""
    name = str(row["strategy"])
    params = dict(row.get("params") or {})
    if name in ROW_ALIASES:
        base, extra = ROW_ALIASES[name]
        return base, {**extra, **params}
    return name, params


def _bin_of(rows: Sequence[Mapping[str, Any]], bins: DifficultyBins) -> tuple[int, str]:
    for key in ("difficulty_bin", "probe_score"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            v = vals[0]
            return (int(v), key) if key == "difficulty_bin" else (bins.bin_of(float(v)), "probe")
    levels = [r["level"] for r in rows if r.get("level") is not None]
    if levels:
        return min(max(int(levels[0]), 1), 5), "level"
    raise ConfigError(
        f"row for problem {rows[0].get('problem_id')!r} has no difficulty_bin, probe_score or "
        f"level; add one (`ttscale calibrate --run` records the probe's bin)"
    )


def fit_policy(
    rows: Iterable[Mapping[str, Any]],
    *,
    calibration_ids: Iterable[str],
    dataset: str,
    model: str,
    levels: Sequence[BudgetLevel] | None = None,
    bins: DifficultyBins | None = None,
    prior: Policy | None = None,
    rows_file: str | None = None,
    hardware: str | None = None,
    isa: str | None = None,
) -> Policy:
    """Fit the table from measured runs of the calibration split.

    A row is one (problem, strategy config, budget) run: ``problem_id``, ``strategy``
    (+ ``params``), ``budget_tokens``, ``correct``, ``generated_tokens`` (``eflops``
    optional) and the problem's difficulty: ``probe_bins`` ({probe samples k: bin}, as
    ``ttscale calibrate --run`` records), else ``difficulty_bin``, ``probe_score`` or, as a
    proxy, MATH ``level``. For a cell (bin b, level L) the candidates are the configs run at
    a budget <= L's tokens on problems in bin b *as L's probe sees them* (the bin from
    ``bins.samples_for(L)`` samples: a 1-sample probe bins differently from a 4-sample one);
    they are ranked by smoothed accuracy
    ((correct + 1) / (runs + 2)), then by fewer tokens. Cells without rows copy the nearest
    fitted cell of the same bin (``source="filled"``), else take the prior's cell.

    Raises:
        ConfigError: A row's problem is not in the calibration split (the fit must never
            see evaluation problems), or no usable rows.
    """
    bins = bins or (prior.bins if prior else DifficultyBins())
    levels = list(levels or (prior.levels if prior else []))
    if not levels:
        raise ConfigError("fit_policy needs budget levels (or a prior policy to take them from)")
    allowed = set(calibration_ids)
    rows = [dict(r) for r in rows]
    if not rows:
        raise ConfigError("no rows to fit; pass a JSONL file of strategy runs or use --run")
    outside = sorted({str(r.get("problem_id")) for r in rows} - allowed)
    if outside:
        raise ConfigError(
            f"{len(outside)} row(s) are for problems outside the calibration split {dataset!r} "
            f"(e.g. {outside[0]!r}); the policy may only be fitted on calibration problems, "
            f"drop those rows"
        )
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[str(r["problem_id"])].append(r)
    bin_of: dict[str, int] = {}
    sources = set()
    for pid, prs in by_problem.items():
        bin_of[pid], src = _bin_of(prs, bins)
        sources.add(src)
    # (level, bin, config key, budget) -> [correct, tokens, eflops, count]. A row counts in
    # every level whose budget covers it, binned by the probe that level gets at run time
    # (``probe_bins[k]`` for k = bins.samples_for(level)) when the row has it.
    stats: dict[tuple[str, int, str, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    configs: dict[str, tuple[str, dict[str, Any]]] = {}
    for r in rows:
        name, params = normalise_row(r)
        key = json.dumps([name, params], sort_keys=True)
        configs[key] = (name, params)
        budget = int(r["budget_tokens"])
        for lv in levels:
            if budget > lv.tokens:
                continue
            probe_bins = r.get("probe_bins") or {}
            k = str(bins.samples_for(lv.tokens))
            if k in probe_bins:
                b = int(probe_bins[k])
                sources.add("probe_bins")
            else:
                b = bin_of[str(r["problem_id"])]
            s = stats[(lv.name, b, key, budget)]
            s[0] += bool(r["correct"])
            s[1] += float(r.get("generated_tokens") or 0)
            s[2] += float(r.get("eflops") or 0)
            s[3] += 1
    cells: list[Cell] = []
    for b in range(1, 6):
        fitted: dict[str, list[Choice]] = {}
        for lv in levels:
            cands = []
            for (sl, sb, key, _budget), (ok, tok, fl, n) in stats.items():
                if sl != lv.name or sb != b:
                    continue
                name, params = configs[key]
                cands.append(
                    (
                        -(ok + 1) / (n + 2),
                        tok / n,
                        Choice(
                            strategy=name,
                            params=params,
                            expected_accuracy=round(ok / n, 4),
                            mean_tokens=round(tok / n, 1),
                            mean_eflops=fl / n if fl else None,
                            n_rows=int(n),
                        ),
                    )
                )
            cands.sort(key=lambda t: (t[0], t[1]))
            if cands:
                fitted[lv.name] = _dedup([c for _, _, c in cands])
        for i, lv in enumerate(levels):
            if lv.name in fitted:
                cells.append(Cell(bin=b, level=lv.name, choices=fitted[lv.name], source="fitted"))
                continue
            near = [levels[j].name for j in sorted(range(len(levels)), key=lambda j: abs(j - i))]
            donor = next((n for n in near if n in fitted), None)
            if donor is not None:
                cells.append(Cell(bin=b, level=lv.name, choices=fitted[donor], source="filled"))
            elif prior is not None:
                pc = prior.cell(b, lv.name) if lv.name in {x.name for x in prior.levels} else None
                choices = pc.choices if pc else prior.cells[0].choices
                cells.append(Cell(bin=b, level=lv.name, choices=choices, source="prior"))
            else:
                raise ConfigError(f"no rows for difficulty bin {b} and no prior policy to fill it")
    digest = None
    if rows_file and Path(rows_file).is_file():
        digest = hashlib.sha256(Path(rows_file).read_bytes()).hexdigest()
    n_fitted = sum(c.source == "fitted" for c in cells)
    return Policy(
        version=POLICY_VERSION,
        model=model,
        bins=bins,
        levels=list(levels),
        cells=cells,
        provenance=Provenance(
            fitted=True,
            method="fit_policy: per (bin, level) rank measured configs by smoothed accuracy",
            dataset=dataset,
            problem_ids=sorted(by_problem),
            rows_file=rows_file,
            rows_sha256=digest,
            n_rows=len(rows),
            bin_source="+".join(sorted(sources)),
            model=model,
            hardware=hardware,
            isa=isa,
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            notes=(
                f"{len(by_problem)} problems, {len(rows)} rows; {n_fitted}/{len(cells)} cells "
                f"fitted from rows, the rest filled from neighbours or the prior"
            ),
        ),
    )


def _dedup(choices: list[Choice]) -> list[Choice]:
    """Keep the best-ranked entry of each (strategy, params)."""
    seen: set[str] = set()
    out = []
    for c in choices:
        key = json.dumps([c.strategy, c.params], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def expected_gain(choice: Choice, fallback: float = 0.0) -> float:
    """Expected accuracy of a choice, ``fallback`` when unknown; never NaN."""
    acc = choice.expected_accuracy
    return fallback if acc is None or math.isnan(acc) else acc


# -- the hand-set prior (what ships until a fit from real runs replaces it) -----------------

DEFAULT_LEVELS = (
    BudgetLevel(name="t1k", tokens=1000),
    BudgetLevel(name="t3k", tokens=3000),
    BudgetLevel(name="t8k", tokens=8000),
    BudgetLevel(name="t24k", tokens=24000),
)

# Guessed accuracy per bin (rows) and level (columns), shaped like Snell et al.'s per-bin
# curves (flat for easy and hopeless bins, rising in the middle) and anchored on DESIGN.md's
# measured 0.5B figures (MATH-500 sample: greedy 15%, majority@8 25%, pass@8 47%).
# NOT measured per bin; `ttscale calibrate` replaces them.
_PRIOR_ACC = {
    1: (0.85, 0.88, 0.90, 0.90),
    2: (0.55, 0.62, 0.66, 0.68),
    3: (0.28, 0.36, 0.42, 0.45),
    4: (0.10, 0.16, 0.21, 0.24),
    5: (0.02, 0.04, 0.05, 0.06),
}
_BON_N = (4, 8, 16, 32)
_STEP = {"step_tokens": 192, "max_tokens": 1024, "min_step_tokens": 32}


def _prior_choices(b: int, j: int) -> list[dict[str, Any]]:
    n = _BON_N[j]
    bon_w = {"strategy": "best_of_n", "params": {"n": n, "select": "weighted"}}
    bon_m = {"strategy": "best_of_n", "params": {"n": n, "select": "majority"}}
    if b <= 2 or b == 5 or j == 0:
        # Easy: the vote settles quickly; hopeless: nothing pays, keep it cheap (Snell et al.:
        # best-of-N/revisions win on easy questions and at low budgets).
        return [bon_w, bon_m] if b <= 2 or j == 0 else [bon_m]
    search_n = 8 if j == 1 else 16
    beam = {"strategy": "beam_search", "params": {"n": search_n, "beam_width": 2, **_STEP}}
    dvts = {"strategy": "dvts", "params": {"n": search_n, "beam_width": 2, **_STEP}}
    ets = {"strategy": "ets", "params": {"width": search_n, "step_tokens": 192}}
    pdr = {
        "strategy": "pdr",
        "params": {
            "drafts": [4, 2] if j < 3 else [8, 4, 1],
            "distill": "select",
            "keep": 2,
            "workspace_tokens": 384,
        },
    }
    if b == 3:  # medium: PRM-guided beam search helps at moderate budgets (Snell et al.)
        return [beam, bon_w, bon_m, pdr]
    # Hard: diverse search with a verifier; without one, majority voting (the only option
    # with measured evidence here: maj@8 25% vs greedy 15%), then refinement.
    return [dvts, ets, beam, bon_m, pdr]


def prior_policy(model: str = "qwen2.5-coder-0.5b-instruct-q4km") -> Policy:
    """The hand-set, unmeasured policy shipped as ``ttscale/data/policy_default.json``."""
    cells = []
    for b in range(1, 6):
        for j, lv in enumerate(DEFAULT_LEVELS):
            choices = [
                {**c, "expected_accuracy": _PRIOR_ACC[b][j], "mean_tokens": float(lv.tokens)}
                for c in _prior_choices(b, j)
            ]
            cells.append({"bin": b, "level": lv.name, "choices": choices, "source": "prior"})
    return Policy.model_validate(
        {
            "version": POLICY_VERSION,
            "model": model,
            "bins": DifficultyBins().model_dump(),
            "levels": [lv.model_dump() for lv in DEFAULT_LEVELS],
            "cells": cells,
            "provenance": {
                "fitted": False,
                "method": "hand-set prior (allocation.policy.prior_policy); no strategy runs",
                "notes": (
                    "NOT fitted from measured runs. Strategy per cell follows Snell et al. 2024 "
                    "(best-of-N for easy bins and low budgets, verifier-guided beam search for "
                    "medium, diverse search/refinement for hard, cheap sampling for hopeless); "
                    "expected accuracies are guesses anchored on DESIGN.md's 0.5B MATH-500 "
                    "figures (greedy 15%, maj@8 25%, pass@8 47%), mean_tokens = the level's "
                    "budget. Replace with `ttscale calibrate --dataset math_train200 ...`."
                ),
            },
        }
    )
