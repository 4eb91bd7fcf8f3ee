"""Difficulty estimation and compute allocation for ``strategy="auto"`` and ``solve_batch``.

Difficulty (Snell et al. 2024 bin questions by difficulty and pick the strategy per bin):
a *probe* draws ``k`` short samples in one engine call (optionally scored by the verifier).
Its score is the leader's vote share (samples without an answer count against it), averaged
with the leader's mean verifier score when a verifier is given; ``DifficultyBins`` cut it
into 5 bins, 1 = easiest. The probe's cost is charged to the run's ledger and its samples
stay candidates (they vote in the final answer).

Batch allocation (``allocate``): each unsaturated prompt can be raised through the policy's
budget levels; every step up costs eFLOPs (its token budget priced with the cost model) and
gains the expected accuracy the policy measured for that (bin, level). Steps are taken
greedily by gain per eFLOP while they fit the shared budget (the classic greedy for concave
knapsack curves), so easy prompts (saturated probe) get nothing, and prompts whose best
expected accuracy is below ``hopeless_accuracy`` are capped at the lowest level. Each
prompt's caps are its probe spend plus a share of what the probes left, with shares summing
to at most 1 in every unit, so the batch can never spend more than the shared budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ttscale.budget import UNITS, Budget, Ledger
from ttscale.cost import Hardware, ModelSpec, request_eflops
from ttscale.errors import BudgetError
from ttscale.protocols import Generator, Verifier
from ttscale.strategies.allocation.policy import DifficultyBins, Policy
from ttscale.types import Candidate, GenerationRequest, Problem
from ttscale.verifiers.answers import extract_answer
from ttscale.verifiers.base import aggregate, check_scores
from ttscale.verifiers.voting import group_answers, leader_confidence

__all__ = [
    "TYPICAL_SAMPLE_TOKENS",
    "Allocation",
    "Probe",
    "allocate",
    "difficulty_score",
    "eflops_per_token",
    "run_probe",
    "share_budget",
    "token_equivalent",
]

TYPICAL_SAMPLE_TOKENS = 512
"""Tokens of a typical full solution (the embedded model writes ~450-510 on MATH-500,
DESIGN.md); converts rollout caps into tokens."""

MIN_PROBE_TOKENS = 32


@dataclass(slots=True)
class Probe:
    """What the probe saw and concluded."""

    candidates: list[Candidate]
    score: float
    """Difficulty score in [0, 1], higher = easier."""
    bin: int
    confidence: float
    """P(leader > runner-up) under the Beta rule (as ``BestOfN`` uses to stop)."""
    leader: str | None
    trace: dict[str, Any] = field(default_factory=dict)


def difficulty_score(candidates: Sequence[Candidate]) -> tuple[float, float, str | None]:
    """(score, Beta confidence, leader) of probe candidates; see the module docstring."""
    groups = group_answers([c.answer for c in candidates])
    if not candidates or not groups:
        return 0.0, 0.0, None
    top, second = groups[0].votes, (groups[1].votes if len(groups) > 1 else 0)
    share = top / len(candidates)
    scores = [candidates[i].score for i in groups[0].members if candidates[i].score is not None]
    score = share if not scores else 0.5 * (share + sum(scores) / len(scores))
    return score, leader_confidence(top, second), groups[0].answer


def _probe_request(
    ledger: Ledger,
    gen: Generator,
    prompt: tuple[int, ...],
    k: int,
    tokens: int,
    seed: int,
    temperature: float,
) -> GenerationRequest | None:
    """Largest affordable probe: most samples (<= k), then the longest cap <= tokens."""
    if ledger.remaining("seconds") <= 0:
        return None

    def req(n: int, per: int) -> GenerationRequest:
        return GenerationRequest(prompt, n=n, max_tokens=per, temperature=temperature, seed=seed)

    for n in range(int(min(k, ledger.remaining("rollouts"))), 0, -1):
        lo = min(MIN_PROBE_TOKENS, tokens)
        hi = int(min(tokens, ledger.remaining("tokens") // n))
        if hi < lo or not ledger.affords([req(n, lo)], gen):
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if ledger.affords([req(n, mid)], gen):
                lo = mid
            else:
                hi = mid - 1
        return req(n, lo)
    return None


async def run_probe(
    problem: Problem,
    generator: Generator,
    verifier: Verifier | None,
    ledger: Ledger,
    bins: DifficultyBins,
    *,
    seed: int = 0,
    temperature: float = 0.5,
    agg: str = "last",
) -> Probe:
    """Draw the probe (one engine call, charged to ``ledger``) and bin the problem.

    Raises:
        BudgetError: The budget cannot pay for one probe sample of ``MIN_PROBE_TOKENS``.
    """
    prompt = generator.render(problem)
    req = _probe_request(
        ledger, generator, prompt, bins.probe_k, bins.probe_tokens, seed, temperature
    )
    if req is None:
        raise BudgetError(
            f"budget {ledger.budget} cannot pay for one probe sample of >= {MIN_PROBE_TOKENS} "
            f"tokens; raise the budget"
        )
    out = (await ledger.generate(generator, [req]))[0]
    cands = [
        Candidate(c.text, extract_answer(c.text), c.num_tokens, c.finish_reason)
        for c in out.completions
    ]
    if verifier is not None:
        steps = [[s for s in c.text.split(problem.step_delimiter) if s.strip()] for c in cands]
        raw = await verifier.score([problem] * len(cands), steps, ledger=ledger)
        ledger.record_verifier()
        for cand, row in zip(cands, check_scores(verifier.name, raw, steps), strict=True):
            cand.step_scores = row
            cand.score = aggregate(row, agg)
    score, conf, leader = difficulty_score(cands)
    b = bins.bin_of(score)
    trace = {
        "phase": "probe",
        "samples": req.n,
        "max_tokens": req.max_tokens,
        "seed": req.seed,
        "answers": [c.answer for c in cands],
        "score": round(score, 6),
        "bin": b,
        "confidence": round(conf, 6),
        "generated_tokens": sum(c.tokens for c in cands),
    }
    return Probe(cands, score, b, conf, leader, trace)


def eflops_per_token(
    spec: ModelSpec | None, hw: Hardware, prompt_tokens: int, sample_tokens: int = 512
) -> float:
    """eFLOPs per generated token of a typical sample (batch of 8 from one prompt)."""
    if spec is None:
        return 0.0
    batch = 8
    total = request_eflops(
        spec, hw, prompt_tokens=prompt_tokens, cached_tokens=0, generated=[sample_tokens] * batch
    )
    return total / (sample_tokens * batch)


def token_equivalent(
    budget: Budget, *, per_token_eflops: float, sample_tokens: int = TYPICAL_SAMPLE_TOKENS
) -> float:
    """Budget in generated tokens: the tightest of its token, rollout and eFLOPs caps
    (``inf`` with none of them; a seconds-only budget is enforced by the ledger instead)."""
    caps = []
    if budget.tokens is not None:
        caps.append(float(budget.tokens))
    if budget.rollouts is not None:
        caps.append(float(budget.rollouts * sample_tokens))
    if budget.flops is not None and per_token_eflops > 0:
        caps.append(budget.flops / per_token_eflops)
    return min(caps) if caps else math.inf


@dataclass(frozen=True, slots=True)
class Allocation:
    """One prompt's share of a shared budget."""

    level: str | None
    """Policy level to run at; ``None`` = stop after the probe."""
    share: float
    """Fraction of what the probes left, applied to every capped unit."""
    expected_accuracy: float
    reason: str
    """``saturated``, ``capped`` (hopeless), ``allocated`` or ``unaffordable``."""


