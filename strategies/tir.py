"""Tool-integrated reasoning (ToRA, Gou et al. 2023; Qwen2.5-Math's TIR mode).

Each sample reasons in text and writes Python where a computation helps. Generation stops
when a ```python block closes; that block runs in the sandbox (``ttscale.sandbox``), its
output is appended as an ```output block, and the sample continues from there, up to
``max_calls`` executions. Every live sample advances in the same engine call per round (one
request each, continuing from its own token ids, so the prefix cache holds what it wrote).
The final answer is the last ``\\boxed{}``; a sample that ends without one answers with what
its last program printed. Samples vote (math-verify classes), with best-of-N's Beta stopping
rule between batches of ``round_size`` samples.

Budget: ``max_tokens`` caps the tokens a sample *generates* over all its rounds; the output
blocks it reads are prompt tokens (charged as prefill, mostly cache hits). As in the step
searches, ``rollouts`` on the ledger counts engine completions, so each continuation of a
sample counts one. TIR extends prompts mid-sample, so a replay backend cannot serve it: it
needs a live engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ttscale.budget import Budget, Ledger
from ttscale.protocols import Generator, Verifier
from ttscale.strategies.program import (
    _check_common,
    _failures,
    _table,
    _unaffordable,
    program_limits,
    resolve_executor,
)
from ttscale.strategies.search import check_positive, finish_ledger
from ttscale.types import (
    PROGRAM_SYSTEM_PROMPT,
    TIR_INSTRUCTION,
    Candidate,
    ExecResult,
    GenerationRequest,
    Problem,
    Result,
)
from ttscale.verifiers.answers import extract_answer
from ttscale.verifiers.programs import extract_code_blocks, printed_answer
from ttscale.verifiers.voting import vote_state

__all__ = ["CODE_CLOSE", "ToolIntegrated", "format_output"]

log = logging.getLogger(__name__)

CODE_CLOSE = "```\n"
"""Stop string: a fenced block closed (an opening fence is followed by a language name)."""
OUTPUT_CHARS = 800
"""Characters of a program's output shown back to the model (the tail)."""


def format_output(r: ExecResult) -> str:
    """The ```output block appended after a program: its stdout, or the last line of its
    error (as ToRA shows tracebacks), trimmed to ``OUTPUT_CHARS``."""
    if r.timed_out:
        body = "TimeoutError: the program ran past its time limit"
    elif r.error:
        body = f"Error: {r.error}"
    elif r.exit_code != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        body = lines[-1] if lines else f"the program failed (exit {r.exit_code}, signal {r.signal})"
    else:
        body = r.stdout.strip() or "(no output)"
    if len(body) > OUTPUT_CHARS:
        body = "..." + body[-OUTPUT_CHARS:]
    return f"```output\n{body}\n```\n"


