"""Program-aided answers: the code in a model's reply, and the answer its program printed.

Program-of-Thought strategies ask the model for one Python program that prints the final
answer; a sandbox (elsewhere) runs it. This module does the two text steps around the run:

- ``extract_program`` / ``extract_code_blocks``: the fenced Python block(s) in the reply;
- ``printed_answer`` / ``normalize_printed``: the program's stdout turned into an answer
  string that ``answers_equal`` (math-verify) groups and grades like a MATH gold answer.

Printed sympy/Python values (``13/15``, ``11*sqrt(2)``, ``Matrix([[1, 0], [0, 1]])``,
``[{x: 3}]``, ``Interval.Ropen(2, oo)``, ``(-1.0, 6.0)``) are parsed with sympy's
``parse_expr`` and rendered as LaTeX. The line is untrusted model output parsed inside the
library's process, and ``parse_expr`` ends in Python's ``eval``. So: lines with ``__``,
``lambda``, ``import``, ``os.`` or ``;`` are refused; the line's Python syntax tree must be
a plain value (numbers, names, arithmetic, containers, calls of plain names without
keywords; no attributes bar ``Interval.Ropen`` & co., no strings, subscripts or
comprehensions); a bound on the size of every number in it, computed on that tree before
sympy sees it, refuses power towers (``9**9**9**9``), huge powers and ``exp`` of huge
arguments; and ``parse_expr`` runs with a small allow-listed namespace and no
``__builtins__``.

Floats are not rationalised: math-verify already equates a full-precision float with the
exact value (``0.333333333333333`` == ``\\frac{1}{3}``, ``0.785398163397448`` ==
``\\frac{\\pi}{4}``) while keeping short decimals apart (``3.14159`` != ``\\pi``), so
guessing ``1/3`` or ``pi`` from digits would only add false matches. Only integer-valued
floats become integers (``11.0000000000000`` -> ``11``, ``-0.0`` -> ``0``).
"""

from __future__ import annotations

import ast
import math
import re
import textwrap
from typing import Any

from ttscale.verifiers.answers import extract_answer

__all__ = ["extract_code_blocks", "extract_program", "normalize_printed", "printed_answer"]

MAX_LINE = 500
"""Longest printed line considered an answer; longer output is not a final answer."""
MAX_RENDERED = 1000
"""Longest rendered answer returned (LaTeX of a parsed line can be longer than the line)."""
MAX_EXPONENT = 10_000
"""Largest numeric exponent evaluated."""
MAX_POWER_DIGITS = 4_000
"""Largest estimated digit count of an exact numeric power (Python prints at most 4300)."""

_PYTHON_TAGS = frozenset({"python", "py", "python3", "py3", "sympy", "ipython"})
_FENCE = re.compile(r"^\s*(?P<ticks>`{3,})\s*(?P<tag>[^`\s]*)[^`]*$")

# Lines that are errors or say "no value", whatever follows them.
_GARBAGE = re.compile(
    r"(?i)^(?:traceback\b|error\b|exception\b|warning\b|\w*(?:error|exception|warning)\s*:"
    r"|none$|null$|[+-]?nan$|zoo$|timeout\b|timed out\b|killed\b)"
)
# A line containing any of these is refused outright, whatever else it says.
_FORBIDDEN = ("__", "lambda", "import", "os.", ";")
# A power whose exponent starts with a number raised to a power: 9**9**9, 2^(3^4), 2^{2^{9}}.
_TOWER = re.compile(r"(?:\*\*|\^)\s*[({\s+-]*[\d.]+\s*[)}\s]*(?:\*\*|\^)")
_LATEX_SCRIPT = re.compile(r"[\^_]\{")  # x^{2}, a_{n}: LaTeX without a backslash
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# "The answer is 5", "Answer: 5", "x = 5", "Final result: 5": a wordy prefix, then the value.
_PREFIX = re.compile(
    r"^(?P<words>[A-Za-z][\w ()',-]*?)\s*(?:\bis\b\s*:?|:|(?<![=<>!])=(?!=))\s*(?P<rest>.+)$"
)
# print(a, b) writes "a b": several plain numbers separated by spaces.
_SPACED_NUMBERS = re.compile(r"^[+-]?\d+(?:\.\d+)?(?:\s+[+-]?\d+(?:\.\d+)?)+$")
_DEGREES = re.compile(r"\s*(?:°|\^\s*\\circ|\s+degrees?)\s*$")


