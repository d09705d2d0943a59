#!/usr/bin/env bash
# Sets up everything, then opens JupyterLab on the quickstart notebook and prints its URL.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
mkdir -p notebooks
exec jupyter lab --no-browser --ip=127.0.0.1 --port="${PORT:-8888}" \
  --ServerApp.root_dir="$PWD/notebooks" \
  --LabApp.extension_manager=readonly --LabApp.news_url=None \
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
  $( [ "$(id -u)" = 0 ] && echo --allow-root )
