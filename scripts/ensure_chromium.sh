#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed (/usr/bin/chromium), for the browser tests
# (tests/test_browser.py) and the browser benchmark (bench/browser.py).
# Idempotent and quiet when it is already there. Never uses `playwright install`: that
# downloads a browser build of its own, which cannot be fetched here.
set -euo pipefail

if [ -x /usr/bin/chromium ] || [ -x /usr/lib/chromium/chromium ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "ensure_chromium: /usr/bin/chromium is missing and this is not root;" >&2
  echo "  install it with: sudo apt-get update && sudo apt-get install -y chromium" >&2
  echo "  (the browser tests skip without it)" >&2
  exit 0
fi

echo "ensure_chromium: installing Debian's chromium (about a minute, once)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
if [ ! -x /usr/bin/chromium ]; then
  echo "ensure_chromium: apt-get finished but /usr/bin/chromium is still missing" >&2
  exit 1
fi
echo "ensure_chromium: $(/usr/bin/chromium --version 2>/dev/null | tail -n 1)"
