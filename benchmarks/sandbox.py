"""How fast does a sandboxed program start? Start-to-first-instruction, warm vs cold.

The latency is the program's own first statement, ``import time; print(time.time())``,
minus the host's ``time.time()`` just before submitting it (same clock, same machine):

- ``sandbox``: ``Sandbox.run`` on a warm worker (sympy and numpy preloaded, one fork per
  program, namespaces + per-program uid + rlimits + seccomp);
- ``bare``: ``subprocess.run([sys.executable, "-c", ...])``, no isolation, no imports;
- ``bare_sympy``: the same, importing sympy first (what a cold per-program sandbox with
  sympy available would pay at least);
- ``cold_bwrap``: a fresh bubblewrap sandbox + interpreter per program (the same mounts
  and namespaces as a worker, no preload).

All four run in one process, interleaved after a warm-up, order rotated every round;
``--runs`` rounds for the fast ones, every ``--runs // --slow-runs``-th round for the slow
ones. Reported: median and p90 in ms and each median's ratio to the sandbox's. Run it under
the shared CPU lock like every benchmark here::

    flock /tmp/ttscale-cpu.lock .venv/bin/python benchmarks/sandbox.py [--runs 50] [--slow-runs 15]

Writes ``benchmarks/results/sandbox.json``; last line ``RESULT
sandbox_first_instruction_ms_median=<> bare_subprocess_ms_median=<> bare_sympy_ms_median=<>
isolation=<level> isa=<isa>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ttscale.host import host_info
from ttscale.sandbox import Sandbox, detect_isolation
from ttscale.sandbox.isolation import bwrap_argv

ROOT = Path(__file__).resolve().parent.parent
FIRST = "import time; print(time.time())"


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--slow-runs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sandbox.json")
    args = ap.parse_args()

    isolation = detect_isolation()
    box = Sandbox(workers=1, allow_weak=True)
    box.warm()

    def sandbox() -> tuple[float, float]:
        t0 = time.time()
        r = box.run(FIRST)
        t1 = time.time()
        if not r.ok:
            raise RuntimeError(f"sandbox run failed: {r}")
        return float(r.stdout) - t0, t1 - t0

    def process(argv: list[str]) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            t0 = time.time()
            p = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
            t1 = time.time()
            return float(p.stdout.split()[-1]) - t0, t1 - t0

        return run

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENBLAS_NUM_THREADS": "1"}
    methods: dict[str, tuple[Callable[[], tuple[float, float]], bool]] = {
        "sandbox": (sandbox, False),
        "bare": (process([sys.executable, "-c", FIRST]), False),
        "bare_sympy": (process([sys.executable, "-c", "import sympy; " + FIRST]), True),
    }
    if isolation.level == "namespaces" and isolation.tool:
        cold = bwrap_argv(
            isolation.tool,
            [sys.executable, "-c", FIRST],
            user_namespace=not isolation.uid_separation,
        )
        methods["cold_bwrap"] = (process(cold), False)

    for fn, _ in methods.values():  # warm-up: page cache, the worker's first fork
        fn()
    first: dict[str, list[float]] = {name: [] for name in methods}
    total: dict[str, list[float]] = {name: [] for name in methods}
    every = max(1, args.runs // max(1, args.slow_runs))
    names = list(methods)
    for i in range(args.runs):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            fn, slow = methods[name]
            if slow and i % every:
                continue
            a, b = fn()
            first[name].append(a * 1000)
            total[name].append(b * 1000)
    box.close()

    base = statistics.median(first["sandbox"])
    rows = {}
    head = ("method", "n", "first ms med", "p90", "x sandbox", "wall ms med")
    print("{:<12} {:>3} {:>13} {:>8} {:>10} {:>12}".format(*head))
    for name in names:
        med = statistics.median(first[name])
        rows[name] = {
            "n": len(first[name]),
            "first_instruction_ms_median": med,
            "first_instruction_ms_p90": p90(first[name]),
            "wall_ms_median": statistics.median(total[name]),
            "ratio_to_sandbox": med / base,
            "first_instruction_ms": first[name],
        }
        print(
            f"{name:<12} {len(first[name]):>3} {med:>13.1f} {p90(first[name]):>8.1f} "
            f"{med / base:>10.1f} {statistics.median(total[name]):>12.1f}"
        )
    info = host_info()
    import numpy
    import sympy

    report = {
        "host": {
            "cpu_model": info.cpu_model,
            "cores": info.cores,
            "isa": info.isa,
            "python": platform.python_version(),
            "sympy": sympy.__version__,
            "numpy": numpy.__version__,
            "kernel": platform.release(),
        },
        "isolation": {
            "level": isolation.level,
            "uid_separation": isolation.uid_separation,
            "detail": isolation.detail,
        },
        "runs": args.runs,
        "methods": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    print(
        f"RESULT sandbox_first_instruction_ms_median={base:.1f} "
        f"bare_subprocess_ms_median={rows['bare']['first_instruction_ms_median']:.1f} "
        f"bare_sympy_ms_median={rows['bare_sympy']['first_instruction_ms_median']:.1f} "
        f"isolation={isolation.level} isa={info.isa}"
    )


if __name__ == "__main__":
    main()
