"""Shared search machinery for the step-wise strategies (beam search, DVTS, particle
filtering, PDR). Pure functions and one frozen dataclass; no engine imports.

- ``split_steps``: text -> reasoning steps (the PRM convention: split on the delimiter).
- ``Node``: a partial solution grown by token ids (the vLLM ``beam_search`` pattern); text
  is kept per step only for verifiers, traces and results.
- ``keep_top``: the k best nodes by score (stable, optionally without duplicates).
- ``softmax``, ``effective_sample_size``, ``multinomial_resample``, ``systematic_resample``:
  particle weights and resampling (Doucet & Johansen 2009, "A Tutorial on Particle
  Filtering and Smoothing", sections 3.4-3.5).
- ``merge_prompts``, ``fit_step``: build one batched engine call per step, identical
  prefixes merged into one request with ``n`` samples (shared KV, distinct samples), sized
  to what the ledger can still pay for.
- ``score_texts``/``score_nodes``: one verifier call for all new steps/nodes (a
  ``TokenStepVerifier`` reads the nodes' token confidences, ``step_logprobs`` asks the engine
  for them); ``absorb``
  charges a sub-strategy's ledger to its parent (composition); ``build_workspace``: drafts
  clipped into a bounded context (PDR); ``to_candidate``/``select_answer``/``search_result``:
  result building; ``check_positive``/``check_sampling``: config validation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttscale.budget import Ledger
from ttscale.errors import BudgetError, ConfigError
from ttscale.protocols import Generator, TokenStepVerifier, Verifier
from ttscale.types import (
    Candidate,
    Completion,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    Problem,
    Result,
)
from ttscale.verifiers.answers import extract_answer
from ttscale.verifiers.base import AGGREGATIONS, aggregate, check_scores
from ttscale.verifiers.voting import group_answers

__all__ = [
    "RESAMPLERS",
    "SELECTS",
    "Node",
    "absorb",
    "build_workspace",
    "check_positive",
    "check_sampling",
    "effective_sample_size",
    "finish_ledger",
    "fit_step",
    "generate_with_stop",
    "keep_top",
    "merge_prompts",
    "multinomial_resample",
    "score_nodes",
    "score_texts",
    "search_result",
    "select_answer",
    "size_sample_round",
    "softmax",
    "split_steps",
    "step_logprobs",
    "systematic_resample",
    "to_candidate",
]

log = logging.getLogger(__name__)


def check_positive(obj: object, *names: str) -> None:
    """Raise ``ConfigError`` unless every named attribute is a positive int."""
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer")


SELECTS = ("weighted", "majority", "best")
"""How a search picks its answer from scored candidates (``select_answer``)."""


def check_sampling(obj: Any, selects: Sequence[str] = SELECTS) -> None:
    """Raise ``ConfigError`` unless ``obj``'s ``temperature``, ``top_p``, ``agg`` and
    ``select`` are valid: the sampling and selection fields every strategy shares."""
    if obj.temperature < 0 or not 0 < obj.top_p <= 1:
        raise ConfigError(
            f"temperature={obj.temperature} must be >= 0 and top_p={obj.top_p} in (0, 1]"
        )
    if obj.agg not in AGGREGATIONS:
        raise ConfigError(f"agg={obj.agg!r}; use one of {', '.join(AGGREGATIONS)}")
    if obj.select not in selects:
        raise ConfigError(f"select={obj.select!r}; use {', '.join(selects[:-1])} or {selects[-1]}")


def split_steps(text: str, delimiter: str) -> list[str]:
    """Reasoning steps of ``text``: pieces between delimiters, blank pieces dropped."""
    return [s for s in text.split(delimiter) if s.strip()]


@dataclass(frozen=True, slots=True)
class Node:
    """A partial solution: the rendered prompt plus the token ids generated so far.

    Children extend ``ids`` exactly (never re-tokenised text), so the engine's prefix cache
    sees the parent's tokens unchanged.
    """

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...] = ()
    """Generated ids, all steps together (the stop delimiter included)."""
    steps: tuple[str, ...] = ()
    """Text of each generated step as the engine returned it (delimiter kept)."""
    confidence: tuple[float, ...] = ()
    """Token confidence of each generated token, when the engine returned logprobs."""
    step_ends: tuple[int, ...] = ()
    """Per step: the number of generated tokens up to and including it."""
    step_scores: tuple[float, ...] = ()
    """The verifier's latest per-step scores for this node."""
    score: float = 0.0
    """``step_scores`` aggregated (``last``/``min``/``prod``/``mean``)."""
    done: bool = False
    finish_reason: FinishReason = "stop"
    id: int = 0
    parent: int | None = None
    group: int = 0
    """Subtree (DVTS) the node belongs to."""

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.token_ids

    @property
    def text(self) -> str:
        return "".join(self.steps)

    def extend(self, completion: Completion, *, id: int, delimiter: str, max_tokens: int) -> Node:
        """Child with one more step. It is ``done`` on EOS (``stop`` without the delimiter),
        a closed ``\\boxed{}`` in the step, or once ``max_tokens`` are generated."""
        token_ids = self.token_ids + completion.token_ids
        at_delimiter = completion.text.endswith(delimiter)
        final = completion.finish_reason == "stop" and not at_delimiter
        final = final or extract_answer(completion.text, fallbacks=False) is not None
        full = len(token_ids) >= max_tokens
        return dataclasses.replace(
            self,
            token_ids=token_ids,
            steps=(*self.steps, completion.text),
            confidence=self.confidence + (completion.confidence or ()),
            step_ends=(*self.step_ends, len(token_ids)),
            done=final or full,
            finish_reason="stop" if final else ("length" if full else completion.finish_reason),
            id=id,
            parent=self.id,
        )

    def record(self, **extra: Any) -> dict[str, Any]:
        """Trace entry: ids, newest step text, tokens, score, state."""
        return {
            "id": self.id,
            "parent": self.parent,
            "group": self.group,
            "step": self.steps[-1] if self.steps else "",
            "tokens": len(self.token_ids),
            "score": round(self.score, 6),
            "done": self.done,
            **extra,
        }


