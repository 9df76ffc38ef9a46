#!/usr/bin/env bash
# resnet-serve against TorchServe 0.12, same ResNet-50 weights, same load, one sitting.
#
# Both servers run side by side on 127.0.0.1 and the steps alternate between them (TorchServe
# then resnet-serve at each concurrency), so a noisy, shared machine drifts on both alike and
# the ratio holds. Each step is driven by `resnet-serve bench` (closed loop, raw JPEG bodies)
# and, if wrk is installed, by wrk with benchmarks/wrk_post_image.lua on the same endpoint.
#
#   benchmarks/torchserve_compare.sh                 # defaults below
#   DURATION=20 CONCURRENCY=1,8,32 TS_BATCH_SIZES="1 8" benchmarks/torchserve_compare.sh
#
# Settings (environment):
#   PYTHON          the project's Python (default: .venv/bin/python, else python3)
#   WORK            scratch folder outside the repo (default ~/.cache/resnet-serve-bench):
#                   TorchServe's venv, the export, the images, the model archive
#   OUT             results folder (default $WORK/results/<timestamp>)
#   DURATION        seconds measured per step (10); WARMUP seconds before each (2)
#   CONCURRENCY     closed-loop concurrencies (1,8,32)
#   ARCH            resnet50
#   RS_MODELS       resnet-serve models to measure (default: ARCH; e.g. "resnet50 resnet50-int8"
#                   once such a variant is in the export's config.json)
#   TS_BATCH_SIZES  TorchServe batch sizes, each registered as its own model ("1"; "1 8")
#   TS_WORKERS      TorchServe workers per model (1); TS_MAX_BATCH_DELAY ms (10)
#   WRK             1 to also run wrk (default: 1 when wrk is installed)
#   ROUNDS          repeat the whole sequence (1); the table shows the median over rounds
#   SETTLE          seconds of quiet after each step, once its backlog is drained (2)
#   RS_PORT TS_PORT TS_MGMT_PORT TS_METRICS_PORT  (8000 8080 8081 8082)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-$HOME/.cache/resnet-serve-bench}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
ARCH="${ARCH:-resnet50}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-1,8,32}"
RS_MODELS="${RS_MODELS:-$ARCH}"
TS_BATCH_SIZES="${TS_BATCH_SIZES:-1}"
TS_WORKERS="${TS_WORKERS:-1}"
TS_MAX_BATCH_DELAY="${TS_MAX_BATCH_DELAY:-10}"
RS_PORT="${RS_PORT:-8000}"
TS_PORT="${TS_PORT:-8080}"
TS_MGMT_PORT="${TS_MGMT_PORT:-8081}"
TS_METRICS_PORT="${TS_METRICS_PORT:-8082}"
OUT="${OUT:-$WORK/results/$(date -u +%Y%m%dT%H%M%SZ)}"
ROUNDS="${ROUNDS:-1}"
SETTLE="${SETTLE:-2}"
if [[ -z "${WRK:-}" ]]; then if command -v wrk >/dev/null; then WRK=1; else WRK=0; fi; fi

TS_VENV="$WORK/ts-venv"
TS_DIR="$WORK/ts"
MODELS="$WORK/models"
IMAGES="$WORK/images"
RS_PID=""
TS_STARTED=0

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'torchserve_compare: %s\n' "$*" >&2; exit 1; }

cleanup() {
  if [[ -n "$RS_PID" ]] && kill -0 "$RS_PID" 2>/dev/null; then
    kill -TERM "$RS_PID" 2>/dev/null || true
    wait "$RS_PID" 2>/dev/null || true
  fi
  if [[ "$TS_STARTED" == 1 ]]; then
    (cd "$TS_DIR" && "$TS_VENV/bin/torchserve" --stop >/dev/null 2>&1) || true
  fi
}
trap cleanup EXIT INT TERM

