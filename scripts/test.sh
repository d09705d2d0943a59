#!/usr/bin/env bash
# Sets up everything, then runs every test: lint and types, the JS unit tests, the
# Python tests (unit, loopback-server integration, real Jupyter kernels, JupyterLab in
# headless Chromium, the real local model), and the example notebooks under nbval.
# Extra arguments go to the Python tests' pytest, e.g. `bash scripts/test.sh -k magic -x`.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
echo "== Chromium for the browser tests (Debian's package)"
bash scripts/ensure_chromium.sh
echo "== lint and types"
ruff check .
ruff format --check .
mypy
echo "== JS unit tests (vitest)"
(cd js && npm test --silent)
echo "== Python tests"
python -m pytest -p no:cacheprovider "$@"
echo "== example notebooks (nbval, replaying notebooks/recordings)"
NBSTREAM_REPLAY=notebooks/recordings NBSTREAM_REPLAY_SPEED=0 python -m pytest \
  -p no:cacheprovider --nbval --nbval-current-env \
  --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/
