# The two commands a newcomer needs are `make demo` and `make test`; everything else they need
# (the libtorch venv, data, certificates) is set up here, idempotently.
SHELL := /bin/bash
CARGO ?= cargo
ARGS ?=

.PHONY: setup build test demo bench fmt clippy doctor clean-venv data fuzz

setup:
	@scripts/setup-venv.sh

build: setup
	$(CARGO) build --workspace --all-targets

test: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

# Five hospitals (`cohort join` processes) and an HTTPS server (`cohort serve`) on this
# machine: 20 rounds of DP-SGD with secure aggregation on the breast-cancer table, accuracy and
# ε per round, plots, and the dashboard URL. `make demo ARGS=--keep-serving` keeps the server
# up; `make demo ARGS="--rounds 5 --out /tmp/d"` and the rest: `cargo run -- demo --help`.
# The dev profile already optimises every dependency, so no second (release) build is needed.
demo: setup
	$(CARGO) run --bin cohort -- demo $(ARGS)

# Coverage-guided fuzzing (cargo-fuzz) of the vector frame, both safetensors loaders, the
# data-spec parser and every SecAgg+ wire message, FUZZ_SECONDS (default 60) per target; `make
# test` replays their corpus. `make fuzz ARGS="frame secagg"` runs only those targets.
fuzz: setup
	scripts/fuzz.sh $(ARGS)

bench: setup
	$(CARGO) bench --workspace
	benches/compare/run.sh

doctor: setup
	$(CARGO) run --bin cohort -- doctor

fmt:
	$(CARGO) fmt --all

clippy: setup
	$(CARGO) clippy --workspace --all-targets -- -D warnings

data:
	@scripts/fetch-data.sh
