"""Code generation with execution-based selection: S* (Li et al. 2025), CodeT, AlphaCode/MBR-exec.

``code`` samples ``n`` programs for a code problem (a signature + docstring, or a task in
words, with the function to write named by ``entry_point``) and picks one by running them in
the sandbox, never in this process:

1. Sampling. The prompt is EvalPlus's instruct prompt (``code_user_text``) with the coder's
   system message; rounds of ``round_size`` samples, one batched engine call per round,
   sized to the budget. A sample without a closed ```python block casts nothing.
2. Public tests. Each program (the prompt's imports and helpers prepended:
   ``assemble_program``) runs the problem's public tests (``Problem.tests``, else the
   docstring's examples) in one sandbox run.
3. Behaviour clusters (MBR-exec, AlphaCode, S*). The model is asked once per problem for
   test inputs (``inputs_problem``; batched into the first round's engine call); each
   program runs on the public calls plus those inputs, and programs that return the same
   values everywhere form a cluster. A program that does not load is in no cluster.
4. Selection (``select``): ``first`` (the first program drawn: the no-execution baseline),
   ``public`` (the first program passing every public test), ``majority`` (the largest
   cluster), ``cluster`` (the clusters passing the most public tests, then the largest:
   CodeT / S*'s filter), ``pairwise`` (``cluster``, then S*'s adaptive input synthesis: the
   model writes an input on which the two leading clusters differ, both run on it, and the
   model judges which output is right). Ties: more public tests passed, then the larger
   cluster, then the earlier sample.
5. Self-debug (``debug_rounds``; S*'s sequential scaling): a program failing public tests
   is shown its failures (call, expected, actual) and asked for a fix; the fix replaces it
   when it passes more tests. One batched engine call per round.
6. Adaptive stop: after a round, once a cluster passing every public test is strictly the
   largest (``first``: once a program is drawn; ``public``: once one passes every public
   test), sampling and debugging stop and the rest of the budget is left unspent. With no
   public tests the signal is too weak, so it never stops early.

``first`` and ``public`` need no clusters, so they ask for no inputs and run no behaviour
runs. Every sandbox run goes on the ledger. On a replay backend over a code pool the runs
come from the pool (``resolve_executor``); ``pairwise`` and ``debug_rounds`` ask for text
no pool holds and need a live backend. A verifier passed in is not used: execution is the
check. The strategy sees a ``Problem`` only: hidden tests never reach it.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.budget import Budget, Ledger
from ttscale.errors import BudgetError, ConfigError, describe
from ttscale.protocols import Generator, Verifier
from ttscale.strategies.program import resolve_executor
from ttscale.strategies.search import check_positive, finish_ledger, fit_step, size_sample_round
from ttscale.types import (
    PROGRAM_SYSTEM_PROMPT,
    Candidate,
    Completion,
    FinishReason,
    GenerationRequest,
    Problem,
    PublicTest,
    Result,
    TestOutcome,
    code_user_text,
)
from ttscale.verifiers.code_tests import (
    BehaviourRun,
    PublicRun,
    abehaviour_run,
    arun_public,
    assemble_program,
    infer_entry_point,
    parse_calls,
    parse_examples,
)
from ttscale.verifiers.programs import extract_program

__all__ = [
    "INPUTS_MAX_TOKENS",
    "SELECTS",
    "CodeSelect",
    "behaviour_inputs",
    "code_problem",
    "debug_problem",
    "distinguish_problem",
    "inputs_problem",
    "judge_problem",
    "parse_verdict",
]

log = logging.getLogger(__name__)

SELECTS = ("first", "majority", "public", "cluster", "pairwise")
INPUTS_MAX_TOKENS = 512
"""Token cap of the generated-inputs request (greedy; a code pool draws it with the same)."""
MAX_GENERATED_INPUTS = 32
MAX_INPUT_CHARS = 1_000
"""Longest generated input call kept (longer ones are skipped: clustering wants many small
inputs, and a huge literal mostly measures the time limit)."""
PAIRWISE_MAX_TOKENS = 512
"""Token cap of each pairwise call (the distinguishing input, the judgement)."""
PAIRWISE_INPUTS = 4
"""Distinguishing inputs tried at most (the first on which the two programs differ wins)."""
FEEDBACK_TESTS = 3
"""Failing tests shown to a self-debug request."""
FEEDBACK_CHARS = 300
"""Characters of a value shown in self-debug feedback and the pairwise judgement."""


# ---- prompts ------------------------------------------------------------------------------


def code_problem(problem: Problem) -> Problem:
    """The sampling prompt of a code problem: EvalPlus's instruct prompt, the coder's system
    message (what a code pool is drawn with)."""
    return Problem(
        code_user_text(problem.prompt), PROGRAM_SYSTEM_PROMPT, problem.step_delimiter, problem.id
    )


def inputs_problem(problem_prompt: str, entry_point: str, k: int) -> Problem:
    """The prompt asking the model for ``k`` diverse test inputs of ``entry_point`` (calls
    with literal arguments, one per line), for behaviour clustering. A code pool asks it
    once per problem, greedy, with ``INPUTS_MAX_TOKENS``."""
    text = (
        "Here is a Python programming problem:\n"
        f"```python\n{problem_prompt.strip()}\n```\n"
        f"Write {k} diverse test inputs for `{entry_point}`: typical cases, edge cases (empty, "
        "zero, negative, a single element, boundaries) and tricky cases, all valid for the "
        f"problem and quick to compute. Write each input as one call of `{entry_point}` with "
        "literal arguments, one call per line, without expected values or anything else, "
        "all in a single ```python code block."
    )
    return Problem(text, PROGRAM_SYSTEM_PROMPT)


def behaviour_inputs(
    tests: Sequence[PublicTest], generated_text: str | None, entry_point: str, k: int
) -> list[str]:
    """The inputs programs are clustered on: the public tests' calls, then up to ``k`` new
    calls parsed from the model's generated-inputs reply (``parse_calls``; duplicates,
    calls longer than ``MAX_INPUT_CHARS`` and anything not a literal call dropped)."""
    out: list[str] = []
    seen: set[str] = set()
    for t in tests:
        key = _canonical(t.call)
        if key not in seen:
            seen.add(key)
            out.append(t.call)
    added = 0
    for call in parse_calls(generated_text or "", entry_point):
        if added >= k:
            break
        if len(call) > MAX_INPUT_CHARS or call in seen:
            continue
        seen.add(call)
        out.append(call)
        added += 1
    return out


def debug_problem(problem_prompt: str, code: str, failures: Sequence[TestOutcome]) -> Problem:
    """A self-debug request: the problem, the previous program and the public tests it
    fails (actual against expected), asking for a corrected program. One user message (the
    ``Generator`` protocol renders single-turn prompts)."""
    lines = [_describe_failure(o) for o in failures[:FEEDBACK_TESTS]]
    more = len(failures) - FEEDBACK_TESTS
    if more > 0:
        lines.append(f"- ... and {more} more failing example(s)")
    text = (
        f"{code_user_text(problem_prompt)}\n"
        f"Your previous program:\n```python\n{code.strip()}\n```\n"
        "It fails these examples from the problem:\n" + "\n".join(lines) + "\n"
        "Find the bug and write the corrected, complete program in a single ```python "
        "code block."
    )
    return Problem(text, PROGRAM_SYSTEM_PROMPT)


def distinguish_problem(problem_prompt: str, entry_point: str, code_a: str, code_b: str) -> Problem:
    """S*'s adaptive input synthesis: ask for inputs on which two programs differ."""
    text = (
        "Here is a Python programming problem:\n"
        f"```python\n{problem_prompt.strip()}\n```\n"
        f"Two programs solve it differently.\nProgram A:\n```python\n{code_a.strip()}\n```\n"
        f"Program B:\n```python\n{code_b.strip()}\n```\n"
        f"Write up to {PAIRWISE_INPUTS} valid inputs on which the two programs return "
        f"different results, each as one call of `{entry_point}` with literal arguments, one "
        "per line, in a single ```python code block."
    )
    return Problem(text, PROGRAM_SYSTEM_PROMPT)


