# The two commands a newcomer needs are `make demo` and `make test`; everything else they need
# (the libtorch venv, data, certificates) is set up here, idempotently.
SHELL := /bin/bash
CARGO ?= cargo
ARGS ?=

.PHONY: setup build test demo bench fmt clippy doctor clean-venv data

setup:
	@scripts/setup-venv.sh

build: setup
	$(CARGO) build --workspace --all-targets

test: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

# Until the federation demo lands, the demo is the real libtorch training smoke job.
demo: setup
	$(CARGO) run --example smoke_train -- $(ARGS)

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
