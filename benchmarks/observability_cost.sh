#!/usr/bin/env bash
# What seeing one request costs (issue 20), in one sitting: served img/s, p50 and p99 of one
# model, one JPEG per request, closed loop at CONCURRENCY, with
#   off     tracing off, text log, no access log (what a server run on a terminal does)
#   traced  OpenTelemetry on, every request sampled (OTEL_TRACES_SAMPLER=always_on, i.e. 1.0),
#           spans sent over OTLP/HTTP to a real receiver on 127.0.0.1 (tests/otlp_receiver.py,
#           which decodes them: its CPU is on this machine too, a collector's would not be)
#   json    JSON log with one access line per request (to a file)
#   base    (only with BASELINE_REF) the code at that commit, e.g. main before issue 20 was
#           merged: off against base says whether tracing off costs anything
# The servers run side by side, each on its own ports (idle ones hold no CPU), and the steps
# alternate between them ROUNDS times, in a rotating order, so a drifting machine drifts on all
# alike. Ends with a table (benchmarks/observability_table.py): median img/s, p50, p99 per mode
# and the change against `off`.
#
#   benchmarks/observability_cost.sh
#   BASELINE_REF=<commit before issue 20> ROUNDS=5 DURATION=30 benchmarks/observability_cost.sh
#
# Settings (environment): WORK (default ~/.cache/resnet-serve-bench) with models/ and images/
# as docs/benchmarks.md's "Commands for the issue's targets" make them (MODELS and IMAGES
# override), MODEL (resnet50-ov-int8), CONCURRENCY (8), DURATION (20 s), WARMUP (3 s),
# ROUNDS (3), PORT (8100: the servers take PORT..PORT+7), PYTHON (.venv/bin/python),
# BASELINE_REF (none). Results in $WORK/obs-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
W=${WORK:-$HOME/.cache/resnet-serve-bench}
MODELS=${MODELS:-$W/models}
IMAGES=${IMAGES:-$W/images}
MODEL=${MODEL:-resnet50-ov-int8}
C=${CONCURRENCY:-8}
D=${DURATION:-20}
WU=${WARMUP:-3}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-8100}
PY=${PYTHON:-.venv/bin/python}
case $PY in /*) ;; */*) PY=$ROOT/$PY ;; *) PY=$(command -v "$PY") ;; esac  # servers cd elsewhere
R=$W/obs-$(date +%Y%m%d-%H%M%S)
mkdir -p "$R"
log() { echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a "$R/log"; }

MODES=(off traced json)
[ -n "${BASELINE_REF:-}" ] && MODES+=(base)
declare -A PORTS=([off]=$PORT [traced]=$((PORT + 2)) [json]=$((PORT + 4)) [base]=$((PORT + 6)))
RX_PORT=$((PORT + 8))
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# a real OTLP/HTTP receiver for the traced server
(PYTHONPATH=$ROOT exec "$PY" -u -m tests.otlp_receiver "$RX_PORT" > "$R/receiver.log" 2>&1) &
PIDS+=($!)
RX_PID=$!

start() {  # mode -> a server in the background, its log in $R/server-<mode>.log
  local mode=$1 port=${PORTS[$1]} src=$ROOT path=$ROOT
  local -a env=(env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
                -u OTEL_TRACES_SAMPLER -u OTEL_TRACES_SAMPLER_ARG
                RESNET_SERVE_LOG_FORMAT=text RESNET_SERVE_ACCESS_LOG=off)
  case $mode in
    traced) env+=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$RX_PORT
                  OTEL_SERVICE_NAME=resnet-serve-cost OTEL_TRACES_SAMPLER=always_on) ;;
    json) env+=(RESNET_SERVE_LOG_FORMAT=json RESNET_SERVE_ACCESS_LOG=on) ;;
    base)
      src=$R/baseline
      mkdir -p "$src"
      git archive "$BASELINE_REF" app | tar -x -C "$src"
      path=$src:$ROOT  # its app/, this checkout's tests/ (a plugin backend may live there)
      ;;
  esac
  # exec: the recorded pid is the server's own, so the cleanup's SIGTERM reaches it
  (cd "$src" && exec "${env[@]}" PYTHONPATH="$path" "$PY" -m app.cli serve --models "$MODELS" \
      --host 127.0.0.1 --port "$port" --grpc-port $((port + 1)) --log-level warning \
      > "$R/server-$mode.log" 2>&1) &
  PIDS+=($!)
}

for mode in "${MODES[@]}"; do start "$mode"; done
for mode in "${MODES[@]}"; do
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:${PORTS[$mode]}/health/ready" > /dev/null && break
    sleep 1
  done
  curl -sf "http://127.0.0.1:${PORTS[$mode]}/health/ready" > /dev/null \
    || { echo "server $mode not ready: see $R/server-$mode.log" >&2; exit 1; }
done
log "servers ready: ${MODES[*]}; model $MODEL, concurrency $C, ${D} s steps, $ROUNDS rounds"
{
  echo "model=$MODEL concurrency=$C duration=$D warmup=$WU rounds=$ROUNDS"
  echo "commit=$(git rev-parse --short HEAD) baseline=${BASELINE_REF:-none}"
  nproc; grep -m1 'model name' /proc/cpuinfo || true
} > "$R/setup.txt"

n=${#MODES[@]}
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    mode=${MODES[$(((i + round - 1) % n))]}  # rotate the order each round
    log "round $round: $mode"
    "$PY" -m app.cli bench --url "http://127.0.0.1:${PORTS[$mode]}" --model "$MODEL" \
      --images "$IMAGES" --concurrency "$C" --duration "$D" --warmup "$WU" --no-progress \
      --out "$R/$mode-$round.json" > "$R/$mode-$round.txt" 2>&1
  done
done
log "done"
sleep 2  # the traced server's last spans (BatchSpanProcessor: every 5 s, or 512 spans)
kill -INT "$RX_PID" 2>/dev/null || true
cleanup
trap - EXIT INT TERM
"$PY" benchmarks/observability_table.py "$R" | tee "$R/table.md"
echo "$R"
