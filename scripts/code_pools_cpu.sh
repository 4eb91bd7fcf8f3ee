#!/usr/bin/env bash
# The HumanEval code pools behind benchmarks/code.py (issue 28), drawn on the 2-core CPU host
# with the embedded models. Every stage is one resumable `ttscale pool build --format code`:
# kill it, rerun this script, and only the missing problems are drawn. Stages run one at a
# time under the project's CPU lock.
#
#   bash scripts/code_pools_cpu.sh greedy        # 0.5B and 1.5B greedy on all 164 (K=1, T=0)
#   T=0.7 bash scripts/code_pools_cpu.sh pool    # 0.5B, K=16 at T, top-p 0.95, all 164
#   T=0.7 bash scripts/code_pools_cpu.sh all     # greedy, then pool
#
# A code pool stores, per sample, the program, its public-test run and its hidden-test grade;
# per problem, the code strategy's generated-inputs completion (greedy) and every sandbox
# run the strategy makes (see ttscale/pools/pool.py), so `ttscale eval --backend replay`
# replays `--strategy code` (select first / majority / public / cluster) exactly. Then:
#
#   .venv/bin/python benchmarks/code.py --pool $POOLS/humaneval_k16_t$T \
#       --greedy $POOLS/humaneval_greedy --large-greedy $POOLS/humaneval_greedy_1.5b
#
# Pools go to $POOLS (default runs/pools). BACKEND=scripted (with SCRIPT=FILE.json, the
# scripted coder's replies; IDS="HumanEval/0,HumanEval/2" for a few problems; CPU_LOCK=none
# to skip the lock) checks the pipeline without a model.
set -euo pipefail
cd "$(dirname "$0")/.."
POOLS=${POOLS:-runs/pools}
T=${T:-}
BACKEND=${BACKEND:-vllm}
if [ "${CPU_LOCK:-}" = none ]; then
  LOCK=()
else
  LOCK=(flock /tmp/ttscale-cpu.lock)
fi
M15=qwen2.5-coder-1.5b-instruct-q4km
if [ "$BACKEND" = scripted ]; then
  ENGINE=(--backend scripted ${SCRIPT:+--script "$SCRIPT"})
  LARGE=()
else
  ENGINE=(--backend "$BACKEND" -B kv_cache_gib=6)
  LARGE=(--model "$M15")
fi
CODE=(.venv/bin/ttscale pool build --dataset humaneval --format code --max-tokens 768
  --no-progress "${ENGINE[@]}" ${IDS:+--ids "$IDS"})

need_t() {
  if [ -z "$T" ]; then
    echo "set T=<temperature> for the K=16 pool (e.g. T=0.7, the code strategy's default)" >&2
    exit 2
  fi
}

greedy() {
  "${LOCK[@]}" "${CODE[@]}" --k 1 --temperature 0 --concurrency 64 \
    --out "$POOLS/humaneval_greedy"
  "${LOCK[@]}" "${CODE[@]}" --k 1 --temperature 0 --concurrency 64 "${LARGE[@]}" \
    --out "$POOLS/humaneval_greedy_1.5b"
}

pool() {
  need_t
  "${LOCK[@]}" "${CODE[@]}" --k 16 --temperature "$T" --top-p 0.95 --concurrency "${CONC:-16}" \
    --out "$POOLS/humaneval_k16_t$T"
}

case "${1:-}" in
  greedy) greedy ;;
  pool) pool ;;
  all)
    need_t
    greedy
    pool
    ;;
  *)
    echo "usage: [T=0.7] bash scripts/code_pools_cpu.sh greedy|pool|all" >&2
    exit 2
    ;;
esac
