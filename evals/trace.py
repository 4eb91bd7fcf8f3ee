"""Search traces as trees: load a saved ``Result``, rebuild its search tree, measure the KV
cache it implies, and render it (``ttscale trace show RESULT.json``).

Reads the JSON that ``Result.to_json()`` / ``ttscale solve --json`` writes. Two trace shapes
hold a tree:

- step records with ``children`` (beam search, DVTS, ETS): every child's ``id``, ``parent``,
  newest ``step`` text, cumulative generated ``tokens``, ``score``, ``done`` and ``kept``
  (expanded at the next step);
- step records with ``particles`` (particle filtering): the population after extension,
  with ``resampled`` and ``ancestors``; a particle no ancestor points at was resampled away.

Node status: ``root``, ``finished`` (EOS / answer / token cap), ``kept`` (carried on),
``pruned`` (dropped by selection or resampling). ``kv_profile`` recomputes, from any such
trace, what a perfect prefix-sharing KV cache holds per step (the distinct tokens of the
tree the step's samples attend to, identical siblings once) and what a no-sharing engine
holds; the tree-search benchmark compares strategies with it on equal terms.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

import networkx as nx

from ttscale.errors import ConfigError

__all__ = ["kv_profile", "load_result", "render_text", "save", "trace_graph"]

STATUS_COLOURS = {"root": "#555555", "kept": "#2b7bb9", "finished": "#2ca02c", "pruned": "#c7c7c7"}
_RICH = {"root": "bold", "kept": "cyan", "finished": "green", "pruned": "dim strike"}
_MARK = {"root": "", "kept": "●", "finished": "✓", "pruned": "✗"}


def load_result(path: str | Path) -> dict[str, Any]:
    """The ``Result`` dict saved at ``path`` (``ttscale solve --json > RESULT.json``).

    Raises:
        ConfigError: Unreadable file, not JSON, or no ``trace``/``strategy`` keys.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read a Result JSON from {path} ({exc}); save one with "
            f"`ttscale solve ... --json > RESULT.json`"
        ) from None
    if not isinstance(data, dict) or "trace" not in data or "strategy" not in data:
        raise ConfigError(
            f"{path} is not a saved Result (no 'trace'/'strategy' keys); save "
            f"one with `ttscale solve ... --json > RESULT.json`"
        )
    return data


def _kind(trace: list[dict[str, Any]]) -> str | None:
    if trace and all("children" in r for r in trace):
        return "children"
    if trace and all("particles" in r for r in trace):
        return "particles"
    return None


def trace_graph(data: dict[str, Any]) -> nx.DiGraph:
    """The search tree of a saved ``Result``: node 0 is the prompt; node attributes
    ``step`` (text), ``tokens`` (this step's), ``cum_tokens``, ``score``, ``depth``,
    ``status`` and ``extra`` (strategy-specific fields such as ``alloc``, ``weight``).

    Raises:
        ConfigError: The trace holds no tree (best-of-N, PDR, ...), naming what does.
    """
    trace = data.get("trace") or []
    kind = _kind(trace)
    if kind is None:
        raise ConfigError(
            f"the trace of strategy {data.get('strategy')!r} holds no search "
            f"tree; `trace show` renders beam_search, dvts, particle_filter and "
            f"ets traces"
        )
    prompt_len = (data.get("extras") or {}).get("prompt_len")
    g = nx.DiGraph(strategy=data.get("strategy"), answer=data.get("answer"), prompt_len=prompt_len)
    g.add_node(
        0,
        step="prompt",
        tokens=prompt_len or 0,
        cum_tokens=0,
        score=None,
        depth=0,
        status="root",
        extra={},
    )
    base = {"id", "parent", "step", "tokens", "score", "done", "kept", "depth", "group"}
    for t, rec in enumerate(trace):
        rows = rec[kind]
        if kind == "children":
            status = {
                r["id"]: "finished" if r["done"] else "kept" if r.get("kept") else "pruned"
                for r in rows
            }
        else:
            alive = (
                {rows[a]["id"] for a in rec.get("ancestors", [])}
                if rec.get("resampled")
                else {r["id"] for r in rows}
            )
            status = {
                r["id"]: "finished" if r["done"] else "kept" if r["id"] in alive else "pruned"
                for r in rows
            }
        for r in rows:
            v = r["id"]
            if v in g and g.nodes[v]["status"] != "root":
                if status[v] == "kept":  # a resampled copy survived this time
                    g.nodes[v]["status"] = (
                        "kept" if g.nodes[v]["status"] != "finished" else "finished"
                    )
                continue
            parent = r["parent"] if r["parent"] is not None else 0
            if parent not in g:  # a parent recorded in no step (should not happen): attach
                g.add_node(
                    parent,
                    step="?",
                    tokens=0,
                    cum_tokens=0,
                    score=None,
                    depth=t,
                    status="kept",
                    extra={},
                )
                g.add_edge(0, parent)
            cum = int(r["tokens"])
            g.add_node(
                v,
                step=r.get("step", ""),
                cum_tokens=cum,
                tokens=cum - g.nodes[parent]["cum_tokens"],
                score=r.get("score"),
                depth=g.nodes[parent]["depth"] + 1,
                status=status[v],
                extra={k: x for k, x in r.items() if k not in base},
            )
            g.add_edge(parent, v)
    return g


