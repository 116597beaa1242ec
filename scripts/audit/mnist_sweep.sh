#!/usr/bin/env bash
# The issue-20 table in docs/benchmarks.md: `cohort audit dp-sgd` on MNIST (mnist-cnn, 3 epochs
# at expected batch 1024, M = 1000) for σ in {0.5, 1, 2}, white- and black-box, plus the plain
# `cohort train` run with the same trainer settings as the overhead baseline.
# Usage: scripts/audit/mnist_sweep.sh OUT_DIR   (needs `make data` and a built `cohort`)
set -u
cd "$(dirname "$0")/../.."
BIN=${COHORT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cohort}
OUT=${1:?give an output folder}
mkdir -p "$OUT"
COMMON=(--model mnist-cnn --data mnist:data/mnist --canaries 1000 --epochs 3 --batch 1024 --clip 1 --lr 0.5 --delta 1e-5 --json)
uptime
rm -f "$OUT/ledger.jsonl"
"$BIN" train --model mnist-cnn --data mnist:data/mnist --epochs 3 --batch 1024 --clip 1 --lr 0.5 \
  --momentum 0 --noise-multiplier 1 --delta 1e-5 --ledger "$OUT/ledger.jsonl" --budget 1000 \
  --out "$OUT/plain.safetensors" --json > "$OUT/plain.json"
for sigma in 1 0.5 2; do
  for mode in white-box black-box; do
    "$BIN" audit dp-sgd "${COMMON[@]}" --noise-multiplier "$sigma" --mode "$mode" \
      --out "$OUT/$mode-$sigma" > "$OUT/$mode-$sigma.json"
    echo "$mode σ=$sigma exit $?"
  done
done
uptime
