# Sourced by scripts/start.sh and scripts/test.sh: makes .venv with nbstream, its
# development tools and the local model, and builds the widget front end.
# Safe to run again (fast then: pip keeps the compiled llama.cpp wheel in its cache).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "nbstream needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
command -v npm >/dev/null || { echo "npm is needed to build the widget front end (apt-get install nodejs npm)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

pip_quiet() {  # pip, without its notes about package mirrors this machine does not have
  .venv/bin/python -m pip -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

echo "== building the widget front end (js/)"
(cd js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
echo "== installing nbstream, its tools and the local model into .venv"
echo "   (the first time, this compiles llama.cpp: about 5 minutes on two cores)"
pip_quiet install --upgrade pip
# llama.cpp's multimodal part is not needed: leaving it out halves the build time
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" pip_quiet install -e ".[dev,local]"
export PATH="$PWD/.venv/bin:$PATH"
