#!/usr/bin/env bash
# Sets up everything, then runs every test: lint and types, the JS unit tests, and the
# Python tests (unit, loopback-server integration, real Jupyter kernels).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k magic -x`.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
echo "== lint and types"
ruff check .
ruff format --check .
mypy
echo "== JS unit tests (vitest)"
(cd js && npm test --silent)
echo "== Python tests"
python -m pytest "$@"