def judge_problem(
    problem_prompt: str, call: str, code_a: str, out_a: str, code_b: str, out_b: str
) -> Problem:
    """S*'s pairwise judgement: which of two programs' results on ``call`` is right."""
    text = (
        "Here is a Python programming problem:\n"
        f"```python\n{problem_prompt.strip()}\n```\n"
        f"Program A:\n```python\n{code_a.strip()}\n```\n"
        f"Program B:\n```python\n{code_b.strip()}\n```\n"
        f"On the input `{call}`, program A returns `{_clip(out_a)}` and program B returns "
        f"`{_clip(out_b)}`.\nWhich result is correct for the problem? Work out the right "
        "result step by step, then end with one line: `Answer: A` or `Answer: B`."
    )
    return Problem(text, PROGRAM_SYSTEM_PROMPT)


_VERDICT = re.compile(r"(?i:answer)\s*(?:is)?\s*[:：]?\s*[*`(\[]*\s*(?:program\s+)?([AB])\b")
_BOXED = re.compile(r"\\boxed\{\s*(?:program\s+)?([AB])\s*\}")


def parse_verdict(text: str) -> str | None:
    """``"A"`` or ``"B"`` from a judgement (its last ``Answer: X`` or ``\\boxed{X}``), else
    ``None``."""
    found = [(m.start(), m.group(1)) for m in _VERDICT.finditer(text)]
    found += [(m.start(), m.group(1)) for m in _BOXED.finditer(text)]
    return max(found)[1] if found else None


