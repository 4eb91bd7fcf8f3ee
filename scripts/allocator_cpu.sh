#!/usr/bin/env bash
# Issue 7 on a 2-core CPU host: fit the allocator's policy for the embedded model on the
# calibration split, then measure `auto` against uniform best-of-N and the fixed strategies on
# held-out MATH-500 problems (benchmarks/allocator.py). No verifier: the 0.5B judge is not
# informative (issue 4: AUROC 0.33) and doubles the cost of every search step.
#
# Sized for ~30-40 generated tok/s (fp32 vLLM, batch ~50); measured on a 2-core AVX2 host:
# calibration 35 min, evaluation 68 min (every run stops at its budget or earlier):
#   calibration  CAL_N=16 problems (round-robin over levels 1-5) x {best-of-N, PDR} x
#                budgets 1000,3000 tokens (<=128k), plus a 4 x 512-token probe each (<=33k);
#   evaluation   EVAL_N=16 held-out problems x {auto, best-of-N, PDR} at 500,1000,3000 (<=216k).
# BON_EXTRA=6000 adds best-of-N alone at that budget (~70k tokens more): needed only when
# auto's best accuracy is above every best-of-N point, else the ratio is a lower bound.
# Sequential refinement is left out of the CPU calibration (64k more; 0/6 in the strategies
# benchmark); CAL_STRATEGIES=best_of_n_majority,pdr,sequential_refine adds it.
# On a GPU raise them (e.g. CAL_N=200 EVAL_N=100, CAL_BUDGETS=1000,3000,8000).
# Holds /tmp/ttscale-cpu.lock. Every stage appends each row as its run ends and skips
# finished ones: rerun the same command after an interruption. A first SIGINT/SIGTERM lets
# the runs in flight finish (nothing is thrown away) and stops; a second stops at once.
#
#   bash scripts/allocator_cpu.sh                       # the real run
#   BACKEND=scripted OUT=/tmp/alloc bash scripts/allocator_cpu.sh   # pipeline check, seconds
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${BACKEND:-vllm}
OUT=${OUT:-runs/allocator}
CAL_N=${CAL_N:-16}
EVAL_N=${EVAL_N:-16}
CAL_STRATEGIES=${CAL_STRATEGIES:-best_of_n_majority,pdr}
CAL_BUDGETS=${CAL_BUDGETS:-1000,3000}
EVAL_BUDGETS=${EVAL_BUDGETS:-500,1000,3000}
BON_EXTRA=${BON_EXTRA:-}
LOCK=()
ENGINE=()
if [[ "$BACKEND" == scripted ]]; then
    RESULT=${RESULT:-$OUT/allocator}  # the pipeline check writes beside its rows
else
    RESULT=${RESULT:-benchmarks/results/allocator_vllm}  # the real run's committed results
    LOCK=(flock /tmp/ttscale-cpu.lock)
    ENGINE=(-B kv_cache_gib=6)  # ~32-48 runs in flight, up to 5 samples each: keep them resident
fi
mkdir -p "$OUT"

"${LOCK[@]}" .venv/bin/ttscale calibrate --dataset math_train200 --run --backend "$BACKEND" \
    --limit "$CAL_N" --budgets "$CAL_BUDGETS" "${ENGINE[@]}" \
    --strategies "$CAL_STRATEGIES" \
    --rows "$OUT/calibration_rows.jsonl" --out "$OUT/policy.json"

BENCH=(.venv/bin/python benchmarks/allocator.py --backend "$BACKEND" --n "$EVAL_N"
    --policy "$OUT/policy.json" --rows "$OUT/eval_rows.jsonl" --out "$RESULT" "${ENGINE[@]}")
"${LOCK[@]}" "${BENCH[@]}" --budgets "$EVAL_BUDGETS" --methods auto,best_of_n,pdr
if [[ -n "$BON_EXTRA" ]]; then
    "${LOCK[@]}" "${BENCH[@]}" --budgets "$BON_EXTRA" --methods best_of_n
fi
