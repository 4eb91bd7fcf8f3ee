#!/usr/bin/env bash
# Issue 9, item 6: the embedded model on a 50-problem stratified MATH-500 slice (10 per level,
# sample seed 0): greedy, best-of-N (self-consistency) and two verifier-guided searches (beam
# search, particle filtering; LLM judge on the policy model, per step) at three token budgets.
# Writes the report (markdown, HTML, PNGs) to docs/results/math500_slice50/.
#
# Long CPU job (hours on 2 cores): it holds /tmp/ttscale-cpu.lock. Resumable: rerun the same
# command after an interruption and finished rows are kept.
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
BUDGETS=${BUDGETS:-tokens=1500,tokens=3000,tokens=6000}
TTSCALE=(.venv/bin/ttscale)
if [[ "$BACKEND" != scripted ]]; then
    TTSCALE=(flock /tmp/ttscale-cpu.lock .venv/bin/ttscale)
fi

COMMON=(
    --dataset math500 --sample "$SAMPLE" --stratify --sample-seed 0 --seeds 1
    --backend "$BACKEND" --out "$RUN" --verifier llm_judge -V mode=step --concurrency 16
)
STEP=(-o max_tokens=1024 -o step_tokens=192 -o min_step_tokens=32 -o max_steps=30)

# Greedy once: one sample capped at 1024 tokens, so a larger budget changes nothing.
"${TTSCALE[@]}" eval "${COMMON[@]}" --strategy greedy:best_of_n \
    -o greedy.n=1 -o greedy.temperature=0 -o greedy.adaptive=false -o greedy.verifier=false \
    --budget tokens=1500

# Best-of-N samples one solution per round (round_size=1) until the budget or the Beta
# stopping rule ends it; concurrent problems still share engine batches (CoalescingGenerator).
"${TTSCALE[@]}" eval "${COMMON[@]}" --strategy best_of_n,beam_search,particle_filter \
    -o best_of_n.n=16 -o best_of_n.round_size=1 -o best_of_n.select=majority \
    -o best_of_n.verifier=false \
    -o beam_search.n=8 -o beam_search.beam_width=2 -o particle_filter.n=6 "${STEP[@]}" \
    --budget "$BUDGETS"

.venv/bin/ttscale report "$RUN" --out "$REPORT" \
    --title "MATH-500, 50-problem stratified slice: embedded model ($BACKEND)"
