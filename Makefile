# The two commands of the README: `make run` and `make test`.
.PHONY: run test test-deps lint bench

PYTHON ?= python3
PY_REQUIREMENTS := collector/tests/python/requirements.txt

run:
	cargo run --release -p vantage-collector

# Installs what the tests need; pip leaves already-satisfied pins alone (idempotent).
test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r $(PY_REQUIREMENTS)

test: test-deps
	cargo test --workspace --all-targets --locked

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# End-to-end benchmark of the release binaries (about 10 minutes, ~4 GB of disk in
# target/e2e); prints one JSON report, the source of benches/RESULTS.md.
bench:
	cargo build --release --locked -p vantage-collector -p vantage-benches
	target/release/vantage-e2e

# Metrics benchmark against Prometheus 2.42 on the same remote-write stream (about 10
# minutes, ~3 GB of disk in target/metrics-e2e); one figure per line on stdout, the JSON
# report in target/metrics-e2e/report.json. Method and figures: benches/RESULTS.md.
.PHONY: bench-metrics
bench-metrics:
	cargo build --release --locked -p vantage-collector -p vantage-benches
	target/release/vantage-metrics-e2e
