"""Public tests given by a caller (``solve(tests=...)``, ``serve``, ``mcp``), read into
``PublicTest`` values and checked at the boundary.

A caller (often an agent) writes a test in one of three forms:

- a call compared with its expected value: ``"add(2, 3) == 5"`` (also ``5 == add(2, 3)``,
  and ``add(0, 0) is None`` / ``is True`` / ``is False``);
- an assert statement: ``"assert add(2, 3) == 5"`` (an assert message is ignored);
- doctest text: ``">>> add(2, 3)\\n5"``, read by ``code_tests.parse_examples`` exactly as a
  docstring example is (multi-line outputs, ``Traceback`` + exception, blank = ``None``).

A test must call the entry point, may use builtins but no other names (tests run on their
own, so the arguments are literals: ``sorted(f([3, 1]))`` is fine, ``f(x)`` is not), and its
expected value must be a Python literal. Everything wrong is a ``ConfigError`` that says
which test and the fix; nothing is guessed. Only ``ast`` reads the text here: the tests run
in the sandbox with the candidates (``code_tests.run_public_tests``).
"""

from __future__ import annotations

import ast
import builtins
import keyword
from collections.abc import Sequence

from ttscale.errors import ConfigError, describe
from ttscale.types import PublicTest
from ttscale.verifiers.code_tests import literal_source_of, parse_examples

__all__ = ["MAX_TEST_CHARS", "MAX_TESTS", "check_entry_point", "parse_test", "parse_tests"]

MAX_TESTS = 64
"""Most public tests one request may carry (each runs once per candidate program)."""
MAX_TEST_CHARS = 10_000
"""Longest test text (call plus expected value)."""

_BUILTINS = frozenset(dir(builtins))
_FORMS = "write it as 'add(2, 3) == 5', 'assert add(2, 3) == 5' or doctest text '>>> add(2, 3)\\n5'"


def check_entry_point(entry_point: object) -> str:
    """``entry_point`` if it can name a function, else a ``ConfigError`` naming the fix."""
    if (
        not isinstance(entry_point, str)
        or not entry_point.isidentifier()
        or keyword.iskeyword(entry_point)
    ):
        raise ConfigError(
            f"entry_point must be the name of the function to write (a Python identifier, "
            f"e.g. 'add'); got {describe(entry_point)}"
        )
    return entry_point


