#!/usr/bin/env bash
# Served throughput and latency of one model against its backend alone, in one sitting:
#   1. `bench --in-process`: the backend per batch size, and the decoder per image (the ceiling)
#   2. resnet-serve on 127.0.0.1, closed loop at CONCURRENCY with the bench client, and with
#      wrk on the same endpoint (the bench client must not be the bottleneck)
#   3. open loop (Poisson arrivals) at RATE_FRACTIONS of the peak measured in step 2
#   4. benchmarks/served_summary.py: the figures against the issue's targets
#
#   benchmarks/served_vs_inprocess.sh
#   ARCH=resnet18 DURATION=20 CONCURRENCY=1,4,16,32 benchmarks/served_vs_inprocess.sh
#
# Settings (environment): PYTHON, WORK, OUT, ARCH, MODEL (served name, default ARCH), DURATION
# (10), WARMUP (2), CONCURRENCY (1,4,16), RATE_FRACTIONS (0.5,0.8,0.95; empty to skip),
# BATCH_SIZES (1,2,4,8,16,32), MIN_TIME (3 s per batch size), WRK (1 if installed), PORT (8000).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$HOME/.cache/resnet-serve-bench}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
ARCH="${ARCH:-resnet50}"
MODEL="${MODEL:-$ARCH}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-1,4,16}"
RATE_FRACTIONS="${RATE_FRACTIONS-0.5,0.8,0.95}"
BATCH_SIZES="${BATCH_SIZES:-1,2,4,8,16,32}"
MIN_TIME="${MIN_TIME:-3}"
PORT="${PORT:-8000}"
OUT="${OUT:-$WORK/results/served-$ARCH-$(date -u +%Y%m%dT%H%M%SZ)}"
if [[ -z "${WRK:-}" ]]; then if command -v wrk >/dev/null; then WRK=1; else WRK=0; fi; fi
MODELS="$WORK/models"
IMAGES="$WORK/images"
PID=""

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'served_vs_inprocess: %s\n' "$*" >&2; exit 1; }
cleanup() {
  if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM
bench() { (cd "$ROOT" && "$PYTHON" -m app.cli bench "$@"); }

(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is in use; set PORT"
mkdir -p "$OUT"
[[ -d "$IMAGES" ]] || (cd "$ROOT" && "$PYTHON" benchmarks/make_images.py "$IMAGES" --count 32)
if [[ ! -f "$MODELS/$ARCH/config.json" ]]; then
  log "export $ARCH"
  (cd "$ROOT" && "$PYTHON" -m app.cli export --arch "$ARCH" --weights imagenet \
    --allow-random-fallback --formats eager,torchscript,onnx --out "$MODELS/$ARCH")
fi
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  lscpu | head -20
} >"$OUT/machine.txt"

log "in-process: $MODELS/$ARCH"
bench --in-process "$MODELS/$ARCH" --batch-sizes "$BATCH_SIZES" --min-time "$MIN_TIME" \
  --images "$IMAGES" --out "$OUT/inprocess.json"

log "serve on 127.0.0.1:$PORT"
# only this model: another export in $MODELS would share the CPU
REPO="$OUT/models"
mkdir -p "$REPO"
ln -sfn "$MODELS/$ARCH" "$REPO/$ARCH"
(cd "$ROOT" && exec "$PYTHON" -m app.cli serve --models "$REPO" --host 127.0.0.1 --port "$PORT" \
  --log-level warning) >"$OUT/server.log" 2>&1 &
PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready"; do
  kill -0 "$PID" 2>/dev/null || die "server exited; see $OUT/server.log"
  sleep 1
done

log "closed loop, bench client"
bench --url "http://127.0.0.1:$PORT" --model "$MODEL" --images "$IMAGES" \
  --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" --out "$OUT/served.json"

if [[ "$WRK" == 1 ]]; then
  IMAGE_FILES=("$IMAGES"/*.jpg)
  for c in ${CONCURRENCY//,/ }; do
    log "closed loop, wrk, concurrency $c"
    wrk -t"$(( c < 2 ? c : 2 ))" -c"$c" -d"${DURATION%.*}s" --timeout 60s --latency \
      -s "$ROOT/benchmarks/wrk_post_image.lua" "http://127.0.0.1:$PORT/v1/models/$MODEL/classify" \
      -- "${IMAGE_FILES[@]}" | tee "$OUT/c$c.wrk.txt" | tail -3
    grep '^WRK_JSON ' "$OUT/c$c.wrk.txt" | sed 's/^WRK_JSON //' >"$OUT/c$c.wrk.json"
  done
fi

if [[ -n "$RATE_FRACTIONS" ]]; then
  PEAK=$("$PYTHON" -c "import json,sys; print(max(s['ok_per_s'] or 0 for s in json.load(open(sys.argv[1]))['steps']))" "$OUT/served.json")
  log "open loop at $RATE_FRACTIONS of $PEAK requests/s"
  bench --url "http://127.0.0.1:$PORT" --model "$MODEL" --images "$IMAGES" --peak "$PEAK" \
    --rate-fraction "$RATE_FRACTIONS" --duration "$DURATION" --warmup "$WARMUP" --out "$OUT/open.json"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

log "summary"
"$PYTHON" "$ROOT/benchmarks/served_summary.py" "$OUT"
echo "results in $OUT"