def extract_code_blocks(text: str) -> list[str]:
    """All closed Python fenced blocks in ``text``, in order, dedented.

    A block counts when its fence is tagged ``python``/``py`` (any case) or when it is
    untagged and its content parses as a Python program that does something (a statement
    or a call): an untagged block holding only a value such as ``5`` or ``13/15`` is
    printed output, not code, although it parses. A tag alone on the fence's next line
    (```` ``` ```` then ``python``: small coders write it so) is read as the tag. Blocks
    tagged with another language (``output``, ``bash``, ``text``) never count. A fence
    left open at the end (the reply was cut off) yields no block. ``\\r\\n`` line ends are accepted.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        ticks, tag = m.group("ticks"), m.group("tag").lower().strip("{}.")
        body: list[str] = []
        closed = False
        j = i + 1
        while j < len(lines):
            line = lines[j]
            if line.strip() == ticks or (line.strip().startswith(ticks) and not line.strip("` ")):
                closed = True
                break
            if line.rstrip().endswith(ticks) and not line.strip().startswith("`"):
                body.append(line.rstrip()[: -len(ticks)])  # "print(x)```" closes the block
                closed = True
                break
            body.append(line)
            j += 1
        if not closed:
            break
        if not tag and body and body[0].strip().lower() in _PYTHON_TAGS:
            tag = body.pop(0).strip().lower()  # "```\npython\n...": the tag on its own line
        code = textwrap.dedent("\n".join(body)).strip("\n")
        if code.strip() and (tag in _PYTHON_TAGS or (not tag and _looks_like_program(code))):
            blocks.append(code)
        i = j + 1
    return blocks


def extract_program(text: str) -> str | None:
    """The last closed Python fenced block in a model's reply (see ``extract_code_blocks``).

    Returns ``None`` when the reply has no closed Python block.
    """
    blocks = extract_code_blocks(text)
    return blocks[-1] if blocks else None


def _looks_like_program(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(
        not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call) for node in tree.body
    )


def printed_answer(stdout: str) -> str | None:
    """The answer a program printed: its last non-empty line, normalised for math-verify.

    A value that Python prints over several lines (a numpy array, a long list) is joined
    back from the lines above while its brackets are unbalanced. Earlier lines are never
    used otherwise: a program that printed a value and then failed gives ``None``, not its
    intermediate value.

    Returns:
        The answer (see ``normalize_printed``), or ``None`` when the output is empty or its
        last line is unusable (an error, ``None``, ``nan``, too long).
    """
    if not isinstance(stdout, str):
        return None
    lines = [ln.strip() for ln in stdout.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines:
        return None
    last = lines[-1]
    k = len(lines) - 1
    while _depth(last) < 0 and k > 0 and len(last) <= MAX_LINE:
        k -= 1
        last = f"{lines[k]} {last}"
    if _depth(last) != 0:
        last = lines[-1]
    return normalize_printed(last)


def _depth(text: str) -> int:
    return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def normalize_printed(line: str) -> str | None:
    """One printed line as an answer string that math-verify grades; ``None`` if unusable.

    Rules, in order:

    - empty, longer than ``MAX_LINE``, an error/traceback line, ``None``, ``nan``, ``zoo``
      -> ``None``;
    - ``$...$``/``\\(...\\)`` removed; ``\\boxed{X}`` -> ``X``; other LaTeX returned as is;
    - a wordy prefix dropped: ``The answer is 5``, ``Answer: 5``, ``x = 5`` -> ``5``;
      ``30°``/``30 degrees`` -> ``30``; ``1,000`` kept as written (math-verify reads it);
      ``-2 3`` (``print(a, b)``) -> ``-2, 3``;
    - anything else is parsed with sympy (restricted, see the module doc) and rendered as
      LaTeX: integer-valued floats become integers; a one-element list/tuple/set becomes
      its element; a dict (``solve(..., dict=True)``) becomes its value, or the tuple of
      its values; lists and sets become ``a, b`` (math-verify reads ``[a, b]`` as an
      interval); tuples stay ``(a, b)``; matrices become ``pmatrix``; ``I`` is ``i``;
      ``True``/``False`` stay text; results containing ``nan``/``zoo`` -> ``None``;
      ``np.float64(x)``, ``Fraction(a, b)``, ``Decimal('x')``, ``mpf('x')`` reprs are read
      as numbers;
    - text that does not parse (``5 cm``, ``no solution``) is returned cleaned, as text;
    - a numeric power tower (``9**9**9**9``) or a power too big to evaluate -> ``None``.

    Never raises.
    """
    try:
        return _normalize(line)
    except Exception:  # untrusted text: any sympy/parse failure means "no usable answer"
        return None


def _normalize(line: str) -> str | None:
    if not isinstance(line, str):
        return None
    text = line.strip()
    if not text or len(text) > MAX_LINE or _GARBAGE.match(text):
        return None
    if "\n" in text or any(bad in text for bad in _FORBIDDEN):
        return None
    if "\\boxed" in text or "\\fbox" in text:
        boxed = extract_answer(text, fallbacks=False)
        return _normalize(boxed) if boxed and boxed != text else None
    for _ in range(3):
        stripped = _strip_wrappers(text)
        m = _PREFIX.match(stripped)
        if m and len(m.group("words").split()) <= 8:
            stripped = m.group("rest").strip()
        if stripped == text:
            break
        text = stripped
    text = _DEGREES.sub("", text).rstrip(".").strip()
    if not text or _GARBAGE.match(text) or _TOWER.search(text):
        return None
    if "\\" in text or _LATEX_SCRIPT.search(text) or _THOUSANDS.match(text):
        return text  # already LaTeX, or a thousands separator math-verify reads
    if text in ("True", "False"):
        return text
    if _SPACED_NUMBERS.match(text):
        text = "[" + ", ".join(text.split()) + "]"
    # Quotes only come from Python reprs ({'x': 3}); unquoted, a string is a symbol.
    text = _NUMPY_SCALAR.sub(r"\1", text).replace("'", "").replace('"', "")
    safe = _safe_syntax(text)
    if safe is None:  # not Python: "5 cm", "no solution", "2x"
        return text if _plain_text(text) else None
    value = _parse(text) if safe else None
    if value is None:
        return None
    rendered = _render(value)
    if rendered is None or len(rendered) > MAX_RENDERED:
        return None
    return rendered


def _strip_wrappers(text: str) -> str:
    text = text.strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left) : -len(right)].strip()
    return text


def _plain_text(text: str) -> bool:
    """Unparsed text is kept only when it is harmless for math-verify to parse."""
    return "**" not in text and "^" not in text and "!" not in text


_CONTAINERS = (ast.List, ast.Tuple, ast.Set, ast.Dict)
_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Call, ast.Name,
    ast.Constant, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, *_CONTAINERS,
)  # fmt: skip
# Names the parser needs in its namespace but a printed line may not call.
_NOT_CALLABLE = frozenset({"Add", "Mul", "Pow", "Function", "Symbol", "pi", "E", "I", "oo"})
# Most positional arguments a call may take: Float(pi, 10**7) or Matrix(n, n, Max) would
# compute for minutes; a printed matrix is always Matrix([[...]]).
_MAX_ARGS = {"Float": 1, "Integer": 1, "Matrix": 1, "ImmutableMatrix": 1, "Rational": 2}
_MAX_ARGS |= {"Decimal": 1, "mpf": 1, "Fraction": 2}
# numpy 2 reprs its scalars inside printed containers: [np.float64(0.5), np.int64(2)].
_NUMPY_SCALAR = re.compile(r"\b(?:np|numpy)\.(?:float|int|uint|complex|bool_)\d*\(([^()]*)\)")
_INTERVAL_METHODS = frozenset({"Ropen", "Lopen", "open"})


class _TooBig(Exception):
    """A numeric subexpression too large to evaluate."""


def _safe_syntax(text: str) -> bool | None:
    """Whether ``text`` is a plain value expression that is safe to hand to ``parse_expr``.

    ``None`` when it is not Python syntax at all (it may still be a readable answer, like
    ``5 cm``). Allowed: numbers, names, arithmetic, comparisons, container literals, and
    calls of plain names (or ``Interval.Ropen``/``Lopen``/``open``) without keywords.
    Refused: attributes, subscripts, comprehensions, strings, arithmetic on containers
    (``(1,)*10**9`` would build a huge tuple), and anything whose numbers could grow past
    ``MAX_POWER_DIGITS`` digits or whose exponents pass ``MAX_EXPONENT`` (``_digits``).
    """
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            ok = isinstance(node.value, ast.Name) and node.value.id == "Interval"
            if not ok or node.attr not in _INTERVAL_METHODS:
                return False
        elif not isinstance(node, _NODES):
            return False
        elif isinstance(node, ast.Constant) and not isinstance(node.value, int | float | complex):
            return False
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name is None or name in _NOT_CALLABLE or node.keywords:
                return False
            if len(node.args) > _MAX_ARGS.get(name, 8):
                return False
        elif isinstance(node, ast.BinOp) and (
            isinstance(node.left, _CONTAINERS) or isinstance(node.right, _CONTAINERS)
        ):
            return False
    try:
        _digits(tree.body)
    except _TooBig:
        return False
    return True


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
        return f"{node.func.value.id}.{node.func.attr}"
    return None


def _digits(node: ast.AST) -> float:
    """Upper bound on the decimal digits of ``node``'s value (log10 of its size, >= 0).

    Names count as small (``pi``, ``E``, or a symbol that stays symbolic); ``a**b`` and
    ``exp(b)`` need ``b``'s size, which must stay under ``MAX_EXPONENT``. Raises
    ``_TooBig`` as soon as a bound passes ``MAX_POWER_DIGITS``.
    """
    if isinstance(node, ast.Constant):
        size = abs(node.value)
        digits = math.log10(size) if size > 1 else 0.0
    elif isinstance(node, ast.Name):
        digits = 0.5
    elif isinstance(node, ast.UnaryOp):
        digits = _digits(node.operand)
    elif isinstance(node, ast.BinOp):
        left, right = _digits(node.left), _digits(node.right)
        if isinstance(node.op, ast.Pow | ast.BitXor):  # convert_xor: a^b is a**b
            digits = left * _exponent(right)
        elif isinstance(node.op, ast.Mult):
            digits = left + right
        elif isinstance(node.op, ast.Add | ast.Sub):
            digits = max(left, right) + 0.31
        else:
            digits = left
    elif isinstance(node, ast.Call):
        args = [_digits(arg) for arg in node.args]
        if _call_name(node) == "exp" and args:
            digits = math.log10(math.e) * _exponent(args[0])
        else:
            digits = sum(args)
    else:  # containers, comparisons, boolean operators: their largest part
        parts = [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.expr)]
        if isinstance(node, ast.Dict):
            parts = [n for n in (*node.keys, *node.values) if n is not None]
        digits = max((_digits(n) for n in parts), default=0.0)
    if not digits <= MAX_POWER_DIGITS:  # also catches nan/inf
        raise _TooBig
    return digits


def _exponent(digits: float) -> float:
    """Size of an exponent with ``digits`` digits; ``_TooBig`` past ``MAX_EXPONENT``."""
    if digits > math.log10(MAX_EXPONENT):
        raise _TooBig
    return 10.0**digits


def _namespace() -> dict[str, Any]:
    """Fresh allow-listed globals for ``parse_expr`` (it mutates them); no builtins."""
    import sympy

    names = (
        "Symbol Function Integer Float Rational Add Mul Pow Eq Ne Lt Le Gt Ge And Or Not "
        "sqrt cbrt root exp log ln sin cos tan cot sec csc asin acos atan acot sinh cosh tanh "
        "Abs sign floor ceiling re im arg conjugate Min Max pi E I oo zoo nan Matrix "
        "ImmutableMatrix Interval Union Intersection Complement FiniteSet EmptySet"
    ).split()
    ns: dict[str, Any] = {name: getattr(sympy, name) for name in names}
    ns.update(
        __builtins__={},
        exp1=sympy.E,
        inf=sympy.oo,
        infinity=sympy.oo,
        Reals=sympy.S.Reals,
        Integers=sympy.S.Integers,
        Naturals=sympy.S.Naturals,
        Complexes=sympy.S.Complexes,
        MutableDenseMatrix=sympy.Matrix,
        ImmutableDenseMatrix=sympy.ImmutableMatrix,
        Fraction=sympy.Rational,  # reprs inside printed lists: [Fraction(1, 3)], ...
        Decimal=sympy.Float,
        mpf=sympy.Float,
    )
    return ns


def _parse(text: str) -> Any:
    """Parsed, evaluated value of ``text`` (a sympy object or Python container), or ``None``.

    Only called on text that ``_safe_syntax`` accepted.
    """
    from sympy.parsing.sympy_parser import auto_number, auto_symbol, convert_xor, parse_expr

    transformations = (auto_symbol, auto_number, convert_xor)
    try:
        return parse_expr(text, global_dict=_namespace(), transformations=transformations)
    except Exception:  # TokenError, TypeError, ValueError from sympy on odd input
        return None


def _render(value: Any) -> str | None:
    """LaTeX of a parsed value, shaped the way MATH gold answers are written."""
    import sympy

    if isinstance(value, bool) or value is None:
        return None if value is None else str(value)
    if isinstance(value, dict):
        items = list(value.values())
        return _render(items[0]) if len(items) == 1 else _render(tuple(items))
    if isinstance(value, list | set | frozenset | sympy.FiniteSet):
        items = list(value.args if isinstance(value, sympy.FiniteSet) else value)
        if isinstance(value, set | frozenset | sympy.FiniteSet):
            items = sorted(items, key=sympy.default_sort_key)
        if not items:
            return None
        parts = [_render(tuple(v) if isinstance(v, list) else v) for v in items]
        if any(p is None for p in parts):
            return None
        return parts[0] if len(parts) == 1 else ", ".join(p for p in parts if p is not None)
    if isinstance(value, tuple | sympy.Tuple):
        parts = [_render(v) for v in value]
        if not parts or any(p is None for p in parts):
            return None
        return parts[0] if len(parts) == 1 else "(" + ", ".join(p for p in parts if p) + ")"
    if isinstance(value, sympy.logic.boolalg.BooleanAtom):
        return str(bool(value))
    if isinstance(value, sympy.MatrixBase):
        rows = [" & ".join(_render(e) or "" for e in value.row(r)) for r in range(value.rows)]
        return "\\begin{pmatrix} " + " \\\\ ".join(rows) + " \\end{pmatrix}"
    if isinstance(value, int | float):
        value = sympy.sympify(value)
    if not isinstance(value, sympy.Basic):
        return None
    if value.has(sympy.nan, sympy.zoo):
        return None
    value = value.xreplace(
        {f: sympy.Integer(int(f)) for f in value.atoms(sympy.Float) if _integral(f)}
    )
    latex = sympy.latex(value)
    if value.has(sympy.I):
        latex = re.sub(r"(?<=[\d}])\s+i\b", "i", latex)  # math-verify reads "2i", not "2 i"
    return latex


def _integral(f: Any) -> bool:
    return bool(f.is_finite) and abs(f) < 1e15 and bool((f - int(f)).is_zero)
