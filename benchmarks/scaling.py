"""The scaling report: does more test-time compute buy accuracy, and can the 0.5B model plus
ttscale reach the 1.5B model's greedy accuracy at fewer eFLOPs?

Inputs are sample pools (``ttscale pool build``, see ``scripts/pools_cpu.sh``) on one fixed,
level-stratified MATH-500 slice: the 0.5B model's K-sample pool, its greedy pool, the 1.5B
model's greedy pool and (optionally) a small 1.5B pool. Every method is evaluated by exact
replay (``ttscale eval --backend replay``) with ``--orders`` replay orders per problem:

- greedy (0.5B and 1.5B);
- maj@n, n = 1, 2, 4, ... K (best-of-N majority vote, no early stop);
- adaptive best-of-N (Beta stopping rule) at several confidence thresholds, up to K samples;
- DeepConf online gating (``gate=true``): 4 warm-up samples set a threshold, later samples
  end once a window of their token confidences falls below it (the cut is exact in replay);
- confidence-weighted and DeepConf-filtered votes (``--verifier confidence``) at n = 1..K,
  one per statistic given with ``--confidence``;
- the 1.5B model's maj@n up to its pool's K;
- program-aided (``--program-pool``, ``--program-greedy``): Program-of-Thought greedy and
  maj@n over *executed* answers (``program`` strategy; the pool holds each program's
  execution result, so nothing runs again), its adaptive stop, and the ``hybrid`` vote of
  n programs + m chain-of-thought samples (replayed from the CoT pool and the program pool
  together); the 1.5B model's program greedy (``--large-program-greedy``).

Each grid is one ``ttscale eval`` command (printed, and listed in the report as a user would
type it); reruns resume. Results: ``<out>/report.md``, ``<out>/scaling.json``, accuracy vs
generated tokens and vs eFLOPs per problem (``<out>/scaling_tokens.png``,
``scaling_eflops.png``; 95% CIs from a two-level bootstrap over problems and orders). eFLOPs
use one hardware preset for every row: the replaying host's (``$TTSCALE_HARDWARE`` picks
another; the report names it), whatever hosts drew the pools.

    flock /tmp/ttscale-cpu.lock .venv/bin/python benchmarks/scaling.py \\
        --pool runs/pools/math500_150_k16_t0.7 --greedy runs/pools/math500_150_greedy \\
        --large-greedy runs/pools/math500_150_greedy_1.5b \\
        --large-pool runs/pools/math500_150_k4_t0.7_1.5b --out docs/results/scaling

Last line: ``RESULT acc_small_best=<> best_config=<> acc_large_greedy=<>
eflops_small_best_over_large_greedy=<> acc_small_program_greedy=<> acc_large_program_greedy=<>
n_problems=<> isa=<>`` (the line before it keeps the chain-of-thought figures:
``acc_small_greedy``, ``pass_at_k_small``, ``k``).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Grid:
    """One ``ttscale eval --backend replay`` run: strategies x budgets x orders on a pool."""

    name: str
    family: str
    """Curve this grid draws (one line per family in the plots)."""
    pool: Path | list[Path]
    """One pool, or several served together (the hybrid vote: CoT pool + program pool)."""
    strategy: str
    budgets: list[str]
    options: list[str] = field(default_factory=list)
    seeds: int = 1
    verifier: str | None = None
    verifier_options: list[str] = field(default_factory=list)
    samples: dict[str, int] = field(default_factory=dict)
    """Samples per strategy label, where the budget does not say it (hybrid configs)."""

    @property
    def pools(self) -> list[Path]:
        return self.pool if isinstance(self.pool, list) else [self.pool]

    def command(self, runs: Path) -> list[str]:
        cmd = ["ttscale", "eval", "--backend", "replay"]
        for pool in self.pools:
            cmd += ["--pool", str(pool)]
        cmd += [
            "--out",
            str(runs / self.name),
            "--strategy",
            self.strategy,
            "--budget",
            ",".join(self.budgets),
            "--seeds",
            str(self.seeds),
            "--no-traces",
            "--no-progress",
            "--json",
        ]
        for o in self.options:
            cmd += ["-o", o]
        if self.verifier:
            cmd += ["--verifier", self.verifier]
            for o in self.verifier_options:
                cmd += ["-V", o]
        return cmd


def powers(k: int) -> list[int]:
    out, n = [], 1
    while n < k:
        out.append(n)
        n *= 2
    return [*out, k]


def _pct(confidence: str) -> str:
    """Label-safe threshold: ``0.95`` -> ``95`` (labels cannot contain dots)."""
    return str(round(float(confidence) * 100))


def pool_sampling(pool: Path) -> dict[str, Any]:
    return json.loads((pool / "manifest.json").read_text())["sampling"]


def grids(args: argparse.Namespace) -> list[Grid]:
    small = pool_sampling(args.pool)
    k, t = small["k"], small["temperature"]
    # One engine call per n (round_size = K): the samples of a request share its weight reads,
    # which the cost model prices per request (Kinetics); smaller rounds would cost more eFLOPs
    # for the same tokens. Only the adaptive stop needs rounds (of 4).
    sampled = [
        f"temperature={t}",
        f"top_p={small['top_p']}",
        f"max_tokens={small['max_tokens']}",
    ]
    one_call = f"round_size={k}"
    ns = powers(k)
    out = [
        Grid(
            "small_greedy",
            "0.5B greedy",
            args.greedy,
            "greedy:best_of_n",
            ["rollouts=1"],
            ["n=1", "round_size=1", "temperature=0", "adaptive=false"],
        ),
        Grid(
            "small_maj",
            "0.5B maj@n",
            args.pool,
            "maj:best_of_n",
            [f"rollouts={n}" for n in ns],
            [*sampled, f"n={k}", one_call, "adaptive=false"],
            args.orders,
        ),
    ]
    out.append(
        Grid(
            "small_adaptive",
            "0.5B adaptive best-of-N",
            args.pool,
            ",".join(f"adaptive{_pct(c)}:best_of_n" for c in args.adaptive),
            [f"rollouts={k}"],
            [
                *sampled,
                f"n={k}",
                "round_size=4",  # the Beta rule checks between rounds
                "adaptive=true",
                *[f"adaptive{_pct(c)}.confidence={c}" for c in args.adaptive],
            ],
            args.orders,
        )
    )
    out.append(
        Grid(
            "small_gated",
            "0.5B gated best-of-N",
            args.pool,
            ",".join(f"gate{_pct(g)}:best_of_n" for g in args.gate_keep),
            [f"rollouts={n}" for n in ns if n >= min(8, k)],
            [
                *sampled,
                f"n={k}",
                one_call,
                "adaptive=false",
                "gate=true",
                "gate_warmup=4",
                f"gate_window={args.gate_window}",
                "gate_every=16",
                *[f"gate{_pct(g)}.gate_keep={g}" for g in args.gate_keep],
            ],
            args.orders,
        )
    )
    for spec in args.confidence:
        stat, _, rest = spec.partition(":")
        vopts = [f"stat={stat}", *[o for o in rest.split(";") if o]]
        tag = spec.replace(":", "_").replace(";", "_").replace("=", "")
        out.append(
            Grid(
                f"small_conf_{tag}",
                f"0.5B weighted ({spec})",
                args.pool,
                "weighted:best_of_n,filtered:best_of_n",
                [f"rollouts={n}" for n in ns],
                [
                    *sampled,
                    f"n={k}",
                    one_call,
                    "adaptive=false",
                    "weighted.select=weighted",
                    "filtered.select=filtered",
                    f"filtered.keep={args.keep}",
                ],
                args.orders,
                "confidence",
                vopts,
            )
        )
    if args.large_greedy:
        out.append(
            Grid(
                "large_greedy",
                "1.5B greedy",
                args.large_greedy,
                "greedy:best_of_n",
                ["rollouts=1"],
                ["n=1", "round_size=1", "temperature=0", "adaptive=false"],
            )
        )
    out += program_grids(args)
    if args.large_pool:
        big = pool_sampling(args.large_pool)
        out.append(
            Grid(
                "large_maj",
                "1.5B maj@n",
                args.large_pool,
                "maj:best_of_n",
                [f"rollouts={n}" for n in powers(big["k"])],
                [
                    f"temperature={big['temperature']}",
                    f"top_p={big['top_p']}",
                    f"max_tokens={big['max_tokens']}",
                    f"n={big['k']}",
                    f"round_size={big['k']}",
                    "adaptive=false",
                ],
                args.orders,
            )
        )
    return out


def program_grids(args: argparse.Namespace) -> list[Grid]:
    """Program-of-Thought greedy, maj@n and adaptive; the hybrid vote; 1.5B program greedy."""
    greedy = ["n=1", "round_size=1", "temperature=0", "adaptive=false"]
    out: list[Grid] = []
    if args.program_greedy:
        g = pool_sampling(args.program_greedy)
        out.append(
            Grid(
                "small_program_greedy",
                "0.5B program greedy",
                args.program_greedy,
                "greedy:program",
                ["rollouts=1"],
                [*greedy, f"max_tokens={g['max_tokens']}"],
            )
        )
    if args.large_program_greedy:
        g = pool_sampling(args.large_program_greedy)
        out.append(
            Grid(
                "large_program_greedy",
                "1.5B program greedy",
                args.large_program_greedy,
                "greedy:program",
                ["rollouts=1"],
                [*greedy, f"max_tokens={g['max_tokens']}"],
            )
        )
    if not args.program_pool:
        return out
    prog = pool_sampling(args.program_pool)
    kp = prog["k"]
    psampled = [
        f"temperature={prog['temperature']}",
        f"top_p={prog['top_p']}",
        f"max_tokens={prog['max_tokens']}",
    ]
    out.append(
        Grid(
            "small_program_maj",
            "0.5B program maj@n",
            args.program_pool,
            "maj:program",
            [f"rollouts={n}" for n in powers(kp)],
            [*psampled, f"n={kp}", f"round_size={kp}", "adaptive=false"],
            args.orders,
        )
    )
    out.append(
        Grid(
            "small_program_adaptive",
            "0.5B program adaptive",
            args.program_pool,
            ",".join(f"adaptive{_pct(c)}:program" for c in args.adaptive),
            [f"rollouts={kp}"],
            [
                *psampled,
                f"n={kp}",
                "round_size=4",
                "adaptive=true",
                *[f"adaptive{_pct(c)}.confidence={c}" for c in args.adaptive],
            ],
            args.orders,
        )
    )
    cot = pool_sampling(args.pool)
    kc = cot["k"]
    base = [
        f"program_temperature={prog['temperature']}",
        f"cot_temperature={cot['temperature']}",
        f"program_top_p={prog['top_p']}",
        f"cot_top_p={cot['top_p']}",
        f"program_max_tokens={prog['max_tokens']}",
        f"cot_max_tokens={cot['max_tokens']}",
        f"round_size={max(kp, kc)}",
        "adaptive=false",
    ]
    # n programs + n CoT samples; and n programs + every CoT sample the pool holds.
    for name, family, configs in (
        ("small_hybrid", "0.5B hybrid n+n", {f"h{n}x{n}": (n, n) for n in powers(min(kp, kc))}),
        ("small_hybrid_all", f"0.5B hybrid n+{kc}", {f"h{n}x{kc}": (n, kc) for n in powers(kp)}),
    ):
        options = list(base)
        for label, (np_, nc) in configs.items():
            options += [f"{label}.n_program={np_}", f"{label}.n_cot={nc}"]
        out.append(
            Grid(
                name,
                family,
                [args.pool, args.program_pool],
                ",".join(f"{label}:hybrid" for label in configs),
                [f"rollouts={kp + kc}"],
                options,
                args.orders,
                samples={label: a + b for label, (a, b) in configs.items()},
            )
        )
    return out


def run_grid(g: Grid, runs: Path) -> list[dict[str, Any]]:
    cmd = g.command(runs)
    print("$", shlex.join(cmd), flush=True)
    exe = [sys.executable, "-m", "ttscale.cli", *cmd[1:]]
    done = subprocess.run(exe, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{g.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)["cells"]


def summarize(g: Grid, runs: Path) -> list[dict[str, Any]]:
    from ttscale.evals.metrics import summarize as summarize_rows
    from ttscale.evals.store import read_rows

    rows = read_rows(runs / g.name)
    out = []
    for c in summarize_rows(rows):
        label = g.family if c.strategy in ("maj", "greedy") else f"{g.family} [{c.strategy}]"
        if g.samples:  # one curve over the labels' sample counts
            label = g.family
        out.append(
            {
                "grid": g.name,
                "family": g.family,
                "label": label,
                "strategy": c.strategy,
                "budget": c.budget,
                "n": g.samples.get(c.strategy) or int(c.budget.split("=")[1]),
                "accuracy": c.accuracy,
                "ci": list(c.ci),
                "tokens": c.tokens_mean,
                "eflops": c.eflops_mean,
                "problems": c.problems,
                "seeds": c.seeds,
                "candidates": c.candidates,
                "pass_n": c.pass_n,
            }
        )
    return out


def plot(points: list[dict[str, Any]], out: Path, x: str, xlabel: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.2))
    labels = list(dict.fromkeys(p["label"] for p in points))
    for label in labels:
        pts = sorted((p for p in points if p["label"] == label), key=lambda p: p[x])
        xs = [p[x] for p in pts]
        ax.plot(xs, [p["accuracy"] for p in pts], marker="o", ms=3.5, label=label)
        ax.fill_between(xs, [p["ci"][0] for p in pts], [p["ci"][1] for p in pts], alpha=0.12)
    for p in points:
        if p["family"] == "1.5B greedy":
            ax.axhline(p["accuracy"], color="k", ls="--", lw=0.8)
        if p["family"] == "1.5B program greedy":
            ax.axhline(p["accuracy"], color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (95% CI: problems x orders)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / f"scaling_{x}.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _fmt_pool(path: Path) -> str:
    from ttscale.evals.pool import drawn_on

    m = json.loads((path / "manifest.json").read_text())
    s = m["sampling"]
    model = m.get("model", {}).get("embedded") or m.get("model", {}).get("path")
    # paths relative to the repository (pools built from another checkout recorded theirs)
    cmds = "; ".join(f"`{i['command'].replace(f'{ROOT}/', '')}`" for i in m.get("invocations", []))
    n = len(m["dataset"]["problem_ids"])
    where = drawn_on(m)
    return (
        f"| `{m['name']}` | {model} ({m['engine'].get('dtype')}) | {n} "
        f"| {s['k']} | {s['temperature']:g} | {s['max_tokens']} | {where} | {cmds} |"
    )


def _pools(args: argparse.Namespace) -> list[Path]:
    pools = (args.pool, args.greedy, args.large_greedy, args.large_pool, args.program_pool)
    return [p for p in (*pools, args.program_greedy, args.large_program_greedy) if p]


def write_report(summary: dict[str, Any], args: argparse.Namespace) -> Path:
    """``report.md``: setup, pools, commands, the table, the headline and the plots."""
    pts = summary["points"]
    lines = [
        "# Test-time scaling of the embedded 0.5B model on MATH-500 (exact replay)",
        "",
        "Chain of thought, and program-aided: programs written by the model and run in the "
        "sandbox (`ttscale.sandbox`); their pools store each execution result, so replay "
        "runs nothing.",
        "",
        f"Host ISA: **{summary['isa']}** (2 vCPU). {summary['n_problems']} MATH-500 problems "
        f"(level-stratified: `--sample {summary['n_problems']} --stratify --sample-seed 0`), "
        f"{summary['orders']} replay orders per problem; 95% CIs from a two-level bootstrap "
        f"(problems, then orders). eFLOPs from the Kinetics cost model on one hardware preset "
        f"for every row, `{summary.get('hardware', '?')}` (the replaying host's; "
        f"`TTSCALE_HARDWARE` picks another); accuracy and tokens do not depend on it.",
        "",
        "## Pools",
        "",
        "| pool | model | problems | K | T | max tokens | drawn on | built with |",
        "|---|---|---|---|---|---|---|---|",
        *[_fmt_pool(p) for p in _pools(args)],
        "",
        "## Evaluated with",
        "",
        "```bash",
        *summary["commands"],
        "```",
        "",
        "## Results",
        "",
        "| method | n | accuracy [95% CI] | tokens / problem | eFLOPs / problem |",
        "|---|---|---|---|---|",
    ]
    for p in sorted(pts, key=lambda p: (p["family"], p["label"], p["n"])):
        lines.append(
            f"| {p['label']} | {p['n']} | {p['accuracy']:.3f} [{p['ci'][0]:.3f}, "
            f"{p['ci'][1]:.3f}] | {p['tokens']:.0f} | {p['eflops']:.3g} |"
        )
    best, g, large = summary["best"], summary["small_greedy"], summary["large_greedy"]
    lines += [
        "",
        "## Headline",
        "",
        f"- 0.5B greedy: {g['accuracy']:.3f}; best 0.5B configuration: **{best['label']} at "
        f"{best['budget']}**, {best['accuracy']:.3f} [{best['ci'][0]:.3f}, {best['ci'][1]:.3f}] "
        f"at {best['eflops']:.3g} eFLOPs per problem; pass@{summary['k']} of the pool: "
        f"{summary['pass_at_k_small']:.3f} (the ceiling of any selection).",
    ]
    if large:
        reach = summary["reaches_large"]
        lines.append(
            f"- 1.5B greedy: {large['accuracy']:.3f} at {large['eflops']:.3g} eFLOPs per problem. "
            + (
                f"The cheapest 0.5B configuration at or above it: {reach['label']} at "
                f"{reach['budget']} ({reach['accuracy']:.3f}), "
                f"{reach['eflops'] / large['eflops']:.2f}x its eFLOPs."
                if reach
                else "No 0.5B configuration reaches it (goal missed); the best costs "
                f"{best['eflops'] / large['eflops']:.2f}x its eFLOPs."
            )
        )
    sp, lp = summary.get("small_program_greedy"), summary.get("large_program_greedy")
    if sp:
        lines.append(
            f"- Program-of-Thought greedy (each program run in the sandbox, its printed answer "
            f"graded): 0.5B {sp['accuracy']:.3f} [{sp['ci'][0]:.3f}, {sp['ci'][1]:.3f}] at "
            f"{sp['tokens']:.0f} tokens/problem (chain of thought: {g['accuracy']:.3f} at "
            f"{g['tokens']:.0f})"
            + (
                f"; 1.5B {lp['accuracy']:.3f} [{lp['ci'][0]:.3f}, {lp['ci'][1]:.3f}] at "
                f"{lp['eflops']:.3g} eFLOPs."
                if lp
                else "."
            )
        )
    if lp and large and lp["accuracy"] > large["ci"][1]:
        lines.append(
            "- The 1.5B model rises with programs too, beyond its chain-of-thought CI: the "
            "frontier moves; the 0.5B configurations are compared with both lines."
        )
    lines += [
        "",
        "![accuracy vs tokens](scaling_tokens.png)",
        "![accuracy vs eFLOPs](scaling_eflops.png)",
        "",
    ]
    path = args.out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=Path, required=True, help="0.5B K-sample pool")
    ap.add_argument("--greedy", type=Path, required=True, help="0.5B greedy pool (K=1, T=0)")
    ap.add_argument("--large-greedy", type=Path, help="1.5B greedy pool")
    ap.add_argument("--large-pool", type=Path, help="1.5B K-sample pool")
    ap.add_argument("--program-pool", type=Path, help="0.5B program pool (--format program)")
    ap.add_argument("--program-greedy", type=Path, help="0.5B program greedy pool")
    ap.add_argument("--large-program-greedy", type=Path, help="1.5B program greedy pool")
    ap.add_argument("--orders", type=int, default=20, help="replay orders per problem")
    ap.add_argument("--adaptive", nargs="+", default=["0.8", "0.9", "0.95"])
    ap.add_argument(
        "--confidence",
        nargs="*",
        default=["lowest_group:window=128"],
        help="confidence verifiers as stat[:opt=v;opt=v], e.g. tail:tail=128",
    )
    ap.add_argument("--keep", type=float, default=0.5, help="filtered: fraction kept (eta)")
    ap.add_argument(
        "--gate-keep",
        nargs="+",
        default=["0.9", "0.5"],
        help="DeepConf online: fraction of warm-up traces above the threshold",
    )
    ap.add_argument("--gate-window", type=int, default=64, help="DeepConf online: group size")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "scaling")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "scaling")
    args = ap.parse_args()

    from ttscale.cost import default_hardware
    from ttscale.host import host_info
    from ttscale.pools import load_pool

    args.out.mkdir(parents=True, exist_ok=True)
    todo = grids(args)
    commands = []
    points: list[dict[str, Any]] = []
    for g in todo:
        commands.append(shlex.join(g.command(Path("runs/scaling"))))
        run_grid(g, args.runs)
        points += summarize(g, args.runs)

    pool = load_pool(args.pool)
    k = pool.sampling.k
    n_problems = len(pool.problems)
    pass_k = sum(any(p.correct) for p in pool.problems.values()) / n_problems
    small = [p for p in points if p["family"].startswith("0.5B")]
    greedy = next(p for p in points if p["family"] == "0.5B greedy")
    large = next((p for p in points if p["family"] == "1.5B greedy"), None)
    small_prog = next((p for p in points if p["family"] == "0.5B program greedy"), None)
    large_prog = next((p for p in points if p["family"] == "1.5B program greedy"), None)
    best = max(small, key=lambda p: (p["accuracy"], -p["eflops"]))
    reach = None
    if large is not None:
        hits = [p for p in small if p["accuracy"] >= large["accuracy"]]
        reach = min(hits, key=lambda p: p["eflops"]) if hits else None
    ratio = best["eflops"] / large["eflops"] if large else math.nan
    summary = {
        "n_problems": n_problems,
        "k": k,
        "sampling": pool.sampling.model_dump(),
        "isa": host_info().isa,
        "hardware": default_hardware().name,
        "pass_at_k_small": pass_k,
        "points": points,
        "best": best,
        "small_greedy": greedy,
        "large_greedy": large,
        "reaches_large": reach,
        "small_program_greedy": small_prog,
        "large_program_greedy": large_prog,
        "commands": commands,
        "pools": {
            str(p): json.loads((p / "manifest.json").read_text())["name"] for p in _pools(args)
        },
    }
    summary["orders"] = args.orders
    (args.out / "scaling.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_report(summary, args)
    plots = [
        plot(points, args.out, "tokens", "generated tokens per problem (log)"),
        plot(points, args.out, "eflops", "eFLOPs per problem (log)"),
    ]
    print(json.dumps({"plots": [str(p) for p in plots]}))
    label = f"{best['label']}@n={best['n']}".replace(" ", "_")

    def acc(p: dict[str, Any] | None) -> str:
        return f"{p['accuracy']:.3f}" if p else "nan"

    isa = host_info().isa
    print(
        f"COT acc_small_greedy={greedy['accuracy']:.3f} pass_at_k_small={pass_k:.3f} k={k} "
        f"isa={isa}"
    )
    print(
        f"RESULT acc_small_best={best['accuracy']:.3f} best_config={label} "
        f"acc_large_greedy={acc(large)} eflops_small_best_over_large_greedy={ratio:.2f} "
        f"acc_small_program_greedy={acc(small_prog)} acc_large_program_greedy={acc(large_prog)} "
        f"n_problems={n_problems} isa={isa}"
    )


if __name__ == "__main__":
    main()
