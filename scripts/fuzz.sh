#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders a client's bytes reach (fuzz/): each target runs for
# FUZZ_SECONDS (default 60), starting from its committed corpus. Installs cargo-fuzz (crates.io)
# into a cache folder when missing. Only the stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz's nightly flags (-Zsanitizer) through.
#
#   scripts/fuzz.sh                  every target, FUZZ_SECONDS each
#   scripts/fuzz.sh frame secagg     those targets
#   FUZZ_SANITIZER=none scripts/fuzz.sh   without AddressSanitizer (our crates forbid unsafe code;
#                                         ASan watches the dependencies' unsafe code)
#
# A crash leaves its input under fuzz/artifacts/<target>/ and fails the run; fix the bug and add
# the input to fuzz/corpus/<target>/ (tests/fuzz_corpus.rs replays it in make test from then on).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
cache="${COHORT_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cohort-ci}"
tools="$cache/tools"
export PATH="$tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# Its own target dir: cargo-fuzz builds everything with coverage (and sanitizer) flags.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$cache/fuzz-target}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz into $tools (once)"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$tools" \
    || { echo "fuzz: cargo install cargo-fuzz failed; check that crates.io is reachable" >&2; exit 1; }
fi

pure=(frame safetensors_server secagg)
client=(safetensors_client data_spec)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${pure[@]}" "${client[@]}")

for t in "${targets[@]}"; do
  features=()
  for c in "${client[@]}"; do [ "$t" = "$c" ] && features=(--features client); done
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz: $t for ${seconds}s (sanitizer: $sanitizer)"
  # -rss_limit_mb: libtorch alone maps ~1 GB in the client targets.
  cargo fuzz run --fuzz-dir fuzz -s "$sanitizer" "${features[@]}" "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 2>&1 \
    | tee "$CARGO_TARGET_DIR/fuzz-$t.log" | grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|Done)" || true
  status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || { echo "fuzz: $t FAILED (see $CARGO_TARGET_DIR/fuzz-$t.log and fuzz/artifacts/$t/)" >&2; exit "$status"; }
done