wait_http() {  # url seconds
  local url="$1" deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$url"; do
    (( SECONDS < deadline )) || return 1
    sleep 1
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- prerequisites --------------------------------------------------------------------------
command -v java >/dev/null || die "TorchServe needs Java 11+ (java not found)"
command -v curl >/dev/null || die "curl not found"
for p in "$RS_PORT" "$TS_PORT" "$TS_MGMT_PORT" "$TS_METRICS_PORT"; do
  port_free "$p" || die "port $p is in use on 127.0.0.1; set RS_PORT / TS_*_PORT"
done
(cd "$ROOT" && "$PYTHON" -c "import app") || die "$PYTHON cannot import the project (make install-dev first)"
mkdir -p "$WORK" "$TS_DIR" "$OUT"

if [[ ! -x "$TS_VENV/bin/torchserve" ]]; then
  log "TorchServe venv: $TS_VENV"
  python3 -m venv "$TS_VENV"
  # torch/torchvision pinned as the project pins them (they come from the local wheel cache);
  # TorchServe 0.12's workers also import yaml and captum.
  "$TS_VENV/bin/pip" install --quiet "torchserve==0.12.*" "torch-model-archiver==0.12.*" \
    pyyaml captum torch==2.14.1 torchvision==0.29.1
fi

if [[ ! -d "$IMAGES" ]]; then
  log "images: $IMAGES"
  (cd "$ROOT" && "$PYTHON" benchmarks/make_images.py "$IMAGES" --count 32)
fi

if [[ ! -f "$MODELS/$ARCH/config.json" ]]; then
  log "export $ARCH (ImageNet weights if they can be downloaded, else random: fine for speed)"
  (cd "$ROOT" && "$PYTHON" -m app.cli export --arch "$ARCH" --weights imagenet \
    --allow-random-fallback --formats eager,torchscript,onnx --out "$MODELS/$ARCH")
fi

if [[ ! -f "$TS_DIR/store/$ARCH.mar" ]]; then
  log "TorchServe archive (TorchScript, built-in image_classifier handler)"
  (cd "$ROOT" && "$PYTHON" benchmarks/torchserve_model.py "$MODELS/$ARCH" "$TS_DIR/$ARCH.pt")
  mkdir -p "$TS_DIR/store"
  "$TS_VENV/bin/torch-model-archiver" --model-name "$ARCH" --version 1.0 \
    --serialized-file "$TS_DIR/$ARCH.pt" --handler image_classifier \
    --export-path "$TS_DIR/store" --force
fi

# --- start both servers ---------------------------------------------------------------------
cat > "$TS_DIR/config.properties" <<EOF
inference_address=http://127.0.0.1:$TS_PORT
management_address=http://127.0.0.1:$TS_MGMT_PORT
metrics_address=http://127.0.0.1:$TS_METRICS_PORT
model_store=$TS_DIR/store
disable_token_authorization=true
enable_model_api=true
default_workers_per_model=$TS_WORKERS
EOF
log "start TorchServe on 127.0.0.1:$TS_PORT"
(cd "$TS_DIR" && LOG_LOCATION="$TS_DIR/logs" METRICS_LOCATION="$TS_DIR/logs" \
  PATH="$TS_VENV/bin:$PATH" "$TS_VENV/bin/torchserve" --start --ncs --disable-token-auth \
  --model-store "$TS_DIR/store" --ts-config "$TS_DIR/config.properties" >"$OUT/torchserve.out" 2>&1)
TS_STARTED=1
wait_http "http://127.0.0.1:$TS_PORT/ping" 120 || die "TorchServe did not come up; see $TS_DIR/logs"
TS_SYSTEMS=()
for b in $TS_BATCH_SIZES; do
  name="${ARCH}_b$b"
  curl -sf -X POST "http://127.0.0.1:$TS_MGMT_PORT/models?url=$ARCH.mar&model_name=$name&batch_size=$b&max_batch_delay=$TS_MAX_BATCH_DELAY&initial_workers=$TS_WORKERS&synchronous=true" \
    >/dev/null || die "TorchServe could not register $name; see $TS_DIR/logs"
  TS_SYSTEMS+=("torchserve-b$b:$TS_PORT:/predictions/$name:$name")
done

log "start resnet-serve on 127.0.0.1:$RS_PORT"
REPO="$OUT/models"  # only this model: other exports in $MODELS would load and take memory
mkdir -p "$REPO"
ln -sfn "$MODELS/$ARCH" "$REPO/$ARCH"
(cd "$ROOT" && exec "$PYTHON" -m app.cli serve --models "$REPO" --host 127.0.0.1 \
  --port "$RS_PORT" --log-level warning) >"$OUT/resnet-serve.log" 2>&1 &
RS_PID=$!
wait_http "http://127.0.0.1:$RS_PORT/health/ready" 300 || die "resnet-serve not ready; see $OUT/resnet-serve.log"
RS_SYSTEMS=()
for m in $RS_MODELS; do
  RS_SYSTEMS+=("resnet-serve-$m:$RS_PORT:/v1/models/$m/classify:$m")
done

# one request each, so a broken endpoint fails here and not after minutes of load
for spec in "${TS_SYSTEMS[@]}" "${RS_SYSTEMS[@]}"; do
  IFS=: read -r system port path model <<<"$spec"
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: image/jpeg' \
    --data-binary "@$IMAGES/grace_hopper.jpg" "http://127.0.0.1:$port$path")
  [[ "$code" == 200 ]] || die "$system answered $code to POST $path"
done

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "duration per step: ${DURATION}s, warm-up ${WARMUP}s, concurrency $CONCURRENCY, wrk: $WRK, rounds: $ROUNDS"
  echo "TorchServe 0.12 batch sizes: $TS_BATCH_SIZES, workers $TS_WORKERS, max_batch_delay ${TS_MAX_BATCH_DELAY}ms"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  lscpu | head -20
} >"$OUT/machine.txt"

