# ferroute: `make help` lists the targets. Everything runs inside ./.venv, which the targets create.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(BIN)):$(PATH)
# Cargo writes into ./target whatever the caller's environment says.
export CARGO_TARGET_DIR := $(abspath target)

$(BIN)/activate: requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

.PHONY: venv
venv: $(BIN)/activate ## create .venv with the test, lint and bench tools

.PHONY: develop
develop: venv ## build the native module (release: LTO) into .venv
	$(BIN)/maturin develop --release --quiet

.PHONY: develop-debug
develop-debug: venv ## build the native module unoptimised (fast to compile; not for benchmarks)
	$(BIN)/maturin develop --quiet

.PHONY: run
run: develop ## set up and run the router on its embedded defaults (built-in mock provider) on 127.0.0.1:8080
	$(BIN)/ferroute serve $(ARGS)

.PHONY: demo
demo: develop ## translate a recorded Chat Completions stream and parse the result back (no server)
	$(BIN)/ferroute demo

.PHONY: lint
lint: venv ## rustfmt, clippy (warnings are errors), ruff, mypy --strict
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench
	$(BIN)/mypy

.PHONY: stubtest
stubtest: develop ## the hand-written _core.pyi against the built module
	$(BIN)/python -m mypy.stubtest ferroute._core --allowlist .stubtest-allowlist

.PHONY: test-rust
test-rust: ## cargo tests (unit and property tests), without Python
	cargo test --workspace --quiet

.PHONY: test-python
test-python: develop ## pytest against the built module (benches run once each, untimed)
	@command -v redis-server >/dev/null || { echo "installing redis-server (the Redis store tests start their own)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
		$$SUDO apt-get install -y -qq redis-server >/dev/null; }
	$(BIN)/pytest

.PHONY: test
test: lint test-rust stubtest test-python ## set up and run every check CI runs

.PHONY: bench
bench: develop ## pytest-benchmark comparisons (figures for the README) and criterion benches
	$(BIN)/pytest bench --benchmark-enable --benchmark-only --benchmark-columns=min,median,mean,ops --benchmark-sort=name
	cargo bench --workspace

.PHONY: bench-compare
bench-compare: develop ## the same load against the mock upstream, ferroute and open-responses-server (bench/results/compare.*)
	$(BIN)/python -m bench.compare $(ARGS)

.PHONY: bench-router
bench-router: develop ## router overhead vs the upstream direct, concurrency 1 and 256 (bench/results/router_overhead.*)
	$(BIN)/python -m bench.router_overhead $(ARGS)

.PHONY: bench-routing
bench-routing: develop ## a route, limits on Redis, tracing vs the plain path, and failover under load (bench/results/routing_cost.*)
	$(BIN)/python -m bench.routing_cost $(ARGS)

.PHONY: bench-websocket
bench-websocket: develop ## WebSocket mode vs SSE: time to first event and router CPU per event (bench/results/websocket.*)
	$(BIN)/python -m bench.websocket $(ARGS)

.PHONY: bench-tuning
bench-tuning: develop ## each Granian knob measured by the router overhead bench (bench/results/granian_tuning.*)
	$(BIN)/python -m bench.granian_tuning $(ARGS)

.PHONY: bench-memory
bench-memory: develop ## worker memory with 1,000 open streams, and a slow reader (bench/results/memory.*)
	$(BIN)/python -m bench.memory $(ARGS)

.PHONY: bench-nonstream
bench-nonstream: develop ## non-streaming requests/s per worker core against a 20 ms mock (bench/results/nonstream.*)
	$(BIN)/python -m bench.nonstream $(ARGS)

.PHONY: bench-mock
bench-mock: develop ## the mock upstream's own CPU per event and capacity per core (bench/results/mock_upstream_capacity.*)
	$(BIN)/python -m bench.mock_upstream_capacity $(ARGS)

.PHONY: bench-send-cost
bench-send-cost: develop ## server CPU per streamed send, ASGI vs RSGI, on a floor app (bench/results/granian_send_cost.*)
	$(BIN)/python -m bench.granian_send_cost $(ARGS)

.PHONY: fuzz
fuzz: ## run each cargo-fuzz target for FUZZ_SECONDS (default 60); needs `cargo install cargo-fuzz`
	cd rust/core/fuzz && for t in $$(RUSTC_BOOTSTRAP=1 cargo fuzz list); do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$${FUZZ_SECONDS:-60} || exit 1; done

.PHONY: fmt
fmt: venv ## format Rust and Python
	cargo fmt --all
	$(BIN)/ruff format python tests bench
	$(BIN)/ruff check --fix python tests bench

.PHONY: build-prod
build-prod: venv ## build an optimised wheel into dist/
	$(BIN)/maturin build --release --out dist

.PHONY: clean
clean: ## remove build outputs and the virtualenv
	rm -rf target $(VENV) dist

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'
