"""The HumanEval report: how far does execution-based selection (the ``code`` strategy) lift
the embedded 0.5B coder, and can it reach the 1.5B model's greedy pass@1 at fewer eFLOPs?

Inputs are three code pools (``ttscale pool build --dataset humaneval --format code``, see
``scripts/code_pools_cpu.sh``) on all 164 problems: the 0.5B model's K-sample pool, its
greedy pool and the 1.5B model's greedy pool. Every method is evaluated by exact replay
(``ttscale eval --backend replay --strategy code``: samples, the generated-inputs completion
and every sandbox run come from the pool, the hidden-test grade of every program too), with
``--orders`` replay orders per problem:

- greedy (0.5B and 1.5B): one program, ``select=first``;
- the 0.5B model at n = 1, 2, 4, ... K under ``select`` = ``first`` (a single sample),
  ``majority`` (largest behaviour cluster), ``public`` (first program passing the public
  tests) and ``cluster`` (public-test filter, then the largest cluster); one engine call of
  n samples each (no early stop);
- adaptive ``cluster`` (rounds of ``--round``, stop once the largest cluster passes every
  public test) and adaptive ``public`` (rounds of ``--round-public``, stop once a program
  passes every public test), and the tokens each saves against the cheapest fixed n of the
  same selection at or above its pass@1;
- from the pool itself: the mean single-sample pass@1 (c/K) and the oracle pass@n (any of n
  samples passes the hidden tests; the unbiased estimator of Chen et al. 2021).

With ``--live vllm`` (the pool's model, loaded once), S*'s steps that ask for text no pool
holds run on the pool extended live (``-B live=vllm``: the samples, generated inputs and
their runs still come from the pool; the new prompts are generated, their programs run in the
sandbox and graded there), ``--live-orders`` orders each (default 1: they cost generation):

- ``debug``: greedy plus S*'s self-debug (``debug_rounds=2``, the public-test failures shown);
- ``pairwise``: ``cluster`` at n = ``--live-ns``, then S*'s pairwise judge of the two leading
  clusters on a model-written distinguishing input;
- ``sstar``: S* as a whole, adaptive: rounds of ``--round``, self-debug (one round) of what
  fails, pairwise selection.

95% CIs: a two-level bootstrap over problems and orders (``ttscale.evals.metrics``). eFLOPs per
problem: the ledger's Kinetics cost model on one hardware preset for every row, the replaying
host's (``$TTSCALE_HARDWARE`` picks another), as in ``benchmarks/scaling.py``. Results:
``<out>/report.md``, ``<out>/code.json`` and ``<out>/code_eflops.png`` (pass@1 vs eFLOPs).

    .venv/bin/python benchmarks/code.py --pool runs/pools/humaneval_k16_t0.7 \\
        --greedy runs/pools/humaneval_greedy --large-greedy runs/pools/humaneval_greedy_1.5b \\
        --out docs/results/code

Last line: ``RESULT pass1_small_best=<> best_config=<> pass1_large_greedy=<> eflops_ratio=<>
pass1_small_greedy=<> oracle_pass_at16=<> n_problems=<> isa=<>`` (``best_config``: the grid
and its n, e.g. ``cluster@n=16``; ``eflops_ratio``: the best 0.5B configuration's eFLOPs over
the 1.5B greedy's; ``oracle_pass_at16`` is ``nan`` for a pool of fewer than 16 samples).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SELECTS = ("first", "majority", "public", "cluster")
BUDGET = "tokens=100M"
"""No budget cap: n (per label) sets the samples. A rollouts cap would also pay for the
generated-inputs request and so draw one program fewer."""


@dataclass
class Grid:
    """One ``ttscale eval --backend replay`` run of the ``code`` strategy on a pool."""

    name: str
    family: str
    pool: Path
    strategy: str
    options: list[str] = field(default_factory=list)
    seeds: int = 1
    samples: dict[str, int] = field(default_factory=dict)
    """Programs sampled per strategy label."""
    live: bool = False
    """Extends the replay with the live engine (S*'s pairwise and self-debug steps)."""

    def command(self, runs: Path, live: str | None = None) -> list[str]:
        cmd = ["ttscale", "eval", "--backend", "replay", "--pool", str(self.pool)]
        if self.live:
            cmd += ["-B", f"live={live}"]
        cmd += ["--out", str(runs / self.name), "--strategy", self.strategy]
        cmd += ["--budget", BUDGET, "--seeds", str(self.seeds)]
        cmd += ["--no-traces", "--no-progress", "--json"]
        for o in self.options:
            cmd += ["-o", o]
        return cmd


def powers(k: int) -> list[int]:
    out, n = [], 1
    while n < k:
        out.append(n)
        n *= 2
    return [*out, k]


def manifest(pool: Path) -> dict[str, Any]:
    return json.loads((pool / "manifest.json").read_text())


def _common(pool: Path) -> list[str]:
    m = manifest(pool)
    s, code = m["sampling"], m["sampling"].get("code") or {}
    if not code:
        raise SystemExit(f"{pool} is not a code pool: build it with --format code")
    return [
        f"max_tokens={s['max_tokens']}",
        f"timeout={code['timeout']}",
        f"generated_inputs={code['generated_inputs']}",
    ]


def grids(args: argparse.Namespace) -> list[Grid]:
    greedy = ["n=1", "temperature=0", "round_size=1", "select=first", "adaptive=false"]
    out = [
        Grid(
            "small_greedy",
            "0.5B greedy",
            args.greedy,
            "greedy:code",
            [*greedy, *_common(args.greedy)],
            samples={"greedy": 1},
        )
    ]
    if args.large_greedy:
        out.append(
            Grid(
                "large_greedy",
                "1.5B greedy",
                args.large_greedy,
                "greedy:code",
                [*greedy, *_common(args.large_greedy)],
                samples={"greedy": 1},
            )
        )
    s = manifest(args.pool)["sampling"]
    k = s["k"]
    sampled = [
        f"temperature={s['temperature']}",
        f"top_p={s['top_p']}",
        f"round_size={k}",
        "adaptive=false",
        *_common(args.pool),
    ]
    for select in SELECTS:
        labels = {f"{select}{n}": n for n in powers(k)}
        options = list(sampled)
        for label, n in labels.items():
            options += [f"{label}.n={n}", f"{label}.select={select}"]
        out.append(
            Grid(
                f"small_{select}",
                f"0.5B {select}",
                args.pool,
                ",".join(f"{label}:code" for label in labels),
                options,
                args.orders,
                labels,
            )
        )
    for select, rnd, name in (
        ("cluster", args.round, "small_adaptive"),
        ("public", args.round_public, "small_adaptive_public"),
    ):
        out.append(
            Grid(
                name,
                f"0.5B adaptive {select}",
                args.pool,
                "adaptive:code",
                [
                    f"temperature={s['temperature']}",
                    f"top_p={s['top_p']}",
                    f"n={k}",
                    f"round_size={rnd}",
                    f"select={select}",
                    "adaptive=true",
                    *_common(args.pool),
                ],
                args.orders,
                {"adaptive": k},
            )
        )
    if args.live:
        out += live_grids(args, sampled, k)
    return out


LIVE_GRIDS = ("debug", "pairwise", "sstar")


def live_grids(args: argparse.Namespace, sampled: list[str], k: int) -> list[Grid]:
    """S*'s steps no pool holds (see the module docstring), on the pool extended live."""
    chosen = [x.strip() for x in args.live_grids.split(",") if x.strip()]
    if unknown := sorted(set(chosen) - set(LIVE_GRIDS)):
        raise SystemExit(f"--live-grids: unknown {unknown}; choose from {LIVE_GRIDS}")
    out = []
    if "debug" in chosen:
        out.append(
            Grid(
                "small_greedy_debug",
                "0.5B greedy + self-debug",
                args.greedy,
                "debug:code",
                ["n=1", "temperature=0", "round_size=1", "select=first", "adaptive=false"]
                + ["debug_rounds=2", *_common(args.greedy)],
                1,
                {"debug": 1},
                live=True,
            )
        )
    if "pairwise" in chosen:
        ns = [int(x) for x in args.live_ns.split(",")]
        if bad := [n for n in ns if not 2 <= n <= k]:
            raise SystemExit(f"--live-ns: {bad} outside 2..{k} (the pool's K)")
        labels = {f"pairwise{n}": n for n in ns}
        options = list(sampled)
        for label, n in labels.items():
            options += [f"{label}.n={n}", f"{label}.select=pairwise"]
        out.append(
            Grid(
                "small_pairwise",
                "0.5B pairwise (S*)",
                args.pool,
                ",".join(f"{label}:code" for label in labels),
                options,
                args.live_orders,
                labels,
                live=True,
            )
        )
    if "sstar" in chosen:
        options = [o for o in sampled if not o.startswith(("round_size=", "adaptive="))]
        out.append(
            Grid(
                "small_sstar",
                "0.5B S* adaptive (debug + pairwise)",
                args.pool,
                "sstar:code",
                [*options, f"n={k}", f"round_size={args.round}", "adaptive=true"]
                + ["select=pairwise", "debug_rounds=1"],
                args.live_orders,
                {"sstar": k},
                live=True,
            )
        )
    return out


def run_grid(g: Grid, runs: Path, live: Any = None, live_name: str | None = None) -> None:
    """The grid's ``ttscale eval`` command, run in this process (resumable, as the CLI).
    ``live``: the engine a live grid extends the replay with (shared by the live grids)."""
    from ttscale.backends import make_backend
    from ttscale.cli.options import parse_options
    from ttscale.evals.datasets import Selection
    from ttscale.evals.runner import parse_strategies, replay_selection, run_eval

    argv = g.command(runs, live_name)
    print("$", shlex.join(argv), flush=True)
    dataset, chosen = replay_selection(g.pool, None, Selection())
    extra = {"live": live} if g.live else {}
    gen = make_backend("replay", pool=str(g.pool), **extra)
    run_eval(
        dataset,
        parse_strategies([g.strategy], parse_options(g.options)),
        [BUDGET],
        out=runs / g.name,
        seeds=g.seeds,
        selection=chosen,
        backend=gen,
        backend_name="replay",
        backend_options={"pool": str(g.pool), **({"live": live_name} if g.live else {})},
        progress=False,
        traces=False,
        argv=argv,
        concurrency=32 if g.live else 16,  # live: more problems in flight batch better
    )


def summarize(g: Grid, runs: Path) -> list[dict[str, Any]]:
    from ttscale.evals.metrics import per_problem
    from ttscale.evals.metrics import summarize as summarize_rows
    from ttscale.evals.store import read_rows

    rows = read_rows(runs / g.name)
    out = []
    for c in summarize_rows(rows):
        mine = [r for r in rows if r["strategy"] == c.strategy]
        public = per_problem(
            mine,
            lambda r: (r["public_passed"] or 0) == r["public_tests"] and r["public_tests"] > 0,
        )
        out.append(
            {
                "grid": g.name,
                "family": g.family,
                "label": c.strategy,
                "n": g.samples.get(c.strategy, 1),
                "pass1": c.accuracy,
                "ci": list(c.ci),
                "tokens": c.tokens_mean,
                "eflops": c.eflops_mean,
                "oracle": c.pass_n,
                "selected_passes_public": sum(public.values()) / max(len(public), 1),
                "problems": c.problems,
                "seeds": c.seeds,
                "_acc": per_problem(mine, lambda r: bool(r["correct"])),
            }
        )
    return out


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Paired bootstrap over the problems both points ran: pass@1 of ``a`` minus ``b``."""
    from ttscale.evals.metrics import paired_bootstrap

    common = sorted(set(a["_acc"]) & set(b["_acc"]))
    delta, ci, p = paired_bootstrap([a["_acc"][k] for k in common], [b["_acc"][k] for k in common])
    return {"a": a["label"], "b": b["label"], "delta": delta, "ci": list(ci), "p": p}


def pool_figures(pool: Path) -> dict[str, Any]:
    """Mean single-sample pass@1 (c/K, CI over problems) and the oracle pass@n."""
    from ttscale.evals.metrics import bootstrap_ci, pass_at_k
    from ttscale.pools import load_pool

    p = load_pool(pool)
    k = p.sampling.k
    counts = [(len(q.samples), sum(q.correct)) for q in p.problems.values()]
    mean = [c / n for n, c in counts]
    oracle = {}
    for n in powers(k):
        vals = [pass_at_k(m, c, n) for m, c in counts]
        oracle[n] = {"pass": sum(vals) / len(vals), "ci": list(bootstrap_ci(vals))}
    return {
        "k": k,
        "n_problems": len(counts),
        "mean_pass1": sum(mean) / len(mean),
        "mean_pass1_ci": list(bootstrap_ci(mean)),
        "oracle": oracle,
    }


ADAPTIVE = {
    "cluster": ("small_adaptive", "small_cluster"),
    "public": ("small_adaptive_public", "small_public"),
}
"""Adaptive grid and the fixed-n grid of the same selection it is matched against."""


def adaptive_savings(points: list[dict[str, Any]], select: str) -> dict[str, Any] | None:
    """Adaptive ``select`` against the cheapest fixed-n ``select`` at or above its pass@1."""
    grid, fixed_grid = ADAPTIVE[select]
    ada = next((p for p in points if p["grid"] == grid), None)
    fixed = [p for p in points if p["grid"] == fixed_grid]
    if ada is None or not fixed:
        return None
    hits = [p for p in fixed if p["pass1"] >= ada["pass1"] - 1e-12]
    match = min(hits, key=lambda p: p["tokens"]) if hits else max(fixed, key=lambda p: p["n"])
    return {
        "select": select,
        "adaptive": ada,
        "matched": match,
        "matched_reached": bool(hits),
        "tokens_saved": 1 - ada["tokens"] / match["tokens"] if match["tokens"] else math.nan,
        "tokens_ratio": match["tokens"] / ada["tokens"] if ada["tokens"] else math.nan,
        "eflops_saved": 1 - ada["eflops"] / match["eflops"] if match["eflops"] else math.nan,
    }


def plot(points: list[dict[str, Any]], figures: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.2))
    for family in dict.fromkeys(p["family"] for p in points):
        pts = sorted((p for p in points if p["family"] == family), key=lambda p: p["eflops"])
        xs = [p["eflops"] for p in pts]
        if family in ("0.5B greedy", "1.5B greedy"):
            ax.axhline(pts[0]["pass1"], ls="--" if "1.5B" in family else ":", lw=0.9, c="k")
            ax.annotate(family, (xs[0], pts[0]["pass1"]), fontsize=7)
            continue
        ax.plot(xs, [p["pass1"] for p in pts], marker="o", ms=3.5, label=family)
        ax.fill_between(xs, [p["ci"][0] for p in pts], [p["ci"][1] for p in pts], alpha=0.12)
    k = figures["k"]
    ax.axhline(figures["oracle"][k]["pass"], color="grey", ls="-.", lw=0.8)
    ax.annotate(
        f"oracle pass@{k}",
        (min(p["eflops"] for p in points), figures["oracle"][k]["pass"]),
        fontsize=7,
    )
    ax.set_xscale("log")
    ax.set_xlabel("eFLOPs per problem (log)")
    ax.set_ylabel("HumanEval pass@1 (95% CI: problems x orders)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "code_eflops.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _fmt_pool(path: Path) -> str:
    from ttscale.evals.pool import drawn_on

    m = manifest(path)
    s = m["sampling"]
    model = m.get("model", {}).get("embedded") or m.get("model", {}).get("path")
    cmds = "; ".join(f"`{i['command'].replace(f'{ROOT}/', '')}`" for i in m.get("invocations", []))
    where = drawn_on(m)
    return (
        f"| `{m['name']}` | {model} ({m['engine'].get('dtype')}) | "
        f"{len(m['dataset']['problem_ids'])} | {s['k']} | {s['temperature']:g} | "
        f"{s['top_p']:g} | {s['max_tokens']} | {where} | {cmds} |"
    )


def write_report(summary: dict[str, Any], args: argparse.Namespace) -> Path:
    f = summary["pool"]
    lines = [
        "# HumanEval with the `code` strategy (exact replay of code pools)",
        "",
        f"Host ISA: **{summary['isa']}**. {summary['n_problems']} HumanEval problems; "
        f"{args.orders} replay orders per problem; 95% CIs from a two-level bootstrap "
        f"(problems, then orders). pass@1 is the hidden-test verdict of the one selected "
        f"program; the public tests are the docstring examples the model sees. eFLOPs from "
        f"the Kinetics cost model on one hardware preset for every row, "
        f"`{summary['hardware']}` (the replaying host's; `TTSCALE_HARDWARE` picks another): "
        f"decode is priced per engine step, so n samples of one request cost far less than "
        f"n requests; pass@1 and tokens do not depend on it. The ledger prices each request "
        f"of a call as its own batch, so requests sent together (the generated-inputs "
        f"request beside the first round, S*'s self-debug and pairwise prompts) are charged "
        f"as if run apart: an upper bound on what one batched engine call pays.",
        "",
        *(
            [
                f"Rows marked *live* replay the pool extended with the live engine "
                f"(`-B live={args.live}`): S*'s pairwise and self-debug prompts are generated, "
                f"their programs run and graded in the sandbox; {args.live_orders} order(s) "
                f"per problem.",
                "",
            ]
            if args.live
            else []
        ),
        "## Pools",
        "",
        "| pool | model | problems | K | T | top-p | max tokens | drawn on | built with |",
        "|---|---|---|---|---|---|---|---|---|",
        *[_fmt_pool(p) for p in (args.pool, args.greedy, args.large_greedy) if p],
        "",
        "## Evaluated with",
        "",
        "```bash",
        *summary["commands"],
        "```",
        "",
        "## Results",
        "",
        "| method | n | pass@1 [95% CI] | oracle pass@n | tokens / problem | eFLOPs / problem |",
        "|---|---|---|---|---|---|",
    ]
    for p in summary["points"]:
        oracle = "-" if p["oracle"] is None else f"{p['oracle']:.3f}"
        live = " *live*" if p["grid"] in summary["live_grids"] else ""
        lines.append(
            f"| {p['family']}{live} | {p['n']} | {p['pass1']:.3f} [{p['ci'][0]:.3f}, "
            f"{p['ci'][1]:.3f}] | {oracle} | {p['tokens']:.0f} | {p['eflops']:.3g} |"
        )
    lines += [
        "",
        f"Single 0.5B sample, mean over the pool's {f['k']} (c/K): {f['mean_pass1']:.3f} "
        f"[{f['mean_pass1_ci'][0]:.3f}, {f['mean_pass1_ci'][1]:.3f}]. Oracle pass@n of the pool "
        "(any of n samples passes; unbiased estimator): "
        + ", ".join(f"n={n}: {v['pass']:.3f}" for n, v in f["oracle"].items())
        + ".",
        "",
        "## Headline",
        "",
    ]
    best, g, large = summary["best"], summary["small_greedy"], summary["large_greedy"]
    lines.append(
        f"- 0.5B greedy: {g['pass1']:.3f}; best 0.5B configuration: **{best['family']} "
        f"n={best['n']}**, {best['pass1']:.3f} [{best['ci'][0]:.3f}, {best['ci'][1]:.3f}] at "
        f"{best['eflops']:.3g} eFLOPs per problem."
    )
    if large:
        reach = summary["reaches_large"]
        lines.append(
            f"- 1.5B greedy: {large['pass1']:.3f} at {large['eflops']:.3g} eFLOPs per problem. "
            + (
                f"The cheapest 0.5B configuration at or above it: {reach['family']} "
                f"n={reach['n']} ({reach['pass1']:.3f}), "
                f"{reach['eflops'] / large['eflops']:.2f}x its eFLOPs."
                if reach
                else "No 0.5B configuration reaches it; the best costs "
                f"{best['eflops'] / large['eflops']:.2f}x its eFLOPs."
            )
        )
    bw = summary["best_within_1x"]
    for key, what in (("best", "best 0.5B"), ("best_within_1x", "best 0.5B at <= 1x eFLOPs")):
        v = summary["paired_vs_large"].get(key)
        if v is None:
            continue
        cfg = summary["best"] if key == "best" else bw
        lines.append(
            f"- Paired over problems, {what} ({cfg['family']} n={cfg['n']}, {cfg['pass1']:.3f}) "
            f"minus 1.5B greedy: {v['delta']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}], "
            f"p = {v['p']:.2f}."
        )
    for sav in summary["adaptive"].values():
        if not sav:
            continue
        a, m, sel = sav["adaptive"], sav["matched"], sav["select"]
        lines.append(
            f"- Adaptive {sel}: {a['pass1']:.3f} at {a['tokens']:.0f} tokens/problem; fixed "
            f"{sel} n={m['n']} ({m['pass1']:.3f}) takes {m['tokens']:.0f}: "
            f"{sav['tokens_ratio']:.2f}x the tokens ({sav['tokens_saved']:.1%} saved); eFLOPs "
            f"{a['eflops'] / m['eflops']:.2f}x the fixed n's (each round is an engine call, and "
            f"a call's decode steps read the weights once for all its samples)"
            + ("" if sav["matched_reached"] else " (no fixed n reaches its pass@1: vs the largest)")
            + "."
        )
    lines += ["", "![pass@1 vs eFLOPs](code_eflops.png)", ""]
    path = args.out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=Path, required=True, help="0.5B K-sample code pool")
    ap.add_argument("--greedy", type=Path, required=True, help="0.5B greedy code pool")
    ap.add_argument("--large-greedy", type=Path, help="1.5B greedy code pool")
    ap.add_argument("--orders", type=int, default=5, help="replay orders per problem")
    ap.add_argument("--round", type=int, default=4, help="adaptive cluster: programs per round")
    ap.add_argument(
        "--round-public", type=int, default=2, help="adaptive public: programs per round"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "code")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "code")
    ap.add_argument("--live", help="engine for S*'s live steps (vllm; scripted in tests)")
    ap.add_argument("--live-script", type=Path, help="--live scripted: the replies file")
    ap.add_argument("--live-grids", default=",".join(LIVE_GRIDS), help="which live grids")
    ap.add_argument("--live-ns", default="16", help="pairwise: n values, comma-separated")
    ap.add_argument("--live-orders", type=int, default=1, help="replay orders of live grids")
    args = ap.parse_args()

    from ttscale.cost import default_hardware
    from ttscale.host import host_info

    args.out.mkdir(parents=True, exist_ok=True)
    live = None
    if args.live:
        from ttscale.backends import make_backend
        from ttscale.backends.batching import CoalescingGenerator
        from ttscale.cli.options import backend_kwargs

        kwargs = backend_kwargs(args.live, model=None, base_url=None, script=args.live_script)
        live = CoalescingGenerator(make_backend(args.live, **kwargs))
    commands, points, live_names = [], [], []
    try:
        for g in grids(args):
            if g.live:
                live_names.append(g.name)
            commands.append(shlex.join(g.command(Path("runs/code"), args.live)))
            run_grid(g, args.runs, live, args.live)
            points += summarize(g, args.runs)
    finally:
        if live is not None:
            import asyncio

            asyncio.run(live.close())
    figures = pool_figures(args.pool)
    small = [p for p in points if p["family"].startswith("0.5B")]
    greedy = next(p for p in points if p["family"] == "0.5B greedy")
    large = next((p for p in points if p["family"] == "1.5B greedy"), None)
    best = max(small, key=lambda p: (p["pass1"], -p["eflops"]))
    reach = None
    if large is not None:
        hits = [p for p in small if p["pass1"] >= large["pass1"]]
        reach = min(hits, key=lambda p: p["eflops"]) if hits else None
    ratio = best["eflops"] / large["eflops"] if large and large["eflops"] else math.nan
    within = [p for p in small if large and p["eflops"] <= large["eflops"]]
    best_within = max(within, key=lambda p: (p["pass1"], -p["eflops"])) if within else None
    versus = {}
    if large is not None:
        versus["best"] = paired(best, large)
        if best_within is not None:
            versus["best_within_1x"] = paired(best_within, large)
    isa = host_info().isa
    summary = {
        "n_problems": figures["n_problems"],
        "isa": isa,
        "hardware": default_hardware().name,
        "orders": args.orders,
        "pool": figures,
        "points": points,
        "best": best,
        "small_greedy": greedy,
        "large_greedy": large,
        "reaches_large": reach,
        "best_within_1x": best_within,
        "paired_vs_large": versus,
        "adaptive": {sel: adaptive_savings(points, sel) for sel in ADAPTIVE},
        "eflops_ratio": ratio,
        "commands": commands,
        "live_grids": live_names,
    }
    for p in points:
        p.pop("_acc", None)
    (args.out / "code.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_report(summary, args)
    print(json.dumps({"plot": str(plot(points, figures, args.out))}))
    k = figures["k"]
    oracle16 = (
        f"{figures['oracle'][16]['pass']:.3f}" if k >= 16 and 16 in figures["oracle"] else "nan"
    )
    label = f"{best['grid'].removeprefix('small_')}@n={best['n']}"  # e.g. cluster@n=16
    print(
        f"RESULT pass1_small_best={best['pass1']:.3f} best_config={label} "
        f"pass1_large_greedy={large['pass1'] if large else math.nan:.3f} "
        f"eflops_ratio={ratio:.2f} pass1_small_greedy={greedy['pass1']:.3f} "
        f"oracle_pass_at16={oracle16} n_problems={figures['n_problems']} isa={isa}"
    )


if __name__ == "__main__":
    main()
