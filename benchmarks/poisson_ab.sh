#!/usr/bin/env bash
# Poisson arrivals at a fixed rate, 60 s steps, variants alternated (A B A B ...) in one sitting,
# one server: the p99 / p50 of issue 15's target for several batching settings of one model.
# Usage: benchmarks/poisson_ab.sh RATE VARIANT_A VARIANT_B [ROUNDS]
# The variants must exist in $WORK/models/*/config.json (docs/benchmarks.md lists the ones used).
set -u
cd "$(dirname "$0")/.."
W=${WORK:-$HOME/.cache/resnet-serve-bench}
RATE=$1 A=$2 B=$3 ROUNDS=${4:-2}
R=$W/r-poisson-ab-$(date +%H%M)
mkdir -p "$R"
RS=.venv/bin/resnet-serve
log() { echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a "$R/log"; }
log start
$RS serve --models "$W/models" --port 8000 --grpc-port 0 --log-level warning > "$R/server.log" 2>&1 &
SP=$!
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:8000/health/ready >/dev/null && break; sleep 1; done
log ready
n=0
for _ in $(seq 1 "$ROUNDS"); do
  for m in "$A" "$B"; do
    n=$((n + 1))
    log "poisson $m"
    $RS bench --url http://127.0.0.1:8000 --model "$m" --images "$W/images" --rate "$RATE" \
      --duration 60 --warmup 5 --no-progress --seed "$n" --out "$R/poisson-$n-$m.json" \
      > "$R/poisson-$n-$m.txt" 2>&1
    grep -E "r=|batch sizes" "$R/poisson-$n-$m.txt" | head -2 | tee -a "$R/log"
  done
done
kill -TERM $SP
wait $SP
log end
