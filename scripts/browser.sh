#!/usr/bin/env bash
# Make a headless browser available for the dashboard's browser test (tests/e2e/test_dashboard_browser.py):
# Debian's chromium and chromium-driver, installed from the machine's own apt sources when missing (as root).
# Idempotent and quick when they are there. selenium itself comes with the test extra (pyproject.toml).
set -euo pipefail

log() { echo "browser: $*" >&2; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing ${missing[*]} and not root: install them (apt-get install ${missing[*]}) or run as root"
    exit 1
  fi
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log "$(chromium --version 2>/dev/null | head -1), $(chromedriver --version 2>/dev/null | head -1 | cut -d' ' -f1-2)"
