"""Drawing one problem's pool samples: one engine call of ``n=K`` with the problem's own
seed, each completion graded and turned into a ``PoolSample`` (offsets, confidence, eFLOPs).
Used by ``ttscale.evals.pool`` locally and by its Ray workers."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ttscale.cost import prefill_eflops, sample_eflops
from ttscale.evals.datasets import EvalProblem
from ttscale.pools.pool import PoolProblem, PoolSample, Sampling
from ttscale.types import Completion, GenerationRequest, Problem
from ttscale.verifiers.answers import answers_equal, extract_answer, gold_answer

__all__ = ["char_offsets", "draw_problem", "problem_seed", "to_pool_sample"]


def problem_seed(seed: int, problem_id: str) -> int:
    """Per-request seed of ``problem_id``'s samples: distinct streams per problem."""
    return (seed * 1_000_003 + zlib.crc32(problem_id.encode())) % (2**31 - 1)


def char_offsets(
    decode: Callable[[Sequence[int]], str], ids: Sequence[int], text: str
) -> np.ndarray:
    """``offsets[i]`` = length of the text of the first ``i + 1`` tokens, clipped to ``text``.

    Linear time: each token is decoded from the last character boundary on and kept only if
    it continues ``text`` exactly (no half character, ``\ufffd``); a token whose piece does
    not (a tokenizer that decodes differently in context) falls back to decoding the whole
    prefix. A token that ends mid-character adds nothing until the character completes, so
    a cut sample never ends in a half character. Special tokens the text skips add nothing.
    """
    out = np.empty(len(ids), dtype=np.int32)
    start, base, prev = 0, 0, 0
    for i in range(len(ids)):
        piece = decode(ids[start : i + 1])
        if not piece.endswith("\ufffd") and text.startswith(piece, base):
            cur = base + len(piece)
            start, base = i + 1, cur  # i + 1 is a character boundary
        else:
            full = decode(ids[: i + 1])
            cur = len(full) if text.startswith(full) and not full.endswith("\ufffd") else prev
            if cur != prev:
                start, base = i + 1, cur
        prev = max(prev, min(cur, len(text)))
        out[i] = prev
    if len(ids):
        out[-1] = len(text)
    return out


def to_pool_sample(
    c: Completion,
    gold: str | None,
    *,
    decode: Callable[[Sequence[int]], str],
    eflops: float,
) -> PoolSample:
    """A drawn completion as a pool sample: answer extracted, graded, offsets computed."""
    answer = extract_answer(c.text)
    correct = None if gold is None else (answer is not None and answers_equal(gold, answer))
    return PoolSample(
        text=c.text,
        token_ids=np.asarray(c.token_ids, dtype=np.int32),
        offsets=char_offsets(decode, c.token_ids, c.text),
        finish_reason=c.finish_reason,
        answer=answer,
        correct=correct,
        eflops=eflops,
        logprobs=None if c.logprobs is None else np.asarray(c.logprobs, dtype=np.float16),
        confidence=None if c.confidence is None else np.asarray(c.confidence, dtype=np.float16),
    )


async def draw_problem(
    p: EvalProblem, generator: Any, sampling: Sampling, hardware: Any
) -> PoolProblem:
    """Draw ``sampling.k`` samples of one problem in one engine call."""
    prompt = generator.render(Problem(p.problem, sampling.system_prompt, id=p.id))
    seed = problem_seed(sampling.seed, p.id)
    req = GenerationRequest(
        prompt,
        n=sampling.k,
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=seed,
        logprobs=sampling.logprobs,
    )
    t0 = time.perf_counter()
    out = (await generator.generate([req]))[0]
    seconds = time.perf_counter() - t0
    spec = generator.model_spec
    gold = gold_answer(p.answer) if p.answer else None
    samples = [
        to_pool_sample(
            c,
            gold,
            decode=generator.decode,
            eflops=0.0
            if spec is None
            else sample_eflops(
                spec, hardware, prompt_tokens=len(prompt), generated=c.num_tokens, batch=req.n
            ),
        )
        for c in out.completions
    ]
    pre = 0.0 if spec is None else prefill_eflops(spec, prompt_tokens=len(prompt), cached_tokens=0)
    return PoolProblem(
        id=p.id,
        problem=p.problem,
        gold=p.answer,
        prompt_token_ids=tuple(prompt),
        samples=samples,
        level=p.level,
        subject=p.subject,
        seed=seed,
        seeding=getattr(generator, "seeding", None),
        prefill_eflops=pre,
        seconds=seconds,
    )
