#!/usr/bin/env bash
# The test command (README "Quick start", step 2). `.ci/run` calls this same script, so
# CI and newcomers cannot drift apart. Installs/updates .venv first (no-op when current),
# then runs the whole suite, real-model tests included. Extra args go to pytest, e.g.
#   bash scripts/test.sh -m "not real_model"     # the fast loop (~20 s)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${TTSCALE_VENV:-.venv}/bin/python" -m pytest "$@"
