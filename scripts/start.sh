#!/usr/bin/env bash
# Sets up everything, starts the local model (llama.cpp + SmolLM2, no key, no network)
# and JupyterLab on the quickstart notebook, and prints the URL to open. Ctrl-C stops both.
set -euo pipefail
source "$(dirname "$0")/setup.sh"

log=.venv/nbstream-local.log
: > "$log"
python -m nbstream.local --log .venv/llama-server.log > "$log" 2>&1 &
local_pid=$!
trap 'kill "$local_pid" 2>/dev/null || true' EXIT INT TERM
echo "== starting the local model"
for _ in $(seq 1 240); do  # up to 2 minutes
  if grep -q "at http\|already running" "$log"; then break; fi
  if ! kill -0 "$local_pid" 2>/dev/null; then cat "$log" >&2; exit 1; fi
  sleep 0.5
done
cat "$log"
grep -q "at http\|already running" "$log" || { echo "the local model did not start" >&2; exit 1; }

echo "== starting JupyterLab: open the http://127.0.0.1:... URL it prints below"
cd notebooks
jupyter lab quickstart.ipynb --no-browser --ip=127.0.0.1 --port="${PORT:-8888}" \
  --LabApp.extension_manager=readonly --LabApp.news_url=None \
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
  $( [ "$(id -u)" = 0 ] && echo --allow-root )
