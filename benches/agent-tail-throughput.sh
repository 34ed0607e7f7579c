#!/bin/sh
# Log tail throughput of the agent (benches/RESULTS.md, "Agent"): writes a file of SIZE_MB
# megabytes of ~200-byte lines, runs AGENT_BIN on it with start_at: beginning, and ships
# it to an acking OTLP sink inside the bench process (the agent's cost alone) or, when
# COLLECTOR_BIN is given, to that collector (fresh data dir). Prints one figure per line:
# lines/s, MB/s, agent CPU seconds per GB, agent peak RSS, and a few more.
#
#   benches/agent-tail-throughput.sh AGENT_BIN SIZE_MB [COLLECTOR_BIN]
#
# Needs target/release/vantage-agent-bench (`cargo build --release -p vantage-benches`),
# or BENCH_BIN pointing at it.
set -eu
if [ $# -lt 2 ]; then
	echo "usage: $0 AGENT_BIN SIZE_MB [COLLECTOR_BIN]" >&2
	exit 2
fi
agent=$1
size=$2
bench=${BENCH_BIN:-target/release/vantage-agent-bench}
if [ $# -ge 3 ]; then
	exec "$bench" --agent "$agent" throughput --size-mb "$size" --collector "$3"
fi
exec "$bench" --agent "$agent" throughput --size-mb "$size"
