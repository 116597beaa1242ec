#!/usr/bin/env bash
# Side-by-side DP-SGD throughput: `cohort bench dp-sgd` and Opacus on the same models, batch and
# machine. Opacus goes into a throwaway venv under /tmp that reuses the project's torch through
# a .pth file, so the project's .venv is never modified.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${OPACUS_VENV:-/tmp/cohort-opacus-venv}"
PY="$(readlink -f "$ROOT/.venv/bin/python")"
SITE="$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
    | xargs -I{} sh -c "echo '$SITE' > {}/cohort-torch.pth"
  "$VENV/bin/pip" install -q opacus==1.6.0
fi
BATCH="${BATCH:-256}"
for model in mnist-cnn mlp; do
  cargo run --release -q --bin cohort -- bench dp-sgd --model "$model" --batch "$BATCH" --json
  "$VENV/bin/python" "$ROOT/benches/compare/opacus_dp_sgd.py" --model "$model" --batch "$BATCH"
done
