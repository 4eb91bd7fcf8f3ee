"""CoalescingGenerator: concurrent callers share engine calls and get exactly their outputs."""

from __future__ import annotations

import asyncio

import pytest

from ttscale import asolve
from ttscale.backends import GeneratorWrapper, ScriptedBackend
from ttscale.backends.batching import CoalescingGenerator
from ttscale.errors import ConfigError, ContextLengthError
from ttscale.protocols import Generator
from ttscale.types import GenerationRequest, Problem

QUESTIONS = [f"What is {a} * {b}?" for a, b in [(12, 7), (3, 4), (9, 9), (25, 4), (6, 8)]]


def _req(gen: ScriptedBackend, q: str, n: int = 2, seed: int = 1) -> GenerationRequest:
    return GenerationRequest(gen.render(Problem(q)), n=n, max_tokens=200, seed=seed)


def test_concurrent_calls_merge_into_one_engine_call():
    inner = ScriptedBackend(delay_s=0.01)
    gen = CoalescingGenerator(inner)

    async def main():
        return await asyncio.gather(*(gen.generate([_req(inner, q)]) for q in QUESTIONS))

    outs = asyncio.run(main())
    assert len(inner.calls) == 1 and len(inner.calls[0]) == len(QUESTIONS)
    assert gen.engine_calls == 1 and gen.caller_calls == len(QUESTIONS)
    alone = ScriptedBackend()
    for q, out in zip(QUESTIONS, outs, strict=True):
        (expected,) = asyncio.run(alone.generate([_req(alone, q)]))
        assert out == [expected]  # same outputs as an uncoalesced call (per-request seeds)


def test_callers_arriving_while_engine_busy_form_the_next_batch():
    inner = ScriptedBackend(delay_s=0.05)
    gen = CoalescingGenerator(inner)

    async def late(q: str):
        await asyncio.sleep(0.02)  # after the first batch started
        return await gen.generate([_req(inner, q)])

    async def main():
        first = asyncio.create_task(gen.generate([_req(inner, QUESTIONS[0])]))
        rest = [asyncio.create_task(late(q)) for q in QUESTIONS[1:]]
        return await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert [len(c) for c in inner.calls] == [1, len(QUESTIONS) - 1]


def test_max_sequences_splits_batches_in_arrival_order():
    inner = ScriptedBackend()
    gen = CoalescingGenerator(inner, max_sequences=4)

    async def main():
        return await asyncio.gather(*(gen.generate([_req(inner, q, n=2)]) for q in QUESTIONS))

    asyncio.run(main())
    assert [sum(r.n for r in c) for c in inner.calls] == [4, 4, 2]
    firsts = [c[0].prompt_token_ids for c in inner.calls]
    assert firsts == [inner.render(Problem(QUESTIONS[i])) for i in (0, 2, 4)]


def test_bad_request_fails_only_its_caller():
    inner = ScriptedBackend(max_model_len=400)
    gen = CoalescingGenerator(inner)
    too_long = GenerationRequest(inner.render(Problem("x" * 500)), max_tokens=10)

    async def main():
        return await asyncio.gather(
            gen.generate([_req(inner, QUESTIONS[0])]),
            gen.generate([too_long]),
            gen.generate([_req(inner, QUESTIONS[1])]),
            return_exceptions=True,
        )

    good0, bad, good1 = asyncio.run(main())
    assert isinstance(bad, ContextLengthError)
    assert len(good0) == 1 and len(good1) == 1
    assert [len(c) for c in inner.calls] == [3, 1, 1, 1]  # merged try, then each alone


def test_cancelled_caller_does_not_break_the_batch():
    inner = ScriptedBackend(delay_s=0.05)
    gen = CoalescingGenerator(inner)

    async def main():
        busy = asyncio.create_task(gen.generate([_req(inner, QUESTIONS[0])]))
        await asyncio.sleep(0.01)
        doomed = asyncio.create_task(gen.generate([_req(inner, QUESTIONS[1])]))
        kept = asyncio.create_task(gen.generate([_req(inner, QUESTIONS[2])]))
        await asyncio.sleep(0)
        doomed.cancel()
        return await asyncio.gather(busy, kept)

    a, b = asyncio.run(main())
    assert len(a) == 1 and len(b) == 1
    assert [len(c) for c in inner.calls] == [1, 1]  # the cancelled request was never sent


def test_many_solves_share_engine_calls_and_keep_their_answers():
    """End to end: concurrent best-of-N solves on one coalesced backend answer as alone."""
    inner = ScriptedBackend()
    gen = CoalescingGenerator(inner)

    async def main(backend):
        return await asyncio.gather(
            *(asolve(q, "rollouts=4", backend=backend, seed=3) for q in QUESTIONS)
        )

    together = asyncio.run(main(gen))
    alone_backend = ScriptedBackend()
    alone = [asyncio.run(asolve(q, "rollouts=4", backend=alone_backend, seed=3)) for q in QUESTIONS]
    assert [r.answer for r in together] == [r.answer for r in alone]
    assert [r.ledger.generated_tokens for r in together] == [
        r.ledger.generated_tokens for r in alone
    ]
    assert len(inner.calls) < len(alone_backend.calls)


def test_usable_across_event_loops_and_validates_options():
    inner = ScriptedBackend()
    gen = CoalescingGenerator(inner)
    for q in QUESTIONS[:2]:
        assert len(asyncio.run(gen.generate([_req(inner, q)]))) == 1
    assert asyncio.run(gen.generate([])) == []
    assert gen.profile()["coalescing"] is True and gen.seeding == inner.seeding
    assert isinstance(gen, Generator)
    with pytest.raises(ConfigError, match="max_sequences"):
        CoalescingGenerator(inner, max_sequences=0)


def test_generator_wrapper_passes_everything_through():
    inner = ScriptedBackend()
    wrapped = GeneratorWrapper(inner)
    assert isinstance(wrapped, Generator)
    assert (wrapped.name, wrapped.model_spec, wrapped.seeding) == (
        inner.name,
        inner.model_spec,
        inner.seeding,
    )
    p = Problem(QUESTIONS[0])
    assert wrapped.render(p) == inner.render(p)
    assert wrapped.decode(wrapped.encode("12 * 7")) == inner.decode(inner.encode("12 * 7"))
    assert wrapped.profile() == inner.profile()
    out = asyncio.run(wrapped.generate([_req(inner, QUESTIONS[0])]))
    assert len(inner.calls) == 1  # the engine served it
    alone = ScriptedBackend()  # a fresh engine: same state as ``inner`` had before the call
    assert out == asyncio.run(alone.generate([_req(alone, QUESTIONS[0])]))
    assert CoalescingGenerator(inner).profile() == {**inner.profile(), "coalescing": True}
