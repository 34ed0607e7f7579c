#!/bin/sh
# Captures real node_exporter scrapes for `vantage-metrics-e2e --mix node-exporter`:
# one gzipped /metrics body every 15 s, saved as scrape-<unix_ms>.prom.gz in the
# current directory (keep captures out of git: 215 scrapes are ~4 MB).
#
#   mkdir /tmp/nodecap && cd /tmp/nodecap && sh /path/to/benches/node-capture.sh 240
#
# Argument: number of scrapes (default 240 = 1 h). Needs a node exporter binary
# (Debian: `apt-get install prometheus-node-exporter`; NODE_EXPORTER overrides the
# path), curl and gzip. The exporter runs on 127.0.0.1:19100 for the capture only.
n=${1:-240}
exporter=${NODE_EXPORTER:-/usr/bin/prometheus-node-exporter}
"$exporter" --web.listen-address=127.0.0.1:19100 >node_exporter.log 2>&1 &
ne=$!
trap 'kill $ne' EXIT INT TERM
sleep 2
i=0
while [ "$i" -lt "$n" ]; do
  ts=$(date +%s%3N)
  curl -s --max-time 5 http://127.0.0.1:19100/metrics | gzip -c > "scrape-$ts.prom.gz"
  i=$((i+1))
  sleep 15
done