def parse_test(text: str, entry_point: str | None = None) -> PublicTest:
    """One test from text (see the module doc for the forms).

    Args:
        text: The test.
        entry_point: The function under test; ``None`` takes the one non-builtin function
            the test calls.

    Raises:
        ConfigError: Empty or too long, not one of the forms, no call of the entry point,
            names the sandbox would not know, or an expected value that is not a literal.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a test must be a string or a PublicTest; got {describe(text)}")
    if entry_point is not None:
        check_entry_point(entry_point)
    source = text.strip()
    if not source:
        raise ConfigError(f"the test is empty; {_FORMS}")
    if len(source) > MAX_TEST_CHARS:
        raise ConfigError(
            f"the test is {len(source)} characters, over the limit of {MAX_TEST_CHARS}; "
            f"use smaller arguments"
        )
    if source.startswith(">>>"):
        return _doctest(source, entry_point)
    if source.startswith("assert") and not source[6:7].isidentifier():
        return _assert(source, entry_point)
    node = _parse(source, "eval", source)
    assert isinstance(node, ast.Expression)
    return _comparison(node.body, entry_point, source)


def parse_tests(
    tests: Sequence[PublicTest | str] | None, entry_point: str | None = None
) -> tuple[str | None, tuple[PublicTest, ...]]:
    """Read and check a caller's tests: ``(entry_point, tests)``.

    The entry point is the one given, else the function every test calls (``None`` when
    there are no tests: the strategy infers it from the prompt). ``PublicTest`` values are
    checked as strings are; duplicates are dropped.

    Raises:
        ConfigError: Not a list, more than ``MAX_TESTS``, a bad test (its index and text in
            the message), tests calling different functions, or a bad ``entry_point``.
    """
    if entry_point is not None:
        check_entry_point(entry_point)
    if tests is None:
        return entry_point, ()
    if isinstance(tests, str | bytes | PublicTest) or not isinstance(tests, Sequence):
        raise ConfigError(
            f"tests must be a list of strings or PublicTest values, got {describe(tests)}; "
            f"wrap one test in a list: tests=['add(2, 3) == 5']"
        )
    if len(tests) > MAX_TESTS:
        raise ConfigError(
            f"{len(tests)} tests given, over the limit of {MAX_TESTS}; pass the "
            f"{MAX_TESTS} most telling ones"
        )
    parsed: dict[PublicTest, None] = {}
    entries: dict[str, int] = {}
    for i, test in enumerate(tests):
        try:
            if isinstance(test, PublicTest):
                one = _checked(test, entry_point)
            else:
                one = parse_test(test, entry_point)
        except ConfigError as exc:
            shown = test.call if isinstance(test, PublicTest) else test
            raise ConfigError(f"tests[{i}] ({_short(shown)}): {exc}") from None
        parsed.setdefault(one)
        entries.setdefault(_entry_of(one.call, entry_point), i)
    if len(entries) > 1:
        where = ", ".join(f"{name!r} (tests[{i}])" for name, i in entries.items())
        raise ConfigError(
            f"the tests call different functions: {where}; test one function per call, "
            f"or name it with entry_point="
        )
    return (entry_point or next(iter(entries), None)), tuple(parsed)


# ---- the forms --------------------------------------------------------------------------


def _doctest(source: str, entry_point: str | None) -> PublicTest:
    lines = source.split("\n")
    if sum(1 for line in lines if line.lstrip().startswith(">>>")) > 1:
        raise ConfigError("one example per test; pass each '>>>' example as its own test")
    call_lines = [lines[0][3:].strip()]
    call_lines += [ln.lstrip()[3:].strip() for ln in lines[1:] if ln.lstrip().startswith("...")]
    call = "\n".join(call_lines)
    expr = _parse(call, "eval", source)
    assert isinstance(expr, ast.Expression)
    entry = entry_point or _callee(expr.body, source)
    if "'''" in source:
        raise ConfigError("doctest text with ''' cannot be read; use the 'f(x) == y' form")
    body = "\n".join("    " + line for line in source.split("\n"))
    found = parse_examples(f"def {entry}():\n    r'''\n{body}\n    '''\n", entry)
    if len(found) != 1:
        raise ConfigError(
            f"cannot read this doctest as a call of {entry!r} and its expected value; "
            f"put the call after '>>> ' and the value (a Python literal) on the next line"
        )
    return _checked(found[0], entry)


def _assert(source: str, entry_point: str | None) -> PublicTest:
    tree = _parse(source, "exec", source)
    assert isinstance(tree, ast.Module)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise ConfigError(f"expected one assert statement; {_FORMS}")
    return _comparison(tree.body[0].test, entry_point, source)


def _comparison(node: ast.expr, entry_point: str | None, source: str) -> PublicTest:
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        entry = entry_point or "add"
        raise ConfigError(
            f"a test compares one call with its expected value; {_FORMS} (a bare truth test "
            f"such as 'assert {entry}(...)' checks truthiness, not a value: write "
            f"'{entry}(...) == True')"
        )
    left, op, right = node.left, node.ops[0], node.comparators[0]
    if not isinstance(op, ast.Eq | ast.Is):
        raise ConfigError(f"use '==' to compare the call with its expected value; {_FORMS}")
    if not _has_call(left) and _has_call(right) and isinstance(op, ast.Eq):
        left, right = right, left  # `5 == add(2, 3)`
    if isinstance(op, ast.Is) and not (
        isinstance(right, ast.Constant) and right.value in (None, True, False)
    ):
        raise ConfigError("'is' compares only with None, True or False; use '==' for values")
    entry = entry_point or _callee(left, source)
    return _checked(PublicTest(ast.unparse(left), _literal(right)), entry)


# ---- checks -----------------------------------------------------------------------------


def _checked(test: PublicTest, entry_point: str | None) -> PublicTest:
    """``test`` with its call and expected value checked (see the module doc)."""
    if not isinstance(test.call, str) or not test.call.strip():
        raise ConfigError(f"the call must be Python source; got {describe(test.call)}")
    size = len(test.call) + len(test.expected or "") + len(test.raises or "")
    if size > MAX_TEST_CHARS:
        raise ConfigError(
            f"the test is {size} characters, over the limit of {MAX_TEST_CHARS}; use smaller "
            f"arguments"
        )
    expr = _parse(test.call.strip(), "eval", test.call)
    assert isinstance(expr, ast.Expression)
    entry = entry_point or _callee(expr.body, test.call)
    if not any(_is_call_of(n, entry) for n in ast.walk(expr.body)):
        raise ConfigError(
            f"the test does not call the entry point {entry!r}; call the function the "
            f"program must define, or name it with entry_point="
        )
    unknown = sorted(
        {n.id for n in ast.walk(expr.body) if isinstance(n, ast.Name)} - _BUILTINS - {entry}
    )
    if unknown:
        raise ConfigError(
            f"the test uses names the sandbox does not know ({', '.join(unknown)}); a test "
            f"runs on its own, so pass literal arguments, e.g. {entry}([1, 2], 3)"
        )
    if test.raises is not None:
        if not isinstance(test.raises, str) or not test.raises.isidentifier():
            raise ConfigError(f"raises must name an exception class; got {describe(test.raises)}")
        if test.expected is not None:
            raise ConfigError("a test expects a value or an exception, not both")
        return PublicTest(ast.unparse(expr.body), None, test.raises)
    if not isinstance(test.expected, str):
        raise ConfigError(
            f"a PublicTest needs expected, the value as Python source (e.g. '5', \"'abc'\", "
            f"'[1, 2]'), or raises, an exception name; got expected={describe(test.expected)}"
        )
    value = _parse(test.expected.strip(), "eval", test.expected)
    assert isinstance(value, ast.Expression)
    return PublicTest(ast.unparse(expr.body), _literal(value.body))


def _literal(node: ast.expr) -> str:
    """Canonical source of a literal expected value (``repr`` when it round-trips)."""
    source = literal_source_of(node)
    if source is None:
        raise ConfigError(
            f"the expected value {_short(ast.unparse(node))} is not a Python literal; give "
            f"the value itself (numbers, strings, lists, tuples, dicts, sets, None, booleans)"
        )
    return source


def _parse(source: str, mode: str, shown: str) -> ast.AST:
    try:
        return ast.parse(source, mode=mode)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        why = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
        raise ConfigError(f"not valid Python ({why}); {_FORMS}") from None


def _callee(node: ast.expr, source: str) -> str:
    """The one non-builtin function ``node`` calls (the entry point when none is named)."""
    names = sorted(
        {
            n.func.id
            for n in ast.walk(node)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id not in _BUILTINS
        }
    )
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError(f"the test calls no function to test; {_FORMS}")
    raise ConfigError(
        f"the test calls {', '.join(names)}; name the function under test with entry_point="
    )


def _entry_of(call: str, entry_point: str | None) -> str:
    return entry_point or _callee(ast.parse(call, mode="eval").body, call)


def _is_call_of(node: ast.AST, entry: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry


def _has_call(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id not in _BUILTINS
        for n in ast.walk(node)
    )


def _short(text: object, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
