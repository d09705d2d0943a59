# Sourced by scripts/start.sh and scripts/test.sh: makes .venv with nbstream and its
# development tools, and builds the widget front end. Safe to run again (fast then).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "nbstream needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
command -v npm >/dev/null || { echo "npm is needed to build the widget front end (apt-get install nodejs npm)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "== building the widget front end (js/)"
(cd js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
echo "== installing nbstream and its tools into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
export PATH="$PWD/.venv/bin:$PATH"
