"""Evaluation on MATH/AIME: datasets, runner, metrics and reports (``ttscale eval``,
``ttscale report``).

- ``datasets``: packaged MATH-500, AIME 2024, AMC 2023, GSM8K test, MATH-train sample (with
  provenance in ``data/SOURCES.md``) and user JSONL; filters and seeded stratified sampling.
- ``runner``: the resumable (problem, strategy, budget, seed) grid; local (batched across
  problems) and Ray executors; graded with math-verify.
- ``metrics``: accuracy with bootstrap CIs, maj@k, pass@k, weighted vote, compute per
  problem, per-level breakdown, paired bootstrap between runs.
- ``report``: markdown/HTML report and accuracy-vs-compute plots.

Submodules import their heavy dependencies (scipy, matplotlib, ray) lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Selection",
    "load_dataset",
    "parse_budgets",
    "parse_strategies",
    "run_eval",
    "summarize",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in ("Selection", "load_dataset"):
        from ttscale.evals import datasets

        return getattr(datasets, name)
    if name in ("parse_budgets", "parse_strategies", "run_eval"):
        from ttscale.evals import runner

        return getattr(runner, name)
    if name == "summarize":
        from ttscale.evals.metrics import summarize

        return summarize
    if name == "write_report":
        from ttscale.evals.report import write_report

        return write_report
    raise AttributeError(name)
