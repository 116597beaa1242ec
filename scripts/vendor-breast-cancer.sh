#!/usr/bin/env bash
# Regenerates client/data/breast_cancer.csv from scikit-learn's wheel (the provenance of the
# vendored copy; `make data` does not need it). The wheel's CSV has a count line
# `569,30,malignant,benign` and rows of 30 features plus a 0/1 target (0 = malignant); we write
# a header of the real feature names (scikit-learn's, spaces as underscores) and a `diagnosis`
# column of `malignant`/`benign`, keeping every number exactly as written upstream.
# scikit-learn is downloaded, never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=client/data/breast_cancer.csv
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps --only-binary=:all: scikit-learn -d "$work"
unzip -q -o "$work"/scikit_learn-*.whl 'sklearn/datasets/data/breast_cancer.csv' -d "$work"
python3 - "$work/sklearn/datasets/data/breast_cancer.csv" "$out" <<'PY'
import sys
source, target = sys.argv[1], sys.argv[2]
parts = ["radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
         "concave points", "symmetry", "fractal dimension"]
names = ([f"mean {p}" for p in parts] + [f"{p} error" for p in parts]
         + [f"worst {p}" for p in parts])
header = [n.replace(" ", "_") for n in names] + ["diagnosis"]
with open(source) as f:
    count, width, *classes = f.readline().strip().split(",")
    rows = [line.strip().split(",") for line in f if line.strip()]
assert (int(count), int(width), classes) == (569, 30, ["malignant", "benign"]), (count, width, classes)
assert len(rows) == 569 and all(len(r) == 31 for r in rows)
with open(target, "w") as f:
    f.write(",".join(header) + "\n")
    for r in rows:
        f.write(",".join(r[:30] + [classes[int(r[30])]]) + "\n")
print(f"wrote {target}: {len(rows)} rows, {len(header) - 1} features")
PY