def allocate(
    probes: Sequence[Probe],
    policy: Policy,
    *,
    per_token_eflops: Sequence[float],
    probe_tokens: Sequence[float],
    pool: float,
    has_verifier: bool,
    saturation: float,
    hopeless_accuracy: float = 0.1,
) -> list[Allocation]:
    """Split ``pool`` (what the probes left, in eFLOPs-equivalent tokens x eFLOPs/token) across
    prompts by expected marginal accuracy per eFLOP. See the module docstring.

    Args:
        probes: One per prompt.
        policy: Gives each (bin, level) its expected accuracy and token budget.
        per_token_eflops: Price of a generated token per prompt (0 prices by tokens).
        probe_tokens: Tokens each probe already spent (counted towards its level).
        pool: Budget left after probes, in the same unit as level costs (eFLOPs, or
            tokens when every ``per_token_eflops`` is 0); ``inf`` = unlimited.
        has_verifier: Whether verifier strategies may be chosen.
        saturation: Probe confidence at which a prompt is already answered.
        hopeless_accuracy: Prompts whose best expected accuracy is below this are capped at
            the lowest level.
    """
    n = len(probes)
    levels = policy.levels

    def acc(b: int, j: int) -> float:
        c = policy.choose(b, levels[j].name, has_verifier=has_verifier)
        return c.expected_accuracy if c.expected_accuracy is not None else 0.0

    def cost(i: int, j: int) -> float:
        price = per_token_eflops[i] or 1.0
        return max(levels[j].tokens - probe_tokens[i], 0.0) * price

    current: list[int | None] = [None] * n
    reason = ["allocated"] * n
    top = [len(levels) - 1] * n
    active = []
    for i, p in enumerate(probes):
        if p.confidence >= saturation:
            reason[i] = "saturated"
            continue
        if max(acc(p.bin, j) for j in range(len(levels))) < hopeless_accuracy:
            top[i], reason[i] = 0, "capped"
        active.append(i)
    spent = 0.0
    while True:
        best: tuple[float, int, int] | None = None
        for i in active:
            now = current[i]
            base_acc = acc(probes[i].bin, now) if now is not None else 0.0
            base_cost = cost(i, now) if now is not None else 0.0
            start = 0 if now is None else now + 1
            for j in range(start, top[i] + 1):
                dc = cost(i, j) - base_cost
                gain = acc(probes[i].bin, j) - base_acc
                if spent + dc > pool or (gain <= 0 and now is not None):
                    continue
                ratio = gain / dc if dc > 0 else math.inf
                if best is None or ratio > best[0]:
                    best = (ratio, i, j)
        if best is None:
            break
        _, i, j = best
        spent += cost(i, j) - (cost(i, current[i]) if current[i] is not None else 0.0)
        current[i] = j
    costs = [cost(i, current[i]) if current[i] is not None else 0.0 for i in range(n)]
    total = sum(costs)
    out = []
    for i in range(n):
        j = current[i]
        if j is None:
            r = reason[i] if reason[i] != "allocated" else "unaffordable"
            out.append(Allocation(None, 0.0, 0.0, r))
            continue
        if math.isinf(pool):
            share = 1.0
        else:
            # Spread the unallocated rest in proportion (capped prompts get only their level).
            bonus = (pool - total) * costs[i] / total if total > 0 and reason[i] != "capped" else 0
            share = (costs[i] + bonus) / pool if pool > 0 else 0.0
        out.append(Allocation(levels[j].name, share, acc(probes[i].bin, j), reason[i]))
    # Shares never sum past 1 (float rounding included).
    s = sum(a.share for a in out)
    if s > 1.0:
        out = [
            Allocation(a.level, a.share / s * (1 - 1e-12), a.expected_accuracy, a.reason)
            for a in out
        ]
    return out


def share_budget(
    shared: Budget, ledger_spent: dict[str, float], left: dict[str, float], share: float
) -> Budget | None:
    """A prompt's caps: its probe spend plus ``share`` of what the probes left, per unit.
    Token and rollout caps are floored so they sum to at most the shared caps."""
    fields: dict[str, Any] = {}
    for unit in UNITS:
        cap = getattr(shared, unit)
        if cap is None:
            continue
        if unit == "seconds":
            fields[unit] = cap  # concurrent runs share one wall-clock deadline
            continue
        extra = left[unit] * share * (1 - 1e-9)  # float rounding must not overshoot the sum
        value = ledger_spent[unit] + (math.floor(extra) if unit != "flops" else extra)
        if value <= 0:
            return None
        fields[unit] = int(value) if unit != "flops" else value
    return Budget(**fields)
