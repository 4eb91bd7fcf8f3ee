"""Drawing one problem's pool samples: one engine call of ``n=K`` with the problem's own
seed, each completion graded and turned into a ``PoolSample`` (offsets, confidence, eFLOPs).
Program pools (``Sampling.execute``) run each sample's program in the sandbox, all K at once,
and grade what it printed. Used by ``ttscale.evals.pool`` locally and by its Ray workers."""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ttscale.cost import prefill_eflops, sample_eflops
from ttscale.evals.datasets import EvalProblem
from ttscale.pools.pool import PoolProblem, PoolSample, Sampling
from ttscale.types import Completion, ExecResult, GenerationRequest, Problem
from ttscale.verifiers.answers import answers_equal, extract_answer, gold_answer
from ttscale.verifiers.programs import extract_program, printed_answer

__all__ = [
    "STORED_STDERR",
    "STORED_STDOUT",
    "char_offsets",
    "draw_problem",
    "problem_seed",
    "stored_execution",
    "to_pool_sample",
]

STORED_STDOUT = 4096
"""Characters of a program's stdout a pool keeps (its tail: the answer is the last line)."""
STORED_STDERR = 1024


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


def stored_execution(r: ExecResult) -> ExecResult:
    """``r`` with stdout/stderr cut to the tails a pool keeps (the printed answer, read from
    the last line, is unchanged)."""
    return dataclasses.replace(
        r, stdout=r.stdout[-STORED_STDOUT:], stderr=r.stderr[-STORED_STDERR:]
    )


def to_pool_sample(
    c: Completion,
    gold: str | None,
    *,
    decode: Callable[[Sequence[int]], str],
    eflops: float,
    executed: bool = False,
    program: str | None = None,
    execution: ExecResult | None = None,
) -> PoolSample:
    """A drawn completion as a pool sample: answer extracted, graded, offsets computed. For
    a program sample (``executed``) the answer is what its program printed, if it ran
    cleanly; a sample with no program or a failed one has none."""
    if not executed:
        answer = extract_answer(c.text)
    elif execution is not None and execution.ok:
        answer = printed_answer(execution.stdout)
    else:
        answer = None
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
        program=program,
        execution=None if execution is None else stored_execution(execution),
    )


async def draw_problem(
    p: EvalProblem, generator: Any, sampling: Sampling, hardware: Any, executor: Any = None
) -> PoolProblem:
    """Draw ``sampling.k`` samples of one problem in one engine call (and, for a program
    pool, run their programs on ``executor``: a ``ttscale.sandbox.Sandbox``)."""
    if sampling.execute and executor is None:
        raise ValueError("a program pool needs an executor (ttscale.sandbox.default_sandbox())")
    prompt = generator.render(
        Problem(sampling.user_text(p.problem), sampling.system_prompt, id=p.id)
    )
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
    programs: list[str | None] = [None] * len(out.completions)
    executions: list[ExecResult | None] = [None] * len(out.completions)
    if sampling.execute:
        programs = [extract_program(c.text) for c in out.completions]
        ran = await executor.run_many([c for c in programs if c is not None])
        it = iter(ran)
        executions = [None if c is None else next(it) for c in programs]
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
            executed=sampling.execute,
            program=code,
            execution=result,
        )
        for c, code, result in zip(out.completions, programs, executions, strict=True)
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