def keep_top(nodes: Sequence[Node], k: int, *, dedup: bool = True) -> list[Node]:
    """The ``k`` highest-scoring nodes, ties kept in input order; with ``dedup`` a node whose
    token ids equal an already kept one is skipped (a duplicate beam wastes a slot)."""
    order = sorted(range(len(nodes)), key=lambda i: -nodes[i].score)
    kept: list[Node] = []
    seen: set[tuple[int, ...]] = set()
    for i in order:
        if len(kept) == k:
            break
        if dedup and nodes[i].token_ids in seen:
            continue
        seen.add(nodes[i].token_ids)
        kept.append(nodes[i])
    return kept


def softmax(scores: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """Normalised weights ``exp(s / T) / sum exp(s / T)`` (max-shifted, so never overflows)."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    x = np.asarray(scores, dtype=np.float64) / temperature
    if x.size == 0:
        return x
    e = np.exp(x - x.max())
    return e / e.sum()


def effective_sample_size(weights: Sequence[float] | np.ndarray) -> float:
    """ESS = 1 / sum(w^2) of normalised weights: N when uniform, 1 when degenerate."""
    w = np.asarray(weights, dtype=np.float64)
    return float(1.0 / np.sum(w * w)) if w.size else 0.0


def multinomial_resample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` ancestor indices drawn i.i.d. with probabilities ``weights``."""
    return rng.choice(len(weights), size=n, replace=True, p=weights)


def systematic_resample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` ancestors from one uniform offset: index i appears floor or ceil of n*w_i
    times (lower variance than multinomial)."""
    positions = (rng.uniform(0.0, 1.0) + np.arange(n)) / n
    cumulative = np.cumsum(weights)
    cumulative[-1] = 1.0  # guard against rounding leaving the last bin short
    return np.searchsorted(cumulative, positions, side="right")


RESAMPLERS = {"multinomial": multinomial_resample, "systematic": systematic_resample}


def merge_prompts(prompts: Sequence[tuple[int, ...]]) -> list[tuple[tuple[int, ...], list[int]]]:
    """Group identical prompts, first occurrence order: ``[(ids, positions), ...]``.

    Identical prefixes (the root, resampled particles) go out as one request with ``n`` =
    how many want it: the prompt is prefilled once and the ``n`` samples are distinct."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, ids in enumerate(prompts):
        groups.setdefault(ids, []).append(i)
    return list(groups.items())


def fit_step(
    ledger: Ledger,
    generator: Generator,
    demands: Sequence[tuple[tuple[int, ...], int, int]],
    template: GenerationRequest,
    *,
    min_tokens: int,
    reserve: int = 0,
    allow_drop: bool = False,
) -> list[GenerationRequest]:
    """Requests for one step that the ledger can pay for, or ``[]`` if none fit.

    Args:
        demands: ``(prompt ids, n, max_tokens)`` in priority order (best first).
        template: Sampling settings; request ``i`` gets ``seed = template.seed + i``.
        min_tokens: ``max_tokens`` is halved to fit, never below this.
        reserve: Tokens and rollouts held back for the step's verifier call (a generative
            judge spends one of each per judgement through the same ledger).
        allow_drop: When the whole step cannot fit, drop demands from the end.
    """
    phantom = [GenerationRequest((), n=reserve, max_tokens=1)] if reserve > 0 else []
    for keep in range(len(demands), 0 if allow_drop else len(demands) - 1, -1):
        cap = max(m for _, _, m in demands[:keep])
        while cap >= 1:
            reqs = [
                dataclasses.replace(
                    template,
                    prompt_token_ids=ids,
                    n=n,
                    max_tokens=min(m, cap),
                    seed=None if template.seed is None else template.seed + i,
                )
                for i, (ids, n, m) in enumerate(demands[:keep])
            ]
            if ledger.affords(reqs + phantom, generator):
                return reqs
            if ledger.remaining("seconds") <= 0 or cap <= min_tokens:
                break
            cap = max(cap // 2, min_tokens)
    return []


async def score_texts(
    problem: Problem, verifier: Verifier, texts: Sequence[str], ledger: Ledger
) -> list[list[float]] | None:
    """Per-step scores of every text (split into steps) in one verifier call; ``None`` if
    the ledger refused the verifier's own engine call (the budget ran out mid-step)."""
    if not texts:
        return []
    steps = [split_steps(t, problem.step_delimiter) for t in texts]
    try:
        raw = await verifier.score([problem] * len(texts), steps, ledger=ledger)
    except BudgetError as exc:
        log.info("verifier call refused by the budget, stopping: %s", exc)
        return None
    ledger.record_verifier()
    return check_scores(verifier.name, raw, steps)


def step_logprobs(verifier: Verifier | None) -> int | None:
    """Top-k logprobs a step search must request per token for ``verifier``: its
    ``logprobs`` for a ``TokenStepVerifier``, else none."""
    return verifier.logprobs if isinstance(verifier, TokenStepVerifier) else None


async def score_nodes(
    problem: Problem, verifier: Verifier, nodes: Sequence[Node], ledger: Ledger, agg: str
) -> list[Node] | None:
    """``nodes`` with fresh step scores and aggregate score (one verifier call), or
    ``None`` if the budget refused the verifier's call (the caller stops searching). A
    ``TokenStepVerifier`` scores the nodes' token confidences instead of their texts."""
    if isinstance(verifier, TokenStepVerifier):
        for i, n in enumerate(nodes):
            if len(n.confidence) != len(n.token_ids):
                raise ConfigError(
                    f"{verifier.name} scores steps from token confidences, but node {i} carries "
                    f"{len(n.confidence)} for {len(n.token_ids)} tokens; use a backend that "
                    f"returns logprobs (vllm, hf, scripted)"
                )
        rows = check_scores(
            verifier.name,
            verifier.score_token_steps([n.confidence for n in nodes], [n.step_ends for n in nodes]),
            [n.steps for n in nodes],
        )
        ledger.record_verifier()
    else:
        rows = await score_texts(problem, verifier, [n.text for n in nodes], ledger)
    if rows is None:
        return None
    return [
        dataclasses.replace(n, step_scores=tuple(r), score=aggregate(r, agg))
        for n, r in zip(nodes, rows, strict=True)
    ]


def size_sample_round(
    ledger: Ledger,
    gen: Generator,
    prompt: tuple[int, ...],
    *,
    left: int,
    round_size: int,
    max_tokens: int,
    min_sample_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    logprobs: int | None = None,
) -> GenerationRequest | None:
    """The largest affordable round of whole samples from ``prompt``: most samples
    (<= ``round_size`` and ``left``), then the largest per-sample cap in
    [``min_sample_tokens``, ``max_tokens``]; ``None`` if not even one sample fits. Cost is
    monotone in both, so the cap is found by binary search (only the eFLOPs cap makes it
    bind below the token split)."""
    if ledger.remaining("seconds") <= 0:
        return None

    def request(k: int, per: int) -> GenerationRequest:
        return GenerationRequest(
            prompt,
            n=k,
            max_tokens=per,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            logprobs=logprobs,
        )

    tokens_left = ledger.remaining("tokens")
    for k in range(int(min(round_size, left, ledger.remaining("rollouts"))), 0, -1):
        lo, hi = min_sample_tokens, int(min(max_tokens, tokens_left // k))
        if hi < lo or not ledger.affords([request(k, lo)], gen):
            continue
        while lo < hi:  # invariant: request(k, lo) is affordable
            mid = (lo + hi + 1) // 2
            if ledger.affords([request(k, mid)], gen):
                lo = mid
            else:
                hi = mid - 1
        return request(k, lo)
    return None


def finish_ledger(ledger: Ledger, stop: str) -> None:
    """Close ``ledger`` for a run that ended with reason ``stop``; a ``budget:<cap>`` reason
    names the cap that stopped it (``Ledger.finish(stopped_by=...)``)."""
    ledger.finish(stopped_by=stop.split(":")[1] if stop.startswith("budget:") else None)


def search_result(
    strategy: str,
    select: str,
    cands: list[Candidate],
    trace: list[dict[str, Any]],
    ledger: Ledger,
    stop: str,
    *,
    vote_weights: Sequence[float] | None = None,
    **extras: Any,
) -> Result:
    """Pick the answer (``select_answer``; ``vote_weights`` replace the candidates' scores),
    close the ledger (``finish_ledger``) and build a step-wise search's ``Result``: the
    extras every search reports, then its own."""
    answer, table = select_answer(cands, select, vote_weights)
    finish_ledger(ledger, stop)
    common = {
        "select": select,
        "votes": table,
        "stop_reason": stop,
        "steps": len(trace),
        "cache_hit_rate": ledger.cached_tokens / max(ledger.prompt_tokens, 1),
    }
    return Result(answer, cands, trace, ledger, strategy, extras=common | extras)


def absorb(parent: Ledger, child: Ledger) -> None:
    """Add what a sub-strategy's ledger spent to ``parent`` (wall time is the parent's own)."""
    for name in (
        "prompt_tokens",
        "cached_tokens",
        "generated_tokens",
        "rollouts",
        "engine_calls",
        "verifier_calls",
        "eflops",
        "engine_seconds",
    ):
        setattr(parent, name, getattr(parent, name) + getattr(child, name))


def build_workspace(
    texts: Sequence[str],
    limit: int,
    encode: Callable[[str], Sequence[int]],
    decode: Callable[[Sequence[int]], str],
) -> str:
    """Label and join ``texts`` into at most ``limit`` tokens (as ``encode`` counts them):
    each text gets an equal share and keeps its tail, where a solution states its answer."""
    if not texts:
        return ""
    labels = [f"Attempt {i + 1}:\n" for i in range(len(texts))]
    share = max((limit - len(encode("\n\n".join(labels)))) // len(texts), 1)
    bodies = [decode(list(encode(t))[-share:]) for t in texts]
    workspace = "\n\n".join(lab + body for lab, body in zip(labels, bodies, strict=True))
    ids = list(encode(workspace))
    if len(ids) > limit:  # tokenizers can merge across the joins
        workspace = decode(ids[-limit:])
    return workspace


def to_candidate(node: Node, *, scored: bool = True) -> Candidate:
    text = node.text
    return Candidate(
        text=text,
        answer=extract_answer(text),
        tokens=len(node.token_ids),
        finish_reason=node.finish_reason if node.done else "length",
        score=node.score if scored else None,
        step_scores=list(node.step_scores) if scored else None,
    )


def select_answer(
    candidates: Sequence[Candidate], select: str, weights: Sequence[float] | None = None
) -> tuple[str | None, list[dict[str, Any]]]:
    """``majority``, ``weighted`` (by ``weights`` or candidate scores) or ``best`` answer,
    plus the vote table. Candidates without an answer cast no vote."""
    answers = [c.answer for c in candidates]
    if select != "majority" and weights is None:
        weights = [c.score or 0.0 for c in candidates]
    groups = group_answers(answers, None if select == "majority" else weights)
    table = [{"answer": g.answer, "votes": g.votes, "weight": g.weight} for g in groups]
    if select == "best":
        ranked = [i for i, a in enumerate(answers) if a is not None]
        if not ranked:
            return None, table
        return answers[max(ranked, key=lambda i: weights[i])], table  # type: ignore[index]
    return (groups[0].answer if groups else None), table


async def generate_with_stop(
    ledger: Ledger, generator: Generator, req: GenerationRequest
) -> GenerationOutput:
    """One request whose samples end on a ``ConfidenceStop`` (``req.stop_below``).

    A generator that serves the stop itself (``confidence_stop = True``, the replay backend)
    gets the request as it is. Any other is driven in chunks of ``stop.every`` tokens: each
    running sample continues from its own token ids (the prefix cache holds the prompt and
    what it wrote), every continuation of a chunk in one engine call, and a sample ends at
    the first check whose window fell below the threshold. Every chunk call goes through
    ``ledger.generate``, so the ledger charges exactly what was generated (stopped samples
    give the rest of their reservation back) plus the continuations' prompt work. A sample
    that ends by itself at a check point keeps its own finish reason, as in replay.
    """
    stop = req.stop_below
    if stop is None or getattr(generator, "confidence_stop", False):
        return (await ledger.generate(generator, [req]))[0]
    if req.logprobs is None:
        raise ConfigError("a confidence stop needs token logprobs: set logprobs (e.g. 20)")
    chunk = dataclasses.replace(req, max_tokens=min(stop.every, req.max_tokens), stop_below=None)
    first = (await ledger.generate(generator, [chunk]))[0]
    parts: list[list[Completion]] = [[c] for c in first.completions]
    done: list[FinishReason | None] = [None] * len(parts)
    step = 1
    while True:
        live = []
        for i, chunks in enumerate(parts):
            if done[i] is not None:
                continue
            last, n = chunks[-1], sum(c.num_tokens for c in chunks)
            if last.finish_reason == "stop" or n >= req.max_tokens:
                done[i] = "stop" if last.finish_reason == "stop" else "length"
            elif stop.cut([x for c in chunks for x in c.confidence or ()]) is not None:
                done[i] = "confidence"
            else:
                live.append(i)
        if not live:
            break
        conts = [
            dataclasses.replace(
                chunk,
                prompt_token_ids=req.prompt_token_ids
                + tuple(t for c in parts[i] for t in c.token_ids),
                n=1,
                max_tokens=min(stop.every, req.max_tokens - sum(c.num_tokens for c in parts[i])),
                seed=None if req.seed is None else req.seed + 1_000_003 * step + i,
            )
            for i in live
        ]
        outs = await ledger.generate(generator, conts)
        for i, out in zip(live, outs, strict=True):
            parts[i].append(out.completions[0])
        step += 1
    merged = tuple(
        Completion(
            "".join(c.text for c in chunks),
            tuple(t for c in chunks for t in c.token_ids),
            reason or "stop",
            tuple(x for c in chunks for x in c.logprobs or ()) or None,
            None,
            confidence=tuple(x for c in chunks for x in c.confidence or ()) or None,
        )
        for chunks, reason in zip(parts, done, strict=True)
    )
    return GenerationOutput(merged, first.prompt_tokens, first.cached_tokens)
