#!/usr/bin/env bash
# Install the Debian packages dsv3 needs to build and test, when missing.
set -euo pipefail
need=()
for p in build-essential pkg-config libopenblas-dev libpcre2-dev libcjson-dev libopenmpi-dev openmpi-bin bible-kjv chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