def kv_profile(data: dict[str, Any], prompt_len: int | None = None) -> list[dict[str, Any]]:
    """Per step of a tree trace: ``kv_tree`` (distinct tokens of the prompt, the expanded
    paths and the new nodes, identical siblings once), ``kv_no_sharing`` (every new sample
    holding its whole sequence), ``prompt_tokens`` (sum over the expanded distinct prefixes)
    and the trace's ``cached_tokens`` where recorded. ``prompt_len`` defaults to the
    result's ``extras.prompt_len`` (0 if absent: generated tokens only)."""
    g = trace_graph(data)
    plen = prompt_len if prompt_len is not None else (g.graph.get("prompt_len") or 0)
    kind = _kind(data["trace"])
    canon: dict[int, int] = {0: 0}
    twins: dict[tuple[int, str], int] = {}
    seen: set[int] = {0}
    out = []
    for rec in data["trace"]:
        new = []
        for r in rec[kind]:
            v = r["id"]
            if v in seen:
                continue
            seen.add(v)
            p = canon[r["parent"] if r["parent"] is not None else 0]
            canon[v] = twins.setdefault((p, r.get("step", "")), v)
            new.append((v, int(r.get("copies", 1))))
        held: set[int] = {0}
        for v, _ in new:
            u = canon[v]
            while u not in held:
                held.add(u)
                u = canon[next(iter(g.predecessors(u)))]
        tree = plen + sum(g.nodes[u]["tokens"] for u in held if u != 0)
        flat = sum((plen + g.nodes[v]["cum_tokens"]) * k for v, k in new)
        parents = {canon[next(iter(g.predecessors(v)))] for v, _ in new}
        prompt = sum(plen + g.nodes[u]["cum_tokens"] for u in parents)
        out.append(
            {
                "kv_tree": tree,
                "kv_no_sharing": flat,
                "prompt_tokens": prompt,
                "cached_tokens": rec.get("cached_tokens"),
                "new_nodes": len(new),
            }
        )
    return out


