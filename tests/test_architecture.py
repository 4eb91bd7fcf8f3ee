"""ARCHITECTURE.md is enforced: rooms, import directions, no module-level import loops, no
private imports across packages.

The module graph is read from the source with ``ast`` (no imports executed). Every import
counts, including those inside functions, except ``if TYPE_CHECKING:`` blocks (they never
run). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``. Parent packages a dotted import runs implicitly are not edges (as in
import-linter).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each installed package's source lives (pyproject's package-dir mapping).
SOURCES = {
    "ttscale": ROOT / "ttscale",
    "ttscale.strategies": ROOT / "strategies",
    "ttscale.verifiers": ROOT / "verifiers",
    "ttscale.kernels": ROOT / "kernels",
    "ttscale.evals": ROOT / "evals",
}
SKIP_DIRS = {"data", "csrc", "__pycache__"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the installed packages."""
    found: dict[str, Path] = {}
    for pkg, root in SOURCES.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root)
            if SKIP_DIRS & set(rel.parts[:-1]) or (
                pkg == "ttscale" and rel.parts[0] in {"strategies", "verifiers", "kernels", "evals"}
            ):
                continue
            parts = [*pkg.split("."), *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    if hasattr(n, "lineno"):
                        lines.add(n.lineno)
    return lines


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, str | None]]:
    """(target module, imported name or None) for every ttscale import in ``path``."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith("ttscale")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("ttscale"):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub, None) if sub in known else (mod, a.name))
    return out


def graph() -> nx.DiGraph:
    mods = modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for target, _ in imports_of(name, path, set(mods)):
            if target != name:
                g.add_edge(name, target)
    return g


def rooms() -> list[tuple[str, list[str], set[str]]]:
    """(room, module prefixes, rooms it may import) from ARCHITECTURE.md's rooms table."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    out = []
    for line in text.splitlines():
        m = re.match(r"\|\s*`([a-z]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|", line)
        if not m:
            continue
        room, where, may = m.group(1), m.group(2), m.group(4)
        prefixes = re.findall(r"`(ttscale[a-z_.]*)`", where)
        allowed = set(re.findall(r"`([a-z]+)`", may))
        out.append((room, prefixes, allowed))
    return out


def room_of(module: str, table: list[tuple[str, list[str], set[str]]]) -> str:
    best = ("", "")
    for room, prefixes, _ in table:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best[1]):
                best = (room, p)
    if not best[0]:
        raise AssertionError(f"{module} is in no room of ARCHITECTURE.md; add it to the table")
    return best[0]


def test_every_module_has_a_room() -> None:
    table = rooms()
    assert len(table) >= 8, "ARCHITECTURE.md's rooms table did not parse"
    for module in modules():
        room_of(module, table)


def test_imports_follow_the_directions() -> None:
    table = rooms()
    allowed = {room: may for room, _, may in table}
    bad = []
    for a, b in graph().edges:
        ra, rb = room_of(a, table), room_of(b, table)
        if ra != rb and rb not in allowed[ra] and "all" not in allowed[ra]:
            bad.append(f"{a} ({ra}) -> {b} ({rb})")
    assert not bad, "imports against ARCHITECTURE.md:\n" + "\n".join(sorted(bad))


def test_no_import_loops() -> None:
    loops = [sorted(c) for c in nx.strongly_connected_components(graph()) if len(c) > 1]
    assert not loops, f"module import loops (imports inside functions count): {loops}"


def test_no_private_imports_across_packages() -> None:
    mods = modules()
    bad = []
    for name, path in mods.items():
        own = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target, imported in imports_of(name, path, set(mods)):
            pkg = (
                target
                if imported is not None and target in mods and mods[target].name == "__init__.py"
                else target.rpartition(".")[0]
            )
            private_module = any(p.startswith("_") for p in target.split(".")[1:])
            private_name = (
                imported is not None and imported.startswith("_") and imported != "__version__"
            )
            if (private_module or private_name) and not own.startswith(pkg):
                bad.append(f"{name} imports {target}{'.' + imported if imported else ''}")
    assert not bad, "private imports across packages:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize(
    "source, loop",
    [
        ({"a": "import ttscale.b", "b": "def f():\n    import ttscale.a"}, True),
        (
            {
                "a": "import ttscale.b",
                "b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ttscale.a",
            },
            False,
        ),
    ],
)
def test_the_checker_sees_lazy_loops_and_skips_type_checking(
    tmp_path: Path, source: dict[str, str], loop: bool
) -> None:
    files = {}
    for mod, text in source.items():
        f = tmp_path / f"{mod}.py"
        f.write_text(text)
        files[f"ttscale.{mod}"] = f
    g = nx.DiGraph()
    for name, path in files.items():
        for target, _ in imports_of(name, path, set(files)):
            g.add_edge(name, target)
    assert any(len(c) > 1 for c in nx.strongly_connected_components(g)) is loop