def _describe_failure(o: TestOutcome) -> str:
    want = f"raise {o.test.raises}" if o.test.raises else f"return {_clip(o.test.expected)}"
    if o.actual is not None:
        got = (
            f"raised {o.actual[1:]}" if o.actual.startswith("!") else f"returned {_clip(o.actual)}"
        )
    else:
        got = "gave no result"
    why = f" ({_clip(o.error)})" if o.error else ""
    return f"- `{o.test.call}` should {want} but {got}{why}"


def _clip(text: str | None) -> str:
    text = "None" if text is None else text
    return text if len(text) <= FEEDBACK_CHARS else text[:FEEDBACK_CHARS] + "..."


def _canonical(call: str) -> str:
    try:
        return ast.unparse(ast.parse(call.strip(), mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return call.strip()


# ---- candidates and clusters --------------------------------------------------------------

_LOAD_ERRORS = ("the program does not define", "the program failed to load")


@dataclass(slots=True)
class _Cand:
    """A candidate while the run lasts (self-debug replaces its program)."""

    text: str
    tokens: int
    finish: FinishReason
    code: str | None
    program: str | None
    public: PublicRun | None = None
    behaviour: BehaviourRun | None = None
    debugged: int = 0
    """Self-debug fixes that replaced it."""

    @property
    def passed(self) -> int:
        return self.public.passed if self.public is not None else 0

    @property
    def loads(self) -> bool:
        """False when a run showed that the program does not load or lacks the entry point."""
        if self.program is None:
            return False
        sig = self.behaviour.signature if self.behaviour is not None else ()
        if sig and all(s == "!load" for s in sig):
            return False
        outs = self.public.outcomes if self.public is not None else ()
        return not (
            outs
            and all(
                o.error is not None
                and (o.error.startswith(_LOAD_ERRORS) or "loading the program" in o.error)
                for o in outs
            )
        )

    def candidate(self) -> Candidate:
        return Candidate(
            self.text,
            self.program,
            self.tokens,
            self.finish,
            program=self.program,
            execution=self.public.execution if self.public is not None else None,
        )


@dataclass(frozen=True, slots=True)
class _Cluster:
    signature: tuple[str, ...]
    members: tuple[int, ...]
    """Candidate indices, in sample order."""
    passed: int
    """Most public tests a member passes."""
    rep: int
    """The earliest member passing ``passed`` tests."""

    @property
    def size(self) -> int:
        return len(self.members)

    def hash(self) -> str:
        blob = json.dumps(list(self.signature), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def row(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "passed_public": self.passed,
            "signature_hash": self.hash(),
            "representative": self.rep,
            "members": list(self.members),
        }


def _clusters(cands: Sequence[_Cand], select: str) -> list[_Cluster]:
    """Clusters of equal behaviour among programs that load, best first under ``select``."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, c in enumerate(cands):
        if c.program is not None and c.loads:
            sig = c.behaviour.signature if c.behaviour is not None else ()
            groups.setdefault(sig, []).append(i)
    out = []
    for sig, members in groups.items():
        best = max(cands[i].passed for i in members)
        rep = next(i for i in members if cands[i].passed == best)
        out.append(_Cluster(sig, tuple(members), best, rep))
    if select == "majority":
        out.sort(key=lambda cl: (-cl.size, -cl.passed, cl.members[0]))
    else:
        out.sort(key=lambda cl: (-cl.passed, -cl.size, cl.members[0]))
    return out


def _failures(cands: Sequence[_Cand], n_public: int) -> dict[str, int]:
    """Why candidates are not solutions, counted."""
    out: dict[str, int] = {}
    for c in cands:
        ex = c.public.execution if c.public is not None else None
        if c.program is None:
            why = "no_program"
        elif ex is not None and ex.error:
            why = "sandbox_error"
        elif not c.loads:
            why = "load_error"
        elif c.passed < n_public:
            why = "failed_public"
        else:
            continue
        out[why] = out.get(why, 0) + 1
    return out


# ---- the strategy -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeSelect:
    """Sample programs, run them, select by public tests and behaviour (see the module doc)."""

    n: int = 8
    """Most programs sampled (fewer if the budget or the adaptive stop ends it first).
    Greedy (``temperature=0``) draws one: every greedy sample is the same."""
    max_tokens: int = 768
    """Cap on generated tokens per program."""
    temperature: float = 0.7
    top_p: float = 0.95
    round_size: int = 8
    """Programs per engine call; the adaptive stop is checked between rounds."""
    select: str = "cluster"
    """``first``, ``majority``, ``public``, ``cluster`` or ``pairwise`` (module doc)."""
    generated_inputs: int = 8
    """Test inputs asked from the model for clustering (0: public calls only)."""
    debug_rounds: int = 0
    """Self-debug rounds for programs failing public tests."""
    adaptive: bool = True
    """Stop sampling once the selection is settled (module doc, step 6)."""
    timeout: float = 5.0
    """Seconds each test call (and loading the program) may take in the sandbox."""
    min_sample_tokens: int = 128
    """Smallest per-sample token cap worth launching."""
    seed: int = 0
    """Round r samples with seed ``seed + r``."""

    def __post_init__(self) -> None:
        check_positive(self, "n", "max_tokens", "round_size", "min_sample_tokens")
        if self.select not in SELECTS:
            raise ConfigError(f"select={self.select!r}; choose one of {', '.join(SELECTS)}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(
                f"temperature={self.temperature} must be >= 0 and top_p={self.top_p} in (0, 1]"
            )
        for name, top in (("generated_inputs", MAX_GENERATED_INPUTS), ("debug_rounds", 16)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ConfigError(f"{name}={describe(value)} must be an int in [0, {top}]")
        t = self.timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 600:
            raise ConfigError(f"timeout={describe(t)} must be seconds in (0, 600]")

    async def run(
        self, problem: Problem, generator: Generator, verifier: Verifier | None, budget: Budget
    ) -> Result:
        entry = self._entry_point(problem)
        tests = tuple(problem.tests) or parse_examples(problem.prompt, entry)
        ledger = Ledger(budget)
        ledger.engine = generator.profile()
        run = _Run(self, problem, entry, tests, generator, ledger)
        await run.sample()
        if not run.stop_reason.startswith("budget:"):
            await run.debug()
        return await run.finish()

    def _entry_point(self, problem: Problem) -> str:
        entry = problem.entry_point or infer_entry_point(problem.prompt, problem.tests)
        if entry is None:
            raise ConfigError(
                "the code strategy needs the function to write: pass entry_point "
                "(Problem.entry_point, solve(..., entry_point='name')) or tests that call it"
            )
        if not isinstance(entry, str) or not entry.isidentifier():
            raise ConfigError(f"entry_point must be a Python identifier; got {describe(entry)}")
        return entry


class _Run:
    """One problem's run: the state the phases share."""

    def __init__(
        self,
        opts: CodeSelect,
        problem: Problem,
        entry: str,
        tests: tuple[PublicTest, ...],
        gen: Generator,
        ledger: Ledger,
    ) -> None:
        self.o, self.problem, self.entry, self.tests = opts, problem, entry, tests
        self.gen, self.ledger = gen, ledger
        self.executor = resolve_executor(gen)
        self.clustered = opts.select in ("majority", "cluster", "pairwise")
        self.n = 1 if opts.temperature == 0 else opts.n
        self.behave = self.clustered and self.n >= 2
        """Behaviour runs are made (one program alone needs no clusters)."""
        self.cands: list[_Cand] = []
        self.public_calls = behaviour_inputs(tests, None, entry, 0)
        self.inputs: list[str] = list(self.public_calls) if self.behave else []
        self.trace: list[dict[str, Any]] = []
        self.stop_reason = "n_reached"
        self.debug_info: dict[str, Any] = {"rounds": 0, "replaced": 0}

    # -- phases --------------------------------------------------------------------------
    async def sample(self) -> None:
        o, gen, ledger = self.o, self.gen, self.ledger
        prompt = gen.render(code_problem(self.problem))
        inputs_req = None
        if self.behave and o.generated_inputs > 0:
            ids = gen.render(inputs_problem(self.problem.prompt, self.entry, o.generated_inputs))
            inputs_req = GenerationRequest(
                ids, n=1, max_tokens=INPUTS_MAX_TOKENS, temperature=0.0, top_p=1.0, seed=o.seed
            )
        rnd = 0
        while len(self.cands) < self.n:
            req = self._size(prompt, rnd)
            if inputs_req is not None:  # batched into the first round, if both fit
                while req is not None and not ledger.affords([req, inputs_req], gen):
                    req = dataclasses.replace(req, n=req.n - 1) if req.n > 1 else None
                if req is None:
                    self.trace.append({"phase": "inputs", "skipped": "budget"})
                    inputs_req = None
                    req = self._size(prompt, rnd)
            if req is None:
                if not self.cands:
                    raise BudgetError(
                        f"budget {ledger.budget} cannot pay for one program of >= "
                        f"{o.min_sample_tokens} tokens; raise the budget or lower "
                        "min_sample_tokens/max_tokens"
                    )
                self.stop_reason = f"budget:{ledger.exhausted() or 'insufficient'}"
                break
            outs = await ledger.generate(gen, [req] if inputs_req is None else [req, inputs_req])
            if inputs_req is not None:
                self._take_inputs(outs[1].completions[0])
                inputs_req = None
            new = [self._cand(c) for c in outs[0].completions]
            runs = await self._evaluate(new)
            self.cands.extend(new)
            self.trace.append(
                {
                    "phase": "sample",
                    "round": rnd,
                    "samples": req.n,
                    "max_tokens": req.max_tokens,
                    "seed": req.seed,
                    "generated_tokens": sum(c.tokens for c in new),
                    "cached_tokens": outs[0].cached_tokens,
                    "programs": sum(c.program is not None for c in new),
                    "passed_public": [c.passed if c.program else None for c in new],
                    "sandbox_runs": runs,
                    **self._leader(),
                }
            )
            rnd += 1
            if o.adaptive and (why := self._settled()) is not None:
                self.stop_reason = f"adaptive:{why}"
                break

    async def debug(self) -> None:
        o, gen, ledger, n_public = self.o, self.gen, self.ledger, len(self.tests)
        for r in range(o.debug_rounds):
            if o.adaptive and (why := self._settled(debugging=True)) is not None:
                if r > 0:  # fixes settled it (before any, sampling's reason stands)
                    self.stop_reason = f"adaptive:{why}"
                break
            failing = [
                i for i, c in enumerate(self.cands) if c.program is not None and c.passed < n_public
            ]
            if o.select == "first":  # only the first program can be selected
                first = next((i for i, c in enumerate(self.cands) if c.program is not None), None)
                failing = [i for i in failing if i == first]
            if not failing:
                break
            demands = []
            for i in failing:
                c = self.cands[i]
                assert c.code is not None and c.public is not None
                bad = [x for x in c.public.outcomes if not x.passed]
                ids = gen.render(debug_problem(self.problem.prompt, c.code, bad))
                demands.append((ids, 1, o.max_tokens))
            template = GenerationRequest(
                (), temperature=o.temperature, top_p=o.top_p, seed=o.seed + 1000 * (r + 1)
            )
            reqs = fit_step(
                ledger, gen, demands, template, min_tokens=o.min_sample_tokens, allow_drop=True
            )
            if not reqs:
                self.stop_reason = f"budget:{ledger.exhausted() or 'insufficient'}"
                break
            outs = await ledger.generate(gen, reqs)
            fixes = [self._cand(out.completions[0]) for out in outs]
            runs = await self._evaluate(fixes)
            replaced = []
            for i, fix in zip(failing, fixes, strict=False):
                old = self.cands[i]
                if fix.program is not None and fix.passed > old.passed:
                    fix.tokens += old.tokens
                    fix.debugged = old.debugged + 1
                    self.cands[i] = fix
                    replaced.append(i)
            self.debug_info["rounds"] += 1
            self.debug_info["replaced"] += len(replaced)
            self.trace.append(
                {
                    "phase": "debug",
                    "round": r,
                    "failing": failing,
                    "requests": len(reqs),
                    "generated_tokens": sum(f.tokens for f in fixes),
                    "fix_passed_public": [f.passed if f.program else None for f in fixes],
                    "replaced": replaced,
                    "sandbox_runs": runs,
                    **self._leader(),
                }
            )
            if len(reqs) < len(failing):
                self.stop_reason = f"budget:{ledger.exhausted() or 'insufficient'}"
                break

    async def finish(self) -> Result:
        clusters = _clusters(self.cands, self.o.select) if self.clustered else []
        chosen, selection = self._select(clusters)
        if self.o.select == "pairwise" and chosen is not None:
            chosen, selection["pairwise"] = await self._pairwise(clusters, chosen)
        finish_ledger(self.ledger, self.stop_reason)
        picked = self.cands[chosen] if chosen is not None else None
        outcomes = picked.public.outcomes if picked is not None and picked.public else ()
        selection["candidate"] = chosen
        if clusters:
            where = [k for k, cl in enumerate(clusters) if chosen in cl.members]
            selection["cluster"] = where[0] if where else None
        self.trace.append({"phase": "select", **selection})
        extras = {
            "entry_point": self.entry,
            "tests": [
                {
                    "call": x.test.call,
                    "expected": x.test.expected,
                    "raises": x.test.raises,
                    "passed": x.passed,
                    "actual": x.actual,
                    "error": x.error,
                }
                for x in outcomes
            ],
            "passed_public": picked.passed if picked is not None else 0,
            "n_public": len(self.tests),
            "clusters": [cl.row() for cl in clusters],
            "selection": selection,
            "stop_reason": self.stop_reason,
            "failures": _failures(self.cands, len(self.tests)),
            "inputs": self.inputs,
            "debug": self.debug_info,
            "executor": getattr(self.executor, "name", type(self.executor).__name__),
        }
        return Result(
            answer=picked.program if picked is not None else None,
            candidates=[c.candidate() for c in self.cands],
            trace=self.trace,
            ledger=self.ledger,
            strategy="code",
            extras=extras,
        )

    # -- pieces --------------------------------------------------------------------------
    def _size(self, prompt: tuple[int, ...], rnd: int) -> GenerationRequest | None:
        o = self.o
        return size_sample_round(
            self.ledger,
            self.gen,
            prompt,
            left=self.n - len(self.cands),
            round_size=o.round_size,
            max_tokens=o.max_tokens,
            min_sample_tokens=o.min_sample_tokens,
            temperature=o.temperature,
            top_p=o.top_p,
            seed=o.seed + rnd,
        )

    def _take_inputs(self, completion: Completion) -> None:
        k = self.o.generated_inputs
        self.inputs = behaviour_inputs(self.tests, completion.text, self.entry, k)
        parsed = parse_calls(completion.text, self.entry)
        self.trace.append(
            {
                "phase": "inputs",
                "asked": k,
                "generated_tokens": completion.num_tokens,
                "parsed": len(parsed),
                "used": len(self.inputs) - len(self.public_calls),
                "calls": list(self.inputs),
            }
        )

    def _cand(self, c: Completion) -> _Cand:
        code = extract_program(c.text)
        program = assemble_program(self.problem.prompt, code) if code is not None else None
        return _Cand(c.text, c.num_tokens, c.finish_reason, code, program)

    async def _evaluate(self, cands: Sequence[_Cand]) -> int:
        """Public-test runs (and behaviour runs, when clustering) of ``cands``' programs,
        all at once; returns the sandbox runs made (all on the ledger)."""
        box, timeout = self.executor, self.o.timeout
        todo = [c for c in cands if c.program is not None]
        publics = [
            arun_public(c.program, self.entry, self.tests, sandbox=box, timeout=timeout)
            for c in todo
            if c.program is not None
        ]
        behaviours = [
            abehaviour_run(c.program, self.entry, self.inputs, sandbox=box, timeout=timeout)
            for c in todo
            if c.program is not None and self.behave
        ]
        done = await asyncio.gather(*publics, *behaviours)
        pubs, behs = done[: len(publics)], done[len(publics) :]
        for c, p in zip(todo, pubs, strict=True):
            assert isinstance(p, PublicRun)
            c.public = p
        for c, b in zip(todo, behs, strict=False):
            assert isinstance(b, BehaviourRun)
            c.behaviour = b
        seconds = [r.execution.seconds for r in done if r.execution is not None]
        self.ledger.record_programs(seconds)
        return len(seconds)

    def _leader(self) -> dict[str, Any]:
        clusters = _clusters(self.cands, self.o.select) if self.clustered else []
        chosen, _ = self._select(clusters)
        return {"clusters": [cl.size for cl in clusters], "leader": chosen}

    def _settled(self, *, debugging: bool = False) -> str | None:
        """Why more samples (or fixes, when ``debugging``) cannot change the selection
        much (module doc, step 6); ``None`` while they can."""
        n_public, select = len(self.tests), self.o.select
        first = next((c for c in self.cands if c.program is not None), None)
        if select == "first":
            if not debugging:
                return "first_program" if first is not None else None
            ok = first is not None and n_public > 0 and first.passed == n_public
            return "first_program_passes" if ok else None
        if n_public == 0:
            return None
        if select == "public":
            ok = any(c.program and c.passed == n_public for c in self.cands)
            return "public_passed" if ok else None
        clusters = _clusters(self.cands, select)
        if not clusters:
            return None
        largest = max(cl.size for cl in clusters)
        top = [cl for cl in clusters if cl.size == largest]
        if len(top) == 1 and top[0].passed == n_public:
            return "largest_cluster_passes"
        return None

    def _select(self, clusters: Sequence[_Cluster]) -> tuple[int | None, dict[str, Any]]:
        """The chosen candidate's index and how it was chosen."""
        select, n_public = self.o.select, len(self.tests)
        coded = [i for i, c in enumerate(self.cands) if c.program is not None]
        info: dict[str, Any] = {"select": select}
        if not coded:
            info["rule"] = "no candidate wrote a program"
            return None, info
        if select == "first":
            info["rule"] = "the first program drawn"
            return coded[0], info
        if select == "public":
            best = max(self.cands[i].passed for i in coded)
            pick = next(i for i in coded if self.cands[i].passed == best)
            info["rule"] = (
                "the first program passing every public test"
                if best == n_public
                else f"no program passes every public test: the first passing {best}/{n_public}"
            )
            return pick, info
        if not clusters:  # every program fails to load: fall back to the first
            info["rule"] = "no program loads: the first program drawn"
            return coded[0], info
        top = clusters[0]
        info["rule"] = (
            "the largest behaviour cluster"
            if select == "majority"
            else f"the largest behaviour cluster among those passing {top.passed}/{n_public} "
            "public tests"
        )
        return top.rep, info

    async def _pairwise(
        self, clusters: Sequence[_Cluster], chosen: int
    ) -> tuple[int, dict[str, Any]]:
        """S*'s pairwise judge between the two leading surviving clusters; any step that
        fails keeps ``chosen`` and says why."""
        surviving = [cl for cl in clusters if cl.passed == clusters[0].passed] if clusters else []
        if len(surviving) < 2:
            return chosen, {"used": False, "why": "fewer than two surviving clusters"}
        a, b = self.cands[surviving[0].rep], self.cands[surviving[1].rep]
        assert a.code is not None and b.code is not None
        assert a.program is not None and b.program is not None
        info: dict[str, Any] = {"used": False, "a": surviving[0].rep, "b": surviving[1].rep}
        asked = await self._ask(
            distinguish_problem(self.problem.prompt, self.entry, a.code, b.code)
        )
        if asked is None:
            return chosen, {**info, "why": "budget"}
        calls = [c for c in parse_calls(asked, self.entry) if len(c) <= MAX_INPUT_CHARS]
        calls = calls[:PAIRWISE_INPUTS]
        info["inputs"] = calls
        if not calls:
            return chosen, {**info, "why": "no input parsed from the model's reply"}
        box, timeout = self.executor, self.o.timeout
        runs = await asyncio.gather(
            abehaviour_run(a.program, self.entry, calls, sandbox=box, timeout=timeout),
            abehaviour_run(b.program, self.entry, calls, sandbox=box, timeout=timeout),
        )
        self.ledger.record_programs([r.execution.seconds for r in runs if r.execution])
        diff = [
            (call, x, y)
            for call, x, y in zip(calls, runs[0].signature, runs[1].signature, strict=True)
            if x != y
        ]
        if not diff:
            return chosen, {**info, "why": "the programs agree on every input"}
        call, out_a, out_b = diff[0]
        info.update(call=call, output_a=out_a, output_b=out_b)
        judged = await self._ask(
            judge_problem(self.problem.prompt, call, a.code, out_a, b.code, out_b)
        )
        if judged is None:
            return chosen, {**info, "why": "budget"}
        verdict = parse_verdict(judged)
        info["verdict"] = verdict
        if verdict is None:
            return chosen, {**info, "why": "unparsable verdict"}
        info["used"] = True
        return (surviving[0].rep if verdict == "A" else surviving[1].rep), info

    async def _ask(self, problem: Problem) -> str | None:
        """One greedy completion of ``problem`` (``None`` if the budget cannot pay)."""
        template = GenerationRequest((), temperature=0.0, top_p=1.0, seed=self.o.seed)
        ids = self.gen.render(problem)
        reqs = fit_step(
            self.ledger,
            self.gen,
            [(ids, 1, PAIRWISE_MAX_TOKENS)],
            template,
            min_tokens=min(64, PAIRWISE_MAX_TOKENS),
        )
        if not reqs:
            return None
        out = (await self.ledger.generate(self.gen, reqs))[0]
        self.trace.append(
            {
                "phase": "pairwise",
                "generated_tokens": out.completions[0].num_tokens,
                "cached_tokens": out.cached_tokens,
            }
        )
        return out.completions[0].text
