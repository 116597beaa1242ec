#!/usr/bin/env bash
# Creates .venv with PyPI's torch (the libtorch that tch links against) and links its torch/
# folder to .venv/libtorch, the path .cargo/config.toml points LIBTORCH at. Idempotent: a venv
# that already holds the right torch is left alone.
set -euo pipefail

TORCH_VERSION="2.13.0" # the exact version tch 0.26 is built against
venv="${COHORT_VENV:-.venv}"

fail() { echo "setup: $*" >&2; exit 1; }

if [ -L "$venv/libtorch" ] && [ -f "$venv/.cohort-torch-version" ] \
  && [ "$(cat "$venv/.cohort-torch-version")" = "$TORCH_VERSION" ] && [ -d "$venv/libtorch/lib" ]; then
  exit 0
fi

command -v python3 >/dev/null 2>&1 \
  || fail "python3 not found. Install Python 3 (Debian: apt-get install python3 python3-venv python3-pip) and rerun."
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 \
  || fail "python3 cannot make a venv with pip. Install it (Debian: apt-get install python3-venv python3-pip) and rerun."

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  python3 -m venv "$venv" || fail "python3 -m venv $venv failed (Debian: apt-get install python3-venv)."
fi
"$venv/bin/python" -m pip --version >/dev/null 2>&1 \
  || fail "pip is missing in $venv. Install it (Debian: apt-get install python3-pip) and rerun."

have=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" != "$TORCH_VERSION" ]; then
  echo "setup: installing torch==$TORCH_VERSION into $venv (about 5 GB, once)"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "torch==$TORCH_VERSION" \
    || fail "pip could not install torch==$TORCH_VERSION; check that PyPI is reachable and rerun."
fi

# A relative link keeps the venv valid when the checkout moves.
torch_dir=$("$venv/bin/python" -c 'import os, pathlib, sys, torch; print(os.path.relpath(pathlib.Path(torch.__file__).parent, sys.argv[1]))' "$venv" 2>/dev/null)
[ -f "$venv/$torch_dir/lib/libtorch_cpu.so" ] || fail "torch in $venv has no lib/libtorch_cpu.so; remove $venv and rerun."
ln -sfn "$torch_dir" "$venv/libtorch"
echo "$TORCH_VERSION" > "$venv/.cohort-torch-version"
echo "setup: libtorch $TORCH_VERSION ready at $venv/libtorch"
