"""ReplayGenerator: a ``Generator`` that serves requests from a sample pool, exactly.

For i.i.d. samples, drawing ``n`` fresh samples from the engine and taking ``n`` unused
samples of a pool are the same random process, so any strategy that only asks for whole
samples (best-of-N with every ``select`` and its adaptive stop, ``auto`` restricted to
best-of-N, ``solve_batch``) runs unchanged and its results are exact samples of the live
run. Per problem the pool's K samples are served in one random order fixed by
``order_seed`` (the eval seed); each request takes the next unused ones. A sample longer
than the request's ``max_tokens`` is cut to exactly that many tokens (finish reason
``length``, text of those tokens): an exact sample of the capped process.

The ledger charges what the engine would have: prompt tokens per request, generated
tokens, and a block prefix cache (the prompt's full blocks count as cached once this
generator has seen them), so eFLOPs are priced as if generated.

A request the pool cannot serve exactly raises ``ConfigError`` naming what the pool holds:
another prompt (step-wise searches extend prompts mid-solution), stop strings, another
temperature or top-p, a longer ``max_tokens`` than drawn, prompt logprobs, or more samples
than the pool has left for the problem. Greedy pools (temperature 0) serve their one
sample to every request, as a deterministic engine would.

Program pools (``Sampling.execute``) also hold what running each sample's program gave;
``executor`` serves those results to program strategies, so they replay exactly without
running anything (a program the pool never ran is refused, naming why).

Code pools (``Sampling.code``) serve the ``code`` strategy: its samples (the problem sent
as ``code_user_text``), its generated-inputs request (a ``PoolPrompt`` of the problem: one
greedy completion, served to every request for that prompt) and, through ``executor``,
every public-test and behaviour-signature run, looked up by the sha256 of the exact harness
source. Pairwise judging and self-debug rounds send prompts that depend on the candidates
drawn; no pool holds them, and the refusal says to run those live.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.pools.pool import Pool, PoolProblem, PoolPrompt, PoolSample, source_key
from ttscale.types import (
    Completion,
    ConfidenceStop,
    ExecResult,
    GenerationOutput,
    GenerationRequest,
    Problem,
)

__all__ = ["CODE_HINT", "STEPWISE_HINT", "PoolExecutor", "ReplayGenerator"]

STEPWISE_HINT = (
    "replay serves whole samples only: best_of_n (any select, adaptive stop), auto with "
    "best-of-N choices, solve_batch, program/hybrid from program pools and code (select "
    "first, majority, public or cluster) from code pools; step-wise searches (beam_search, "
    "dvts, particle_filter, ets, pdr, sequential_refine, tir) need a live backend"
)
CODE_HINT = (
    "a code pool replays the code strategy with select=first, majority, public or cluster, "
    "debug_rounds=0, and the pool's generated_inputs and timeout; pairwise judging and "
    "self-debug rounds ask for text that depends on the candidates drawn, which no pool "
    "holds: run those live (e.g. --backend vllm)"
)
_TOL = 1e-9

_Slot = tuple[Pool, PoolProblem, PoolPrompt | None]
"""What a prompt is served from: a pool's problem, and its auxiliary prompt (``None``:
the problem's own samples)."""