def _snippet(text: str, limit: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _label(g: nx.DiGraph, v: int, limit: int) -> str:
    a = g.nodes[v]
    if a["status"] == "root":
        n = g.graph.get("prompt_len")
        return (
            f"prompt{f' ({n} tokens)' if n else ''} · {g.graph.get('strategy')} · "
            f"answer {g.graph.get('answer')!r}"
        )
    score = "-" if a["score"] is None else f"{a['score']:.3f}"
    extra = " ".join(
        f"{k}={x}"
        for k, x in a["extra"].items()
        if k in ("alloc", "weight", "cluster", "copies") and x is not None
    )
    return (
        f"{_MARK[a['status']]} #{v} score={score} +{a['tokens']}t {extra} "
        f"{a['status']}: {_snippet(a['step'], limit)}"
    ).replace("  ", " ")


def render_text(g: nx.DiGraph, *, max_chars: int = 80) -> Any:
    """A ``rich.tree.Tree`` of ``g``: scores, step tokens, status marks (✓ finished,
    ● kept, ✗ pruned), the step text cut to ``max_chars``."""
    from rich.markup import escape
    from rich.tree import Tree

    def add(parent: Any, v: int) -> None:
        node = parent.add(escape(_label(g, v, max_chars)), style=_RICH[g.nodes[v]["status"]])
        for c in sorted(g.successors(v)):
            add(node, c)

    root = Tree(escape(_label(g, 0, max_chars)), style=_RICH["root"])
    for c in sorted(g.successors(0)):
        add(root, c)
    return root


def _figure(g: nx.DiGraph) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pos = nx.bfs_layout(g, 0, align="horizontal")
    pos = {v: (x, -y) for v, (x, y) in pos.items()}  # root on top
    depths = [g.nodes[v]["depth"] for v in g]
    widest = max(depths.count(d) for d in set(depths))
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.5 * widest), 40.0), 1.2 + 1.1 * max(depths)))
    colours = [STATUS_COLOURS[g.nodes[v]["status"]] for v in g]
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=False, edge_color="#999999")
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_size=260)
    labels = {
        v: "P" if v == 0 else ("-" if g.nodes[v]["score"] is None else f"{g.nodes[v]['score']:.2f}")
        for v in g
    }
    nx.draw_networkx_labels(g, pos, labels, ax=ax, font_size=6)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=c, label=s) for s, c in STATUS_COLOURS.items()
    ]
    ax.legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    ax.set_title(
        f"{g.graph.get('strategy')} search tree (node label: score), answer "
        f"{g.graph.get('answer')!r}",
        fontsize=9,
    )
    ax.axis("off")
    fig.tight_layout()
    return fig


def _html(g: nx.DiGraph, svg: str | None) -> str:
    def item(v: int) -> str:
        a = g.nodes[v]
        kids = "".join(item(c) for c in sorted(g.successors(v)))
        head = html.escape(_label(g, v, 120))
        body = f"<pre>{html.escape(a['step'])}</pre>" if v else ""
        colour = STATUS_COLOURS[a["status"]]
        return (
            f"<li><details{' open' if a['status'] != 'pruned' else ''}>"
            f'<summary style="color:{colour}">{head}</summary>{body}<ul>{kids}</ul>'
            f"</details></li>"
        )

    title = html.escape(f"{g.graph.get('strategy')} search tree")
    figure = f"<div>{svg}</div>" if svg else "<p>(install matplotlib for the drawing)</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font:13px sans-serif} ul{list-style:none;padding-left:1.2em}"
        "pre{white-space:pre-wrap;background:#f6f6f6;margin:2px 0 4px 1em}</style>"
        f"</head><body><h3>{title}</h3>{figure}<ul>{item(0)}</ul></body></html>"
    )


def save(g: nx.DiGraph, path: str | Path) -> Path:
    """Write ``g`` as ``.png``/``.svg`` (matplotlib) or a self-contained ``.html`` (the SVG
    drawing inline plus a collapsible outline with every step's text).

    Raises:
        ConfigError: Unknown suffix, or matplotlib missing for png/svg.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg", ".html", ".htm"):
        raise ConfigError(f"--out {path}: use a .html, .png or .svg file name")
    try:
        fig = _figure(g)
    except ImportError:
        if suffix in (".png", ".svg"):
            raise ConfigError(
                "drawing a trace needs matplotlib: pip install 'ttscale[viz]' (or write .html)"
            ) from None
        path.write_text(_html(g, None))
        return path
    import matplotlib.pyplot as plt

    if suffix in (".png", ".svg"):
        fig.savefig(path, dpi=150)
        plt.close(fig)
        return path
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    path.write_text(_html(g, svg[svg.find("<svg") :]))
    return path
