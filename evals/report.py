"""``ttscale report runs/NAME``: markdown + HTML report and PNG plots of a run.

Plots (matplotlib, Agg): accuracy vs mean generated tokens per problem and vs mean eFLOPs
per problem, one line per strategy over its budgets, with bootstrap 95% CI bands and the
Pareto frontier over every (strategy, budget) point; and the same accuracy-vs-tokens curves
per difficulty level. Tables: the metrics of ``ttscale.evals.metrics`` per cell, pass@k,
per-level accuracy, paired bootstrap comparisons (each strategy against the first one at
the same budget, and optionally against another run), and the reproducibility record.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.evals.metrics import ConfigSummary, budget_order, compare, pareto_front, summarize
from ttscale.evals.store import read_rows

__all__ = ["ReportFiles", "write_report"]

_RUN_FILE = "run.json"


@dataclass(frozen=True, slots=True)
class ReportFiles:
    markdown: Path
    html: Path
    plots: tuple[Path, ...]


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _sci(x: float) -> str:
    return f"{x:.3g}"


def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    seen = [v for v in preferred if v in values]
    return seen + [v for v in dict.fromkeys(values) if v not in seen]


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    compare_to: str | Path | None = None,
    title: str | None = None,
) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and PNGs for the run in ``run_dir``.

    Args:
        run_dir: A directory written by ``ttscale eval``.
        out_dir: Where to write (default ``<run_dir>/report``); PNG links are relative.
        compare_to: Another run directory; cells present in both get a paired bootstrap row.
        title: Report heading (default: the run's name).

    Raises:
        ConfigError: ``run_dir`` has no rows.
    """
    run_dir = Path(run_dir)
    rows = read_rows(run_dir)
    if not rows:
        raise ConfigError(f"{run_dir} has no finished rows yet; nothing to report")
    record = _read_record(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)

    strategies = _order([r["strategy"] for r in rows], list(record.get("strategies", {})))
    budgets = sorted(dict.fromkeys(r["budget"] for r in rows), key=budget_order)
    cells = {(s.strategy, s.budget): s for s in summarize(rows)}
    cells_l = {(s.strategy, s.budget, s.level): s for s in summarize(rows, by_level=True)}
    levels = sorted({r.get("level") for r in rows if r.get("level") is not None})
    ordered = [cells[(s, b)] for s in strategies for b in budgets if (s, b) in cells]

    plots = [
        _plot_scaling(
            ordered,
            strategies,
            "tokens_mean",
            "generated tokens per problem (mean)",
            out / "accuracy_vs_tokens.png",
            # a scaling grid (rollouts=1..K, or budgets a decade apart) reads on a log axis
            log_x=_spans_decade([c.tokens_mean for c in ordered]),
        ),
        _plot_scaling(
            ordered,
            strategies,
            "eflops_mean",
            "eFLOPs per problem (mean)",
            out / "accuracy_vs_eflops.png",
            log_x=True,
        ),
    ]
    if levels:
        plots.append(
            _plot_levels(cells_l, strategies, budgets, levels, out / "accuracy_by_level.png")
        )

    md = _markdown(
        title or record.get("name") or run_dir.name,
        record,
        rows,
        ordered,
        strategies,
        budgets,
        cells_l,
        levels,
        plots,
        out,
        compare_to,
    )
    md_path = out / "report.md"
    md_path.write_text(md, encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(_html(md, title or run_dir.name), encoding="utf-8")
    return ReportFiles(md_path, html_path, tuple(plots))


def _read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / _RUN_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# -- plots ------------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("reports need matplotlib: pip install 'ttscale[eval]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(ax: Any, cells: Sequence[ConfigSummary], x_attr: str, label: str, color: Any) -> None:
    pts = sorted(cells, key=lambda c: getattr(c, x_attr))
    xs = [getattr(c, x_attr) for c in pts]
    ys = [c.accuracy for c in pts]
    lo = [c.ci[0] for c in pts]
    hi = [c.ci[1] for c in pts]
    ax.plot(xs, ys, marker="o", color=color, label=label)
    if len(pts) > 1:
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
    else:
        ax.errorbar(
            xs,
            ys,
            yerr=[
                [y - low for y, low in zip(ys, lo, strict=True)],
                [h - y for y, h in zip(ys, hi, strict=True)],
            ],
            color=color,
            capsize=3,
            fmt="none",
        )


def _spans_decade(xs: Sequence[float]) -> bool:
    pos = [x for x in xs if x > 0]
    return bool(pos) and max(pos) >= 8 * min(pos)


def _plot_scaling(
    cells: Sequence[ConfigSummary],
    strategies: Sequence[str],
    x_attr: str,
    xlabel: str,
    path: Path,
    *,
    log_x: bool,
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = plt.get_cmap("tab10")
    for i, s in enumerate(strategies):
        mine = [c for c in cells if c.strategy == s]
        if mine:
            _curve(ax, mine, x_attr, s, colors(i % 10))
    points = [(getattr(c, x_attr), c.accuracy) for c in cells]
    front = pareto_front(points)
    if front:
        fx = [points[i][0] for i in front]
        fy = [points[i][1] for i in front]
        ax.step(
            fx,
            fy,
            where="post",
            color="black",
            linestyle="--",
            linewidth=1,
            label="Pareto frontier",
        )
        ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="black", zorder=3)
    if log_x and all(p[0] > 0 for p in points):
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (95% bootstrap CI; problems x seeds)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_levels(
    cells: dict[tuple[str, str, Any], ConfigSummary],
    strategies: Sequence[str],
    budgets: Sequence[str],
    levels: Sequence[int],
    path: Path,
) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(levels), figsize=(3.2 * len(levels), 3.4), dpi=120, sharey=True, squeeze=False
    )
    colors = plt.get_cmap("tab10")
    for ax, level in zip(axes[0], levels, strict=True):
        for i, s in enumerate(strategies):
            mine = [cells[(s, b, level)] for b in budgets if (s, b, level) in cells]
            if mine:
                _curve(ax, mine, "tokens_mean", s, colors(i % 10))
        n = max((c.problems for k, c in cells.items() if k[2] == level), default=0)
        ax.set_title(f"level {level} ({n} problems)", fontsize=9)
        ax.set_xlabel("tokens / problem", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- markdown ---------------------------------------------------------------------------------


def _markdown(
    name: str,
    record: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    cells: Sequence[ConfigSummary],
    strategies: Sequence[str],
    budgets: Sequence[str],
    cells_l: dict[tuple[str, str, Any], ConfigSummary],
    levels: Sequence[int],
    plots: Sequence[Path],
    out: Path,
    compare_to: str | Path | None,
) -> str:
    env = record.get("environment", {})
    ds = record.get("dataset", {})
    model = env.get("model", {})
    engine = env.get("engine", {})
    host = env.get("host", {})
    pkgs = env.get("packages", {})
    git = env.get("git", {})
    problems = len({r["problem_id"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Eval report: {name}", ""]
    lines += [
        f"- **dataset**: `{ds.get('name', '?')}`, {problems} problems "
        f"(sha256 `{str(ds.get('sha256', '?'))[:12]}…`, selection `{_selection(ds)}`)",
        f"- **rows**: {len(rows)} (seeds {seeds}); errors: "
        f"{sum(1 for r in rows if r.get('error'))}",
        f"- **model**: `{model.get('path', engine.get('model', '?'))}` "
        f"(sha256 `{str(model.get('sha256', '?'))[:16]}…` of {model.get('sha256_of', '?')}); "
        f"quantization: {model.get('quantization', '—')}",
        f"- **engine**: {engine.get('backend', '?')}, "
        f"dtype {engine.get('dtype', env.get('dtype'))}, "
        f"seeding {seeding_summary(rows, engine.get('seeding', '?'))}; "
        f"host {host.get('cpu_model', '?')} "
        f"(ISA **{host.get('isa', '?')}**, {host.get('cores', '?')} cores)",
        "- **software**: " + ", ".join(f"{k} {v}" for k, v in pkgs.items()),
        f"- **git**: `{git.get('commit')}`" + (" (dirty tree)" if git.get("dirty") else ""),
    ]
    for inv in record.get("invocations", []):
        at = (inv.get("git") or {}).get("commit")
        where = f", git `{at[:12]}`" + (" dirty" if inv["git"].get("dirty") else "") if at else ""
        lines.append(
            f"- **command** ({inv.get('started', '?')}{where}): `{inv.get('command', '?')}`"
        )
    lines += [
        "",
        "Accuracy is the strategy's chosen answer graded by math-verify, averaged over seeds per "
        "problem; the 95% CI is a percentile bootstrap over problems. maj@n and pass@n use each "
        "row's n candidates; weighted = verifier-score-weighted vote. Tokens and eFLOPs are per "
        "problem (one row), from the ledger. ★ = on the Pareto frontier (accuracy vs tokens).",
        "",
        "## Accuracy vs compute",
        "",
        "| strategy | budget | problems × seeds | accuracy [95% CI] | maj@n | weighted | pass@1 | "
        "pass@n | n | tokens mean / median | eFLOPs mean / median | s / problem | errors |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    front = set(pareto_front([(c.tokens_mean, c.accuracy) for c in cells]))
    for i, c in enumerate(cells):
        star = " ★" if i in front else ""
        lines.append(
            f"| {c.strategy}{star} | `{c.budget}` | {c.problems} × {c.seeds} | "
            f"{_fmt(c.accuracy)} [{_fmt(c.ci[0])}, {_fmt(c.ci[1])}] | {_fmt(c.maj)} | "
            f"{_fmt(c.weighted)} | {_fmt(c.pass1)} | {_fmt(c.pass_n)} | {c.candidates:.1f} | "
            f"{c.tokens_mean:.0f} / {c.tokens_median:.0f} | {_sci(c.eflops_mean)} / "
            f"{_sci(c.eflops_median)} | {c.wall_mean:.2f} | {c.errors} |"
        )
    lines += ["", *[f"![{p.stem}]({p.relative_to(out)})" for p in plots[:2]], ""]
    ks = sorted({k for c in cells for k in c.pass_at})
    if ks:
        lines += ["## pass@k (unbiased estimator, Chen et al. 2021)", ""]
        lines += ["| strategy | budget | " + " | ".join(f"pass@{k}" for k in ks) + " |"]
        lines += ["|---|---|" + "---:|" * len(ks)]
        for c in cells:
            vals = " | ".join(_fmt(c.pass_at.get(k)) for k in ks)
            lines.append(f"| {c.strategy} | `{c.budget}` | {vals} |")
        lines.append("")
    if levels:
        lines += ["## Accuracy by difficulty level", ""]
        lines += ["| strategy | budget | " + " | ".join(f"level {lv}" for lv in levels) + " |"]
        lines += ["|---|---|" + "---:|" * len(levels)]
        for s in strategies:
            for b in budgets:
                if not any((s, b, lv) in cells_l for lv in levels):
                    continue
                vals = " | ".join(
                    f"{_fmt(cells_l[(s, b, lv)].accuracy, 2)} (n={cells_l[(s, b, lv)].problems})"
                    if (s, b, lv) in cells_l
                    else "—"
                    for lv in levels
                )
                lines.append(f"| {s} | `{b}` | {vals} |")
        lines += ["", f"![accuracy_by_level]({plots[-1].relative_to(out)})", ""]
    lines += _comparisons(rows, strategies, budgets)
    if compare_to is not None:
        lines += _cross_run(rows, Path(compare_to), cells)
    return "\n".join(lines) + "\n"


def seeding_summary(rows: Sequence[dict[str, Any]], default: str = "?") -> str:
    """How the rows' samples were seeded (``ledger.engine.seeding``), with row counts when a
    resumed run mixed modes, e.g. ``per_request (120 rows), engine (62 rows)``."""
    counts = Counter((r.get("ledger") or {}).get("engine", {}).get("seeding") for r in rows)
    counts.pop(None, None)
    if len(counts) <= 1:
        return next(iter(counts), default)
    return ", ".join(f"{mode} ({n} rows)" for mode, n in counts.most_common())


def _selection(ds: dict[str, Any]) -> str:
    sel = ds.get("selection") or {}
    parts = [
        f"{k}={v}" for k, v in sel.items() if v not in (None, [], (), {}, False) and k != "seed"
    ]
    if sel.get("sample"):
        parts.append(f"seed={sel.get('seed')}")
    return ", ".join(parts) or "all"


def _comparisons(
    rows: Sequence[dict[str, Any]], strategies: Sequence[str], budgets: Sequence[str]
) -> list[str]:
    if len(strategies) < 2:
        return []
    base = strategies[0]
    out = [
        f"## Paired comparisons against `{base}` (same budget)",
        "",
        'Paired bootstrap over problems (10,000 resamples); p is two-sided for "no difference".',
        "",
        "| strategy | budget | problems | Δ accuracy [95% CI] | p |",
        "|---|---|---:|---|---:|",
    ]
    for b in budgets:
        for s in strategies[1:]:
            try:
                c = compare(rows, rows, strategy_a=s, budget_a=b, strategy_b=base, budget_b=b)
            except ValueError:
                continue
            out.append(
                f"| {s} | `{b}` | {c.problems} | {c.delta:+.3f} [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}] "
                f"| {c.p_value:.3g} |"
            )
    return [*out, ""]


def _cross_run(
    rows: Sequence[dict[str, Any]], other: Path, cells: Sequence[ConfigSummary]
) -> list[str]:
    other_rows = read_rows(other)
    out = [
        f"## This run vs `{other}`",
        "",
        "| strategy | budget | problems | this | other | Δ [95% CI] | p |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for c in cells:
        try:
            cmp = compare(rows, other_rows, strategy_a=c.strategy, budget_a=c.budget)
        except ValueError:
            continue
        out.append(
            f"| {c.strategy} | `{c.budget}` | {cmp.problems} | {cmp.accuracy_a:.3f} | "
            f"{cmp.accuracy_b:.3f} | {cmp.delta:+.3f} [{cmp.ci[0]:+.3f}, {cmp.ci[1]:+.3f}] | "
            f"{cmp.p_value:.3g} |"
        )
    return [*out, ""]


def _html(md: str, title: str) -> str:
    try:
        import markdown
    except ImportError:
        raise ConfigError("HTML reports need markdown: pip install 'ttscale[eval]'") from None
    body = markdown.markdown(md, extensions=["tables"])
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:100%}code{font-size:12px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
