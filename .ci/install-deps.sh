#!/usr/bin/env bash
# Install the Debian packages dsv3 needs to build and test, when missing.
set -euo pipefail
need=()
for p in build-essential pkg-config libopenblas-dev libpcre2-dev libcjson-dev libmicrohttpd-dev libopenmpi-dev openmpi-bin bible-kjv chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Python packages the optional tests use (they skip with a line when absent):
# the official openai client for the `dsv3 serve` tests.  Best effort.
if command -v python3 >/dev/null 2>&1 && ! python3 -c "import openai" >/dev/null 2>&1; then
  python3 -m pip install -q --retries 1 --timeout 5 openai >/dev/null 2>&1 || \
    python3 -m pip install -q --retries 1 --timeout 5 --break-system-packages openai >/dev/null 2>&1 || \
    echo "install-deps: could not pip install openai (the serve client tests will skip)"
fi
