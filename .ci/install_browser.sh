#!/usr/bin/env bash
# Installs what tests/test_browser.py drives: Debian's Chromium at /usr/bin/chromium.
# Idempotent (does nothing when it is there).  Playwright itself is a Python package from the
# dev extra (pip install -e ".[dev]"); it only drives this browser: never `playwright install`.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "install_browser: not root and no sudo; install Debian's chromium by hand" >&2
        exit 1
    fi
fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null) installed in $(( $(date +%s) - start )) s"
