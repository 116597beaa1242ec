#!/usr/bin/env bash
# Test setup for the dashboard's browser test (server/tests/dashboard_browser.rs): makes sure
# headless Chromium and its WebDriver are installed, from the Debian packages `chromium` and
# `chromium-driver` (apt-get, as root or through sudo), and prints where they are:
#   CHROMIUM=/usr/bin/chromium
#   CHROMEDRIVER=/usr/bin/chromedriver
# Exits non-zero with one line on stderr saying why when they are missing and cannot be
# installed; the test then fails with that line (it never skips silently).
set -euo pipefail

find_bins() {
  CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
  CHROMEDRIVER=$(command -v chromedriver || true)
  [[ -n "$CHROMIUM" && -n "$CHROMEDRIVER" ]]
}

if ! find_bins; then
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "setup-chromium: chromium and chromium-driver are not installed and this user cannot run apt-get (not root, no passwordless sudo); install them: apt-get install chromium chromium-driver" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-o DPkg::Lock::Timeout=600 -y --no-install-recommends)
  if ! "${SUDO[@]}" apt-get install "${apt_opts[@]}" chromium chromium-driver >/tmp/setup-chromium.log 2>&1; then
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update >>/tmp/setup-chromium.log 2>&1 || true
    if ! "${SUDO[@]}" apt-get install "${apt_opts[@]}" chromium chromium-driver >>/tmp/setup-chromium.log 2>&1; then
      echo "setup-chromium: apt-get install chromium chromium-driver failed: $(tail -n 1 /tmp/setup-chromium.log) (full log: /tmp/setup-chromium.log)" >&2
      exit 1
    fi
  fi
  if ! find_bins; then
    echo "setup-chromium: installed chromium and chromium-driver but cannot find the chromium and chromedriver binaries on PATH" >&2
    exit 1
  fi
fi
echo "CHROMIUM=$CHROMIUM"
echo "CHROMEDRIVER=$CHROMEDRIVER"