# --- the load, alternating systems at each concurrency ---------------------------------------
# After every step, one more request through the same endpoint: it is answered only once the
# work queued before it is done (wrk hangs up on its open requests, and TorchServe finishes
# them anyway), so no step inherits the previous one's backlog. Then SETTLE seconds for idle
# thread pools to stop spinning.
drain() {
  curl -s -o /dev/null --max-time 300 -X POST -H 'Content-Type: image/jpeg' \
    --data-binary "@$IMAGES/grace_hopper.jpg" "http://127.0.0.1:$1$2" || true
  sleep "$SETTLE"
}
IMAGE_FILES=("$IMAGES"/*.jpg)
for round in $(seq 1 "$ROUNDS"); do
  for c in ${CONCURRENCY//,/ }; do
    for spec in "${TS_SYSTEMS[@]}" "${RS_SYSTEMS[@]}"; do
      IFS=: read -r system port path model <<<"$spec"
      name="${system}__c$c.r$round"
      log "round $round/$ROUNDS: $system  concurrency $c"
      (cd "$ROOT" && "$PYTHON" -m app.cli bench --url "http://127.0.0.1:$port" --model "$model" \
        --path "$path" --images "$IMAGES" --mode raw --concurrency "$c" --duration "$DURATION" \
        --warmup "$WARMUP" --label "$system" --out "$OUT/$name.json" --plot "$OUT/$name.png")
      drain "$port" "$path"
      if [[ "$WRK" == 1 ]]; then
        threads=$(( c < 2 ? c : 2 ))
        wrk -t"$threads" -c"$c" -d"${DURATION%.*}s" --timeout 60s --latency \
          -s "$ROOT/benchmarks/wrk_post_image.lua" "http://127.0.0.1:$port$path" -- "${IMAGE_FILES[@]}" \
          >"$OUT/$name.wrk.txt" 2>&1 || true
        grep '^WRK_JSON ' "$OUT/$name.wrk.txt" | sed 's/^WRK_JSON //' >"$OUT/$name.wrk.json" \
          || { echo "wrk failed for $system c=$c:"; tail -5 "$OUT/$name.wrk.txt"; rm -f "$OUT/$name.wrk.json"; }
        drain "$port" "$path"
      fi
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

log "comparison"
(cd "$ROOT" && "$PYTHON" benchmarks/compare_table.py "$OUT")
echo "results in $OUT"
