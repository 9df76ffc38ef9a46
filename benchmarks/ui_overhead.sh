#!/usr/bin/env bash
# Does the web page (issue 21) cost the classify path anything? Served img/s, p50 and p99 with
# the page on (RESNET_SERVE_UI=true, its status sampler running, and one status page open:
# /v1/status and /v1/models polled every 2 s as the page does) against the page off
# (RESNET_SERVE_UI=false), alternated ON OFF ON OFF ... in one sitting so a drifting machine
# drifts on both. One server at a time on 127.0.0.1:$PORT; closed loop at $CONCURRENCY.
# Settings (environment): MODELS (models), MODEL (resnet50), ROUNDS (3), DURATION (20),
#   CONCURRENCY (8), PORT (8000), WORK (~/.cache/resnet-serve-bench: images and results).
# Usage: benchmarks/ui_overhead.sh            (after `make serve` exported models/resnet50)
set -u
cd "$(dirname "$0")/.."
W=${WORK:-$HOME/.cache/resnet-serve-bench}
MODELS=${MODELS:-models} MODEL=${MODEL:-resnet50} ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20} CONCURRENCY=${CONCURRENCY:-8} PORT=${PORT:-8000}
PY=${PYTHON:-.venv/bin/python}
RS="$PY -m app.cli"
URL=http://127.0.0.1:$PORT
R=$W/r-ui-overhead-$(date +%H%M%S)
mkdir -p "$R"
[ -d "$W/images" ] || $PY benchmarks/make_images.py "$W/images" --count 32 >/dev/null
log() { echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a "$R/log"; }
SP="" POLLER=""
cleanup() {
  [ -n "$POLLER" ] && kill "$POLLER" 2>/dev/null
  [ -n "$SP" ] && kill -TERM "$SP" 2>/dev/null && wait "$SP" 2>/dev/null
}
trap cleanup EXIT INT TERM

for round in $(seq 1 "$ROUNDS"); do
  for ui in true false; do
    log "round $round ui=$ui"
    RESNET_SERVE_UI=$ui $RS serve --models "$MODELS" --port "$PORT" --grpc-port 0 \
      --log-level warning > "$R/server-$round-$ui.log" 2>&1 &
    SP=$!
    for _ in $(seq 1 300); do curl -sf "$URL/health/ready" >/dev/null && break; sleep 1; done
    if [ "$ui" = true ]; then  # one status page open, as the browser polls it
      ( while sleep 2; do curl -s "$URL/v1/status" >/dev/null; curl -s "$URL/v1/models" >/dev/null; done ) &
      POLLER=$!
    fi
    $RS bench --url "$URL" --model "$MODEL" --images "$W/images" --concurrency "$CONCURRENCY" \
      --duration "$DURATION" --warmup 3 --no-progress --out "$R/bench-$round-$ui.json" \
      > "$R/bench-$round-$ui.txt" 2>&1
    [ -n "$POLLER" ] && kill "$POLLER" 2>/dev/null; POLLER=""
    kill -TERM "$SP"; wait "$SP" 2>/dev/null; SP=""
  done
done
log end

$PY - "$R" <<'PY'
import json, statistics, sys
from pathlib import Path

r = Path(sys.argv[1])
rows = {"true": [], "false": []}
print(f"{'round':>5} {'ui':>5} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} errors")
for f in sorted(r.glob("bench-*.json")):
    _, rnd, ui = f.stem.split("-")
    s = json.loads(f.read_text())["steps"][0]
    rows[ui].append(s)
    print(f"{rnd:>5} {ui:>5} {s['images_per_s']:>8.1f} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['errors']}")
med = {ui: {k: statistics.median(x[k] for x in v) for k in ("images_per_s", "p50_ms", "p99_ms")}
       for ui, v in rows.items() if v}
if len(med) == 2:
    on, off = med["true"], med["false"]
    print(f"median img/s on/off: {on['images_per_s']:.1f} / {off['images_per_s']:.1f} "
          f"({100 * (on['images_per_s'] / off['images_per_s'] - 1):+.1f} %)")
    print(f"median p99 ms on/off: {on['p99_ms']:.1f} / {off['p99_ms']:.1f} "
          f"({100 * (on['p99_ms'] / off['p99_ms'] - 1):+.1f} %)")
print(f"results: {r}")
PY
