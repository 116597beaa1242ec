#!/usr/bin/env bash
# Runs schemathesis (schema-driven API fuzzing, from PyPI) with the given arguments, first
# installing the pinned version into its own venv in the CI cache folder if it is not there
# (idempotent: a second run installs nothing). server/tests/schema_fuzz.rs calls it against a
# server on 127.0.0.1; by hand: `scripts/schemathesis.sh run URL/openapi.json --url URL ...`.
set -euo pipefail

version=4.32.5
cache="${COHORT_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cohort-ci}"
venv="$cache/schemathesis"

if ! "$venv/bin/st" --version 2>/dev/null | grep -qF "$version"; then
  echo "schemathesis: installing $version into $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" \
    || { echo "schemathesis: pip install failed; check that PyPI is reachable" >&2; exit 1; }
fi
exec "$venv/bin/st" "$@"
