# The two commands of the README: `make run` and `make test`.
.PHONY: run test test-deps lint bench

PYTHON ?= python3
PY_REQUIREMENTS := collector/tests/python/requirements.txt

run:
	cargo run --release -p vantage-collector

# Installs what the tests need, idempotently: pip leaves already-satisfied pins alone;
# the PromQL compliance test needs a real Prometheus (Debian's 2.42) and its promtool,
# installed only when missing, refreshing the package lists only if the install fails;
# the notification tests need Debian's Alertmanager 0.25 and its amtool, the same way;
# the agent's journald tests need systemd-journal-remote (it writes journal files from
# export format) and libsystemd0 (the agent loads it), the same way; the agent's .deb
# test (agent/tests/deb_install.rs) needs cargo-deb, pinned, built once when missing.
CARGO_DEB_VERSION := 3.8.0
test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r $(PY_REQUIREMENTS)
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then \
		echo "prometheus and promtool already installed"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends prometheus \
		|| { apt-get update && apt-get install -y --no-install-recommends prometheus; }; \
	fi
	@if command -v prometheus-alertmanager >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1; then \
		echo "prometheus-alertmanager and amtool already installed"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends prometheus-alertmanager \
		|| { apt-get update && apt-get install -y --no-install-recommends prometheus-alertmanager; }; \
	fi
	@if [ -x /lib/systemd/systemd-journal-remote ] && ldconfig -p | grep -q "libsystemd.so.0 "; then \
		echo "systemd-journal-remote and libsystemd0 already installed"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends systemd-journal-remote libsystemd0 \
		|| { apt-get update && apt-get install -y --no-install-recommends systemd-journal-remote libsystemd0; }; \
	fi
	@if [ -d collector/tests/node/node_modules/@elastic/opamp-client-node ]; then \
		echo "@elastic/opamp-client-node already installed"; \
	else \
		cd collector/tests/node && npm ci --no-audit --no-fund; \
	fi
	@if cargo deb --version 2>/dev/null | grep -q "^cargo-deb $(CARGO_DEB_VERSION)$$"; then \
		echo "cargo-deb $(CARGO_DEB_VERSION) already installed"; \
	else \
		cargo install --locked cargo-deb --version $(CARGO_DEB_VERSION); \
	fi

# One full build gains nothing from rustc's incremental caches, which would about double
# the disk a clean `make test` needs; a developer's own `cargo test` keeps them.
test lint: export CARGO_INCREMENTAL ?= 0

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

# Soak of the release collector (an hour at 15,000 records/s, ~11 GB of disk in
# target/soak): memory, CPU, disk, segments and query latency sampled every 30 s as the
# index grows. Method and figures: benches/RESULTS.md ("Soak").
.PHONY: bench-soak
bench-soak:
	cargo build --release --locked -p vantage-collector -p vantage-benches
	benches/soak.sh

# Metrics benchmark against Prometheus 2.42 on the same remote-write stream (about 10
# minutes, ~3 GB of disk in target/metrics-e2e); one figure per line on stdout, the JSON
# report in target/metrics-e2e/report.json. Method and figures: benches/RESULTS.md.
.PHONY: bench-metrics
bench-metrics:
	cargo build --release --locked -p vantage-collector -p vantage-benches
	target/release/vantage-metrics-e2e

# Notification throughput of the embedded Alertmanager (about 1 minute): alerts posted to
# POST /api/v2/alerts, delivered to a webhook receiver in the bench process (fast, then
# 200 ms per request); one JSON line per run. Method and figures: benches/RESULTS.md.
.PHONY: bench-notify
bench-notify:
	cargo build --release --locked -p vantage-collector -p vantage-benches
	target/release/vantage-notify-bench
# Trace benchmark over OTLP/gRPC (about 4 minutes, ~2 GB in target/traces-e2e): span
# ingest rate, trace-by-id and search latency; one JSON report on stdout.
.PHONY: bench-traces
bench-traces:
	cargo build --release --locked -p vantage-collector -p vantage-benches
	target/release/vantage-traces-e2e

# Configuration service (about 1 minute): 1,000 simulated OpAMP agents on WebSockets
# (heartbeat 10 s) against one collector, one config change pushed through the API; time
# until all applied, collector RSS and CPU seconds; one JSON line. Each agent holds two
# sockets, so the open-files limit is raised first. Method and figures: benches/RESULTS.md.
.PHONY: bench-opamp
bench-opamp:
	cargo build --release --locked -p vantage-collector -p vantage-benches
	[ "$$(ulimit -n)" -ge 4096 ] || ulimit -n 4096; target/release/vantage-opamp-bench

# The agent's footprint and throughput (about 20 minutes; method and figures:
# benches/RESULTS.md, "Agent"): idle RSS and CPU against a collector, file discovery
# with 10,000 matching files, tail throughput to an acking sink and to a collector
# (SIZE_MB), host-metrics cost beside Debian's prometheus-node-exporter (installed when
# missing), the collector's batch-id cost. One figure per line on stdout; JSON reports
# in target/agent-bench/.
SIZE_MB ?= 1000
AGENT_BENCH := target/release/vantage-agent-bench --work-dir target/agent-bench
.PHONY: bench-agent bench-agent-build bench-agent-idle bench-agent-discovery \
	bench-agent-throughput bench-agent-host-metrics bench-agent-batch-ids
bench-agent: bench-agent-idle bench-agent-discovery bench-agent-throughput \
	bench-agent-host-metrics bench-agent-batch-ids
bench-agent-build:
	cargo build --release --locked -p vantage-agent -p vantage-collector -p vantage-benches
bench-agent-idle: bench-agent-build
	cargo build --profile dist --locked -p vantage-agent --bin vantage-agent
	$(AGENT_BENCH) --agent target/dist/vantage-agent --json target/agent-bench/idle.json idle
bench-agent-discovery: bench-agent-build
	$(AGENT_BENCH) --json target/agent-bench/discovery.json discovery
bench-agent-throughput: bench-agent-build
	benches/agent-tail-throughput.sh target/release/vantage-agent $(SIZE_MB)
	benches/agent-tail-throughput.sh target/release/vantage-agent $(SIZE_MB) \
		target/release/vantage-collector
bench-agent-host-metrics: bench-agent-build
	@if command -v prometheus-node-exporter >/dev/null 2>&1; then \
		echo "prometheus-node-exporter already installed"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends prometheus-node-exporter \
		|| { apt-get update && apt-get install -y --no-install-recommends prometheus-node-exporter; }; \
	fi
	$(AGENT_BENCH) --json target/agent-bench/host-metrics.json host-metrics \
		--node-exporter "$$(command -v prometheus-node-exporter)"
bench-agent-batch-ids: bench-agent-build
	$(AGENT_BENCH) --json target/agent-bench/batch-ids.json batch-ids

# The agent's Debian package (cargo-deb, installed from crates.io when missing): binary,
# systemd unit, default config, user creation. Output: target/debian/vantage-agent_*.deb.
# Built with the `dist` profile (fat LTO, one codegen unit: smaller, fewer resident pages).
.PHONY: package-deb
package-deb:
	@command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb --version $(CARGO_DEB_VERSION)
	cargo deb -p vantage-agent --locked --profile dist
