#!/bin/sh
# Test set-up for tests/graph/test_inspect_browser.py and the SVG/PDF output of
# graph/inspector: Debian's chromium + chromedriver (/usr/bin/chromedriver) and Graphviz.
# Run as root (CI and the developer machines are root); idempotent.
set -eu
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
command -v dot >/dev/null 2>&1 || missing="$missing graphviz"
if [ -z "$missing" ]; then
    echo "install_browser.sh: chromium, chromium-driver and graphviz already installed"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_browser.sh: need root to apt-get install$missing (the browser tests will be skipped)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
echo "install_browser.sh: installed$missing"
chromium --version 2>/dev/null | head -1 || true
