#!/usr/bin/env bash
# Test setup for tests/tensorboard_events.rs: makes a throwaway venv at $1 holding TensorBoard
# from PyPI (pinned), whose own event-file reader then opens what `cohort simulate` wrote.
# It is a separate venv because the libtorch venv must not be changed, and TensorBoard is a
# test tool only. Idempotent: a venv that already imports the pinned version is left alone.
# Prints the venv's python on success:
#   PYTHON=/path/to/venv/bin/python
# Exits non-zero with one line on stderr saying why when it cannot; the test then fails with
# that line (it never skips silently).
set -euo pipefail

TENSORBOARD_VERSION="2.21.0"
venv="${1:?usage: setup-tensorboard.sh VENV_DIR}"

have=$("$venv/bin/python" -c 'import tensorboard; print(tensorboard.__version__)' 2>/dev/null || true)
if [ "$have" != "$TENSORBOARD_VERSION" ]; then
  command -v python3 >/dev/null 2>&1 \
    || { echo "setup-tensorboard: python3 not found (Debian: apt-get install python3 python3-venv)" >&2; exit 1; }
  rm -rf "$venv"
  python3 -m venv "$venv" >/tmp/setup-tensorboard.log 2>&1 \
    || { echo "setup-tensorboard: python3 -m venv $venv failed: $(tail -n 1 /tmp/setup-tensorboard.log) (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "tensorboard==$TENSORBOARD_VERSION" >>/tmp/setup-tensorboard.log 2>&1 \
    || { echo "setup-tensorboard: pip could not install tensorboard==$TENSORBOARD_VERSION: $(tail -n 1 /tmp/setup-tensorboard.log) (is PyPI reachable?)" >&2; exit 1; }
fi
echo "PYTHON=$venv/bin/python"