@dataclass(slots=True)
class _Sample:
    ids: tuple[int, ...]
    """Prompt + everything so far (generated tokens and output blocks)."""
    text: str = ""
    scan_from: int = 0
    """Where the text after the last output block starts (code is looked for from here)."""
    generated: int = 0
    calls: int = 0
    finish: str = "stop"
    done: bool = False
    last_program: str | None = None
    last_result: ExecResult | None = None
    results: list[ExecResult] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolIntegrated:
    """Tool-integrated reasoning with a vote (see the module doc)."""

    n: int = 4
    """Most samples."""
    max_tokens: int = 1024
    """Cap on tokens one sample generates, over all its rounds."""
    max_calls: int = 4
    """Most programs one sample may run."""
    temperature: float = 0.7
    top_p: float = 0.95
    round_size: int = 4
    """Samples started together; the stopping rule is checked between batches."""
    adaptive: bool = True
    confidence: float = 0.95
    timeout: float | None = None
    """Per-program CPU and wall limit in seconds; ``None`` keeps the sandbox's."""
    min_sample_tokens: int = 64
    """A sample with fewer tokens left than this is ended rather than continued."""
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "n", "max_tokens", "max_calls", "round_size", "min_sample_tokens")
        _check_common(self)

    async def run(
        self, problem: Problem, generator: Generator, verifier: Verifier | None, budget: Budget
    ) -> Result:
        ledger = Ledger(budget)
        ledger.engine = generator.profile()
        executor = resolve_executor(generator)
        limits = program_limits(self.timeout)
        prompt = generator.render(
            Problem(
                problem.prompt + TIR_INSTRUCTION,
                PROGRAM_SYSTEM_PROMPT,
                problem.step_delimiter,
                problem.id,
            )
        )
        cands: list[Candidate] = []
        calls: list[int] = []
        trace: list[dict[str, Any]] = []
        groups: list[Any] = []
        stop_reason, confidence, batch = "n_reached", 0.0, 0
        n = 1 if self.temperature == 0 else self.n  # every greedy sample is the same
        while len(cands) < n:
            k = int(min(self.round_size, n - len(cands), ledger.remaining("rollouts")))
            if k < 1 or not ledger.affords([self._request(prompt, k, 0)], generator):
                if not cands:
                    raise _unaffordable(budget, self.min_sample_tokens)
                stop_reason = f"budget:{ledger.exhausted() or 'insufficient'}"
                break
            samples = await self._batch(
                generator, executor, ledger, prompt, k, batch, limits, trace
            )
            cands.extend(self._candidate(s) for s in samples)
            calls.extend(s.calls for s in samples)
            groups, confidence = vote_state([c.answer for c in cands])
            batch += 1
            if self.adaptive and confidence >= self.confidence:
                stop_reason = "confident"
                break
            if ledger.exhausted():
                stop_reason = f"budget:{ledger.exhausted()}"
                break
        finish_ledger(ledger, stop_reason)
        return Result(
            answer=groups[0].answer if groups else None,
            candidates=cands,
            trace=trace,
            ledger=ledger,
            strategy="tir",
            extras={
                "votes": _table(groups),
                "confidence": confidence,
                "stop_reason": stop_reason,
                "failures": _failures(cands),
                "program_calls": calls,
                "executor": getattr(executor, "name", type(executor).__name__),
            },
        )

    def _request(
        self, ids: tuple[int, ...], n: int, tokens: int, seed: int = 0
    ) -> GenerationRequest:
        return GenerationRequest(
            ids,
            n=n,
            max_tokens=max(self.max_tokens - tokens, 1),
            temperature=self.temperature,
            top_p=self.top_p,
            stop=(CODE_CLOSE,),
            include_stop=True,
            seed=seed,
        )

    async def _batch(
        self,
        gen: Generator,
        executor: Any,
        ledger: Ledger,
        prompt: tuple[int, ...],
        k: int,
        batch: int,
        limits: Any,
        trace: list[dict[str, Any]],
    ) -> list[_Sample]:
        """Run ``k`` samples to the end: one engine call per round for every live sample."""
        seed0 = self.seed + 1000 * batch
        # Round 0: one request of n=k shares the prompt's KV.
        out = (await ledger.generate(gen, [self._request(prompt, k, 0, seed0)]))[0]
        samples = [_Sample(prompt) for _ in range(k)]
        completions = list(out.completions)
        live = list(range(k))
        rnd = 0
        while True:
            for i, c in zip(live, completions, strict=True):
                s = samples[i]
                s.ids = s.ids + tuple(c.token_ids)
                s.text += c.text
                s.generated += c.num_tokens
                s.finish = c.finish_reason
            runnable, codes = [], []
            for i in live:
                s = samples[i]
                code = _closing_program(s)
                if code is None or s.calls >= self.max_calls or s.finish == "length":
                    s.done = True
                elif s.generated + self.min_sample_tokens > self.max_tokens:
                    s.done = True
                else:
                    runnable.append(i)
                    codes.append(code)
            results = list(await executor.run_many(codes, limits=limits)) if codes else []
            ledger.record_programs([r.seconds for r in results])
            for i, code, r in zip(runnable, codes, results, strict=True):
                s = samples[i]
                s.calls += 1
                s.last_program, s.last_result = code, r
                s.results.append(r)
                block = format_output(r)
                s.text += block
                s.scan_from = len(s.text)
                s.ids = s.ids + tuple(gen.encode(block))
            trace.append(
                {
                    "batch": batch,
                    "round": rnd,
                    "live": len(live),
                    "programs_run": len(results),
                    "program_seconds": round(sum(r.seconds for r in results), 4),
                }
            )
            live = runnable
            if not live or ledger.exhausted():
                for i in live:
                    samples[i].done = True
                return samples
            rnd += 1
            reqs = [
                self._request(samples[i].ids, 1, samples[i].generated, seed0 + 100 * rnd + i)
                for i in live
            ]
            while reqs and not ledger.affords(reqs, gen):  # drop the longest-running samples
                reqs.pop()
                samples[live.pop()].done = True
            if not reqs:
                return samples
            outs = await ledger.generate(gen, reqs)
            completions = [o.completions[0] for o in outs]

    @staticmethod
    def _candidate(s: _Sample) -> Candidate:
        answer = extract_answer(s.text)
        if answer is None and s.last_result is not None and s.last_result.ok:
            answer = printed_answer(s.last_result.stdout)
        finish = "length" if s.finish == "length" else "stop"
        return Candidate(
            s.text,
            answer,
            s.generated,
            finish,  # type: ignore[arg-type]
            program=s.last_program,
            execution=s.last_result,
        )


def _closing_program(s: _Sample) -> str | None:
    """The python block this sample just closed (its text ends at a closing fence), if any."""
    if not s.text.rstrip().endswith("```"):
        return None
    blocks = extract_code_blocks(s.text[s.scan_from :])  # what it wrote since the last output
    return blocks[-1] if blocks else None
