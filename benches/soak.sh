#!/usr/bin/env bash
# Soak: the release collector on a fresh data directory under a steady OTLP/gRPC log load
# for a long time, sampled every 30 s: memory, CPU, disk (index and WAL), segments,
# searchable records and query latencies as the data grows. Stops by itself after
# DURATION_S and a SIGTERM. Method and figures: benches/RESULTS.md ("Soak").
#
#   make bench-soak                      # 15,000 records/s for an hour
#   RATE=5000 DURATION_S=600 benches/soak.sh
#   SEARCH=0 benches/soak.sh             # no searches: the index stays search-idle
#
# Needs ~11 GB of disk per hour at 15,000 records/s (plus the same again for a moment
# while the largest segments merge), curl and python3. Output in target/soak/:
# samples.csv, loadgen.txt, collector.log, and a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-15000}
SEARCH=${SEARCH:-1} # 0: sample without searching (the searches keep the index busy)
DURATION_S=${DURATION_S:-3600}
OUT=${OUT:-target/soak}
BIN=${BIN:-target/release}
DATA="$OUT/data"
GRPC=127.0.0.1:${GRPC_PORT:-14317}
API=127.0.0.1:${API_PORT:-17070}

rm -rf "$OUT"
mkdir -p "$DATA"
"$BIN/vantage-collector" --data-dir "$DATA" --otlp-grpc "$GRPC" --otlp-http 127.0.0.1:0 \
    --api "$API" --log-format json > "$OUT/collector.log" 2>&1 &
collector=$!
trap 'kill "$collector" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q '"message":"ready"' "$OUT/collector.log" && break
    sleep 0.1
done
token=$(awk '/^api_key:/{print $2}' "$DATA/initial-admin.txt")

"$BIN/vantage-loadgen" --endpoint "http://$GRPC" --token "$token" --rate "$RATE" \
    --duration-s "$DURATION_S" --records $((RATE * DURATION_S)) --concurrency 4 \
    > "$OUT/loadgen.txt" 2> "$OUT/loadgen.err" &
loadgen=$!

query() { # seconds for one search; the response goes to $OUT/q.json
    curl -s -o "$OUT/q.json" -w '%{time_total}' -H "authorization: Bearer $token" \
        "http://$API/api/v1/logs/search?start=now-1d&$1"
}
samples="$OUT/samples.csv"
echo "t_s,rss_mib,anon_mib,cpu_s,logs_mib,wal_mib,segments,docs,phrase_s,phrase_total,absent_s,field_s,histogram_s" > "$samples"
started=$(date +%s)
while true; do
    t=$(( $(date +%s) - started ))
    rss=$(awk '/^VmRSS/{print int($2/1024)}' "/proc/$collector/status")
    anon=$(awk '/^RssAnon/{print int($2/1024)}' "/proc/$collector/status")
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/hz}' "/proc/$collector/stat")
    logs=$(du -sm "$DATA/logs" | cut -f1)
    wal=$(du -sm "$DATA/wal" | cut -f1)
    segments=$(find "$DATA/logs" -name '*.idx' | wc -l)
    docs=$(curl -s -H "authorization: Bearer $token" "http://$API/metrics" \
        | awk '/^vantage_log_index_docs /{print $2}')
    phrase= phrase_total= absent= field= histogram=
    if [ "$SEARCH" != 0 ]; then
        phrase=$(query 'query=%22connection%20reset%22&limit=100')
        phrase_total=$(python3 -c "import json; print(json.load(open('$OUT/q.json'))['total'])")
        absent=$(query 'query=xylophone&limit=100')
        field=$(query 'query=service.name:checkout%20AND%20%22connection%20reset%22&limit=100')
        histogram=$(query 'query=%22connection%20reset%22&limit=10&histogram=1m')
    fi
    echo "$t,$rss,$anon,$cpu,$logs,$wal,$segments,$docs,$phrase,$phrase_total,$absent,$field,$histogram" >> "$samples"
    if [ -n "${last:-}" ]; then
        break
    elif ! kill -0 "$loadgen" 2>/dev/null; then
        last=1 # one more sample once the last records are committed
        sleep 3
        # A search-idle index commits when searched: one search for the last count.
        [ "$SEARCH" = 0 ] && query 'limit=1' > /dev/null
    else
        sleep 30
    fi
done
wait "$loadgen"
kill -TERM "$collector"
wait "$collector" || true
trap - EXIT

cat "$OUT/loadgen.txt"
python3 - "$samples" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
f = lambda r, k: float(r[k])
print("window       cores  records/s  anon MiB min/median/max  segments max  index MiB at end")
for start in range(0, int(f(rows[-1], "t_s")) + 1, 600):
    w = [r for r in rows if start <= f(r, "t_s") < start + 600]
    if len(w) < 2:
        continue
    a, b = w[0], w[-1]
    span = f(b, "t_s") - f(a, "t_s")
    anon = sorted(f(r, "anon_mib") for r in w)
    print(f"{start:>5}-{start + 600:<5}s  {(f(b, 'cpu_s') - f(a, 'cpu_s')) / span:.2f}  "
          f"{(f(b, 'docs') - f(a, 'docs')) / span:>9.0f}  "
          f"{anon[0]:.0f}/{anon[len(anon) // 2]:.0f}/{anon[-1]:.0f}  "
          f"{max(f(r, 'segments') for r in w):.0f}  {f(b, 'logs_mib'):.0f}")
for k in ["phrase_s", "absent_s", "field_s", "histogram_s"]:
    v = sorted(f(r, k) * 1000 for r in rows[-20:] if r[k])
    if not v:
        continue  # SEARCH=0
    print(f"{k[:-2]} over the last 20 samples: median {v[len(v) // 2]:.1f} ms, max {v[-1]:.1f} ms")
last = rows[-1]
print(f"searchable {last['docs']}, index {last['logs_mib']} MiB, WAL max "
      f"{max(f(r, 'wal_mib') for r in rows):.0f} MiB, collector CPU {last['cpu_s']} s")
PY