class ReplayGenerator:
    """Serve generation requests from ``pool``.

    Args:
        pool: A loaded pool (``ttscale.pools.load_pool``).
        order_seed: Seeds the per-problem order of the samples; ``None`` serves them in the
            order they were drawn (so replay reproduces the drawing call exactly).

    One instance is one run's view of the pool: samples it has served are used up. Use
    ``fork(seed)`` for the next run (it shares the loaded samples).
    """

    name = "replay"
    seeding = "per_request"
    confidence_stop = True
    """Serves ``GenerationRequest.stop_below`` natively: the pooled sample is cut at the token
    where it would have stopped (exact: the pool stores every token's confidence)."""

    def __init__(
        self, pool: Pool, *, order_seed: int | None = None, also: Sequence[Pool] = ()
    ) -> None:
        self.pool = pool
        self.pools = (pool, *also)
        self.order_seed = order_seed
        self.model_spec = pool.model_spec
        self._by_prompt: dict[tuple[int, ...], _Slot] = {}
        self._by_text: dict[tuple[str, str | None], _Slot] = {}
        for pl in self.pools:
            s = pl.sampling
            for p in pl.problems.values():
                entries: list[tuple[str, str | None, tuple[int, ...], PoolPrompt | None]] = [
                    (s.user_text(p.problem), s.system_prompt, p.prompt_token_ids, None)
                ]
                entries += [
                    (a.user_text, a.system_prompt, a.prompt_token_ids, a) for a in p.prompts
                ]
                for text, system, ids, aux in entries:
                    key = (text, system)
                    if key in self._by_text and self._by_text[key][0] is not pl:
                        raise ConfigError(
                            f"pools {self._by_text[key][0].name!r} and {pl.name!r} both hold "
                            f"problem {p.id!r} with the same prompt; replay one of them at a time"
                        )
                    self._by_text[key] = (pl, p, aux)
                    self._by_prompt[ids] = (pl, p, aux)
        self._used: dict[tuple[int, str], int] = {}
        self._seen_blocks: set[bytes] = set()
        self._grades: dict[tuple[str, str], bool] | None = None
        program_pools = [
            pl for pl in self.pools if pl.sampling.execute or pl.sampling.code is not None
        ]
        self.executor: PoolExecutor | None = PoolExecutor(program_pools) if program_pools else None
        """Serves the stored execution results of the program and code pools among ``pools``."""

    def fork(self, order_seed: int | None) -> ReplayGenerator:
        """A fresh run over the same pools (nothing used yet), in ``order_seed``'s order."""
        forked = ReplayGenerator(self.pool, order_seed=order_seed, also=self.pools[1:])
        forked._grades = self._grade_table()  # read-only: built once, shared
        return forked

    def describe(self) -> str:
        return "; ".join(pl.describe() for pl in self.pools)

    # -- Generator protocol ------------------------------------------------------------------
    def render(self, problem: Problem) -> tuple[int, ...]:
        found = self._by_text.get((problem.prompt, problem.system_prompt))
        if found is not None:
            aux = found[2]
            return found[1].prompt_token_ids if aux is None else aux.prompt_token_ids
        if not any(text == problem.prompt for text, _ in self._by_text):
            if any(pl.sampling.code is not None for pl in self.pools):
                raise ConfigError(
                    f"{self.describe()}; this run asks for the prompt "
                    f"{problem.prompt[:60]!r}, which the pool does not hold: {CODE_HINT}"
                )
            raise ConfigError(
                f"{self.describe()}; the problem {problem.prompt[:60]!r} is not one of "
                f"them: select problems the pool holds, or build a pool for them (a program "
                f"strategy needs a pool built with --format program, the code strategy one "
                f"built with --format code)"
            )
        systems = sorted({repr(pl.sampling.system_prompt) for pl in self.pools})
        raise ConfigError(
            f"{self.describe()}, drawn with system prompt {', '.join(systems)}; this run asks "
            f"for {problem.system_prompt!r}"
        )

    def encode(self, text: str) -> tuple[int, ...]:
        raise ConfigError(f"the replay backend cannot tokenize text; {STEPWISE_HINT}")

    def decode(self, token_ids: Sequence[int]) -> str:
        raise ConfigError(f"the replay backend cannot detokenize; {STEPWISE_HINT}")

    def profile(self) -> dict[str, Any]:
        engine = dict(self.pool.manifest.get("engine", {}))
        return {
            **engine,
            "backend": "replay",
            "pool": "+".join(pl.name for pl in self.pools),
            "pool_backend": engine.get("backend"),
            "order_seed": self.order_seed,
            "seeding": self.seeding,
        }

    async def close(self) -> None:
        return None

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        return [self._serve(r) for r in requests]

    def stored_grade(self, problem_id: str, program: str) -> bool | None:
        """The hidden-test grade a code pool stored for ``program`` on ``problem_id`` (it
        graded every sample's program when drawn), or ``None`` if no pool holds it."""
        return self._grade_table().get((problem_id, program))

    def _grade_table(self) -> dict[tuple[str, str], bool]:
        if self._grades is None:
            self._grades = {
                (p.id, s.program): bool(s.correct)
                for pl in self.pools
                if pl.sampling.code is not None
                for p in pl.problems.values()
                for s in p.samples
                if s.program is not None and s.correct is not None
            }
        return self._grades

    # -- serving -----------------------------------------------------------------------------
    def remaining(self, problem_id: str) -> int:
        """Samples of ``problem_id`` in the first pool this run has not used yet."""
        return len(self.pool.problems[problem_id].samples) - self._used.get((0, problem_id), 0)

    def _serve(self, r: GenerationRequest) -> GenerationOutput:
        pool, problem, aux = self._check(r)
        samples = problem.samples
        if aux is not None:
            picked = [aux.sample] * r.n  # greedy: one deterministic completion, served to all
        elif pool.sampling.temperature == 0:
            picked = [samples[0]] * r.n  # greedy: one deterministic sample, served to all
        else:
            key = (self.pools.index(pool), problem.id)
            start = self._used.get(key, 0)
            if start + r.n > len(samples):
                raise ConfigError(
                    f"{pool.describe()}; problem {problem.id!r} has "
                    f"{len(samples) - start} unused sample(s) left in this run and the request "
                    f"asks for {r.n}: lower n or the budget, or build a pool with a larger --k"
                )
            order = self._order(problem)
            picked = [samples[i] for i in order[start : start + r.n]]
            self._used[key] = start + r.n
        completions = tuple(
            _cut(s, r.max_tokens, r.logprobs is not None, r.stop_below) for s in picked
        )
        return GenerationOutput(
            completions,
            prompt_tokens=len(r.prompt_token_ids),
            cached_tokens=self._cache_hit(r.prompt_token_ids),
        )

    def _check(self, r: GenerationRequest) -> _Slot:
        found = self._by_prompt.get(tuple(r.prompt_token_ids))
        if found is None:
            raise ConfigError(
                f"{self.describe()}; this request's prompt ({len(r.prompt_token_ids)} "
                f"tokens) is not a pooled problem's prompt: {STEPWISE_HINT}"
            )
        pool, problem, aux = found
        if aux is not None:
            self._check_aux(pool, problem, aux, r)
            return found
        s = pool.sampling
        why = None
        if r.stop:
            why = f"stop strings {list(r.stop)!r}"
        elif abs(r.temperature - s.temperature) > _TOL:
            why = f"temperature={r.temperature:g}"
        elif s.temperature > 0 and abs(r.top_p - s.top_p) > _TOL:
            why = f"top_p={r.top_p:g}"
        elif r.max_tokens > s.max_tokens:
            why = f"max_tokens={r.max_tokens} (longer than drawn)"
        elif r.prompt_logprobs:
            why = "prompt logprobs"
        elif r.logprobs is not None and (s.logprobs is None or r.logprobs > s.logprobs):
            why = f"logprobs={r.logprobs} (drawn with {s.logprobs})"
        elif r.stop_below is not None and s.logprobs is None:
            why = "a confidence stop (the pool holds no token confidences)"
        if why is not None:
            fix = (
                STEPWISE_HINT
                if r.stop
                else "run with the pool's settings or build a pool with these"
            )
            raise ConfigError(
                f"{pool.describe()}; the request asks for {why}, which it cannot serve "
                f"exactly: {fix}"
            )
        return found

    def _check_aux(
        self, pool: Pool, problem: PoolProblem, aux: PoolPrompt, r: GenerationRequest
    ) -> None:
        """An auxiliary prompt is served greedily, as drawn, up to its cap."""
        why = None
        if r.stop:
            why = f"stop strings {list(r.stop)!r}"
        elif abs(r.temperature - aux.temperature) > _TOL:
            why = f"temperature={r.temperature:g} (drawn greedy)"
        elif r.max_tokens > aux.max_tokens:
            why = f"max_tokens={r.max_tokens} (drawn with {aux.max_tokens})"
        elif r.prompt_logprobs:
            why = "prompt logprobs"
        elif r.logprobs is not None and aux.sample.logprobs is None:
            why = f"logprobs={r.logprobs} (drawn without)"
        elif r.stop_below is not None:
            why = "a confidence stop"
        if why is not None:
            raise ConfigError(
                f"{pool.describe()}; the {aux.kind} request of problem {problem.id!r} asks for "
                f"{why}, which it cannot serve exactly: {CODE_HINT}"
            )

    def _order(self, problem: PoolProblem) -> np.ndarray:
        k = len(problem.samples)
        if self.order_seed is None:
            return np.arange(k)
        digest = hashlib.sha256(f"{self.order_seed}|{problem.id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(k)

    def _cache_hit(self, ids: Sequence[int]) -> int:
        """Full prompt blocks this run has sent before (vLLM caches whole blocks only)."""
        bs, hit = self.pool.block_size, 0  # the pools were drawn on one engine
        for end in range(bs, len(ids) // bs * bs + 1, bs):
            key = hashlib.blake2b(np.asarray(ids[:end], dtype="<i8").tobytes(), digest_size=16)
            digest = key.digest()
            if digest in self._seen_blocks:
                hit = end
            else:
                self._seen_blocks.add(digest)
        return hit


class PoolExecutor:
    """The sandbox's stand-in on replay: returns the result stored for a program, exactly.

    A source is looked up by its text among the program pools' programs (every pooled
    sample's program ran once when the pool was drawn; a program runs alone in a fresh
    process, so its stored result is its result), then by its sha256 among the code pools'
    runs (the public-test and behaviour harnesses, pure functions of their inputs). Holds
    no per-run state."""

    name = "pool"

    def __init__(self, pools: Sequence[Pool]) -> None:
        self.pools = tuple(pools)
        self._results: dict[str, ExecResult] = {
            s.program: s.execution
            for pool in self.pools
            if pool.sampling.code is None  # a code sample's execution is its test run
            for p in pool.problems.values()
            for s in p.samples
            if s.program is not None and s.execution is not None
        }
        self._runs: dict[str, ExecResult] = {
            key: r
            for pool in self.pools
            for p in pool.problems.values()
            for key, r in p.runs.items()
        }

    def run(self, code: str, *, limits: Any = None) -> ExecResult:
        found = self._results.get(code)
        if found is None and self._runs:
            found = self._runs.get(source_key(code))
            if found is None:
                drawn = "; ".join(
                    f"{p.name!r} ran them with generated_inputs={p.sampling.code.generated_inputs}"
                    f" and timeout={p.sampling.code.timeout:g}"
                    for p in self.pools
                    if p.sampling.code is not None
                )
                raise ConfigError(
                    f"{'; '.join(p.describe() for p in self.pools)}; it never ran this "
                    f"source ({len(code)} chars), so replay cannot serve its result "
                    f"exactly ({drawn}): {CODE_HINT}"
                )
        if found is None:
            raise ConfigError(
                f"{'; '.join(p.describe() for p in self.pools)}; it never ran this program "
                f"({len(code)} chars, {code[:40]!r}...), so replay cannot serve its result "
                f"exactly: a sample cut shorter than drawn ends in another program; run "
                f"with the pool's max_tokens or a live backend"
            )
        return found

    async def arun(self, code: str, *, limits: Any = None) -> ExecResult:
        return self.run(code, limits=limits)

    async def run_many(self, codes: Sequence[str], *, limits: Any = None) -> list[ExecResult]:
        return [self.run(c, limits=limits) for c in codes]


def _cut(
    s: PoolSample, max_tokens: int, with_logprobs: bool, stop: ConfidenceStop | None = None
) -> Completion:
    """The sample as a ``Completion``, cut to ``max_tokens`` tokens if longer, or where its
    confidence stop fires first."""
    m = min(s.num_tokens, max_tokens)
    finish = s.finish_reason if m == s.num_tokens else "length"
    if stop is not None:
        at = stop.cut(s.confidence[:m].astype(float).tolist())
        if (
            at is not None and at < m
        ):  # a sample that ends by itself at a check point keeps its reason
            m, finish = at, "confidence"
    lp = (
        tuple(float(x) for x in s.logprobs[:m])
        if with_logprobs and s.logprobs is not None
        else None
    )
    conf = (
        tuple(float(x) for x in s.confidence[:m])
        if with_logprobs and s.confidence is not None
        else None
    )
    return Completion(
        s.text_at(m),
        tuple(int(t) for t in s.token_ids[:m]),
        finish,  # type: ignore[arg-type]
        lp,
        None,
        confidence=conf,
    )
