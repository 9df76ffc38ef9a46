#!/usr/bin/env bash
# The GPU check: one command, on a fresh GPU machine, within 8 minutes; one table at the end.
#
#   benchmarks/gpu_check.sh                  # on the GPU machine (the table, JSON, logs in $OUT)
#   benchmarks/gpu_check.sh --dry-run        # or GPU_CHECK_DRY=1: the plumbing, on the CPU
#
# In order of priority, each step time-boxed (a step cut short says so; each box is capped by
# what is left of GPU_CHECK_BUDGET_S, 480 s by default):
#   0. wheels, environment; the images (benchmarks/gpu_images.py) and the served model are
#      prepared once, on the CPU, while the GPU tests run, outside every timed step's box
#   1. the GPU tests (pytest; the CUDA-only ones skip without CUDA)
#   2. nvJPEG decode speed (is the hardware JPEG engine used: nvidia-smi dmon's jpg column),
#      batched against per-image resize, and the multi-chunk stream-race check
#   3. the in-process pipeline, eager (nvJPEG + ResNet-50 fp16, 1 and 4 instances)
#   4. served figures over HTTP with the bench client: one JPEG per request at --workers 1, 4
#      and 8 (each start waits until every worker has logged ready, then the clients connect),
#      then V2 binary uint8 tensors, 32 images per request; img/s, p50, p99
#   5. the pipeline in 4 processes, each with its own model (what --workers does, no HTTP)
#   6. the pipeline torch.compile'd (the slowest to start: last)
#   7. onnxruntime-gpu in-process (CUDA provider, fp16) when it is installed; its rows say
#      "not installed" when it is absent (docs/gpu.md says how to bring it in four parts)
#
# What comes back: $OUT holds three files, rewritten after every step (so a run cut short by
# the machine's limit still returns every step it finished): gpu_check.txt (the table),
# gpu_check.json (the summary) and gpu_check.tgz (every step's JSON and log). Models, images
# and everything else live in $WORK, never under $OUT.
#
# The machine has Python 3.12, torch, torchvision, Pillow, numpy, onnx and a CPU onnxruntime,
# and no internet: the other wheels travel in .whl/ (benchmarks/gpu_wheels.sh fills it) and are
# installed with pip --no-deps --target into $SITE, put on PYTHONPATH.
#
# Environment: OUT (default /tmp/gpu-check), WORK (/tmp/gpu-check-work), PYTHON (python3),
# GPU_CHECK_BUDGET_S (480), PORT (8100; the server's gRPC listens on PORT+1), SITE (/tmp/site),
# CLIENTS (bench client processes per served step, 4).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY="${GPU_CHECK_DRY:-0}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-/tmp/gpu-check}"
WORK="${WORK:-/tmp/gpu-check-work}"
SITE="${SITE:-/tmp/site}"
PORT="${PORT:-8100}"
CLIENTS="${CLIENTS:-4}"
BUDGET="${GPU_CHECK_BUDGET_S:-480}"
RAW="$WORK/raw"      # what the archive holds: every step's JSON and log
LOGS="$RAW/logs"
STEPS="$RAW/steps.tsv"
START=$(date +%s)
SERVER_PID=""
PREP_PID=""
rm -rf "$RAW"
mkdir -p "$LOGS" "$WORK" "$OUT"
: >"$STEPS"
cd "$ROOT" || exit 2

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null
  fi
  if [[ -n "${DMON_PID:-}" ]]; then kill "$DMON_PID" 2>/dev/null; fi
  if [[ -n "$PREP_PID" ]]; then kill "$PREP_PID" 2>/dev/null; fi
}
trap cleanup EXIT INT TERM

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
say() { printf '[gpu_check %3ds] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }

# publish: the table, the summary and the archive into $OUT, each replaced whole (never half
# written); a log over 2 MB keeps its last 2 MB, so the archive stays far below 16 MiB
publish() {
  "$PYTHON" benchmarks/gpu_check_report.py "$RAW" --dry "$DRY" >"$RAW/gpu_check.txt" \
    2>>"$LOGS/report.log"
  local f
  for f in "$LOGS"/*.log; do
    [[ -f "$f" ]] || continue
    if (( $(stat -c %s "$f") > 2000000 )); then
      tail -c 2000000 "$f" >"$f.cut" && mv "$f.cut" "$f"
    fi
  done
  tar -czf "$WORK/gpu_check.tgz" -C "$RAW" . 2>>"$LOGS/report.log"
  cp "$RAW/gpu_check.txt" "$WORK/txt.part" && mv "$WORK/txt.part" "$OUT/gpu_check.txt"
  [[ -f "$RAW/gpu_check.json" ]] && cp "$RAW/gpu_check.json" "$WORK/json.part" &&
    mv "$WORK/json.part" "$OUT/gpu_check.json"
  mv "$WORK/gpu_check.tgz" "$OUT/gpu_check.tgz"
}

# run NAME BOX CMD...: CMD under timeout min(BOX, time left), output in $LOGS/NAME.log;
# one line in steps.tsv: name, exit status, seconds, the box it had; then publish
run() {
  local name=$1 box=$2; shift 2
  local have; have=$(left)
  (( have < box )) && box=$have
  if (( box < 5 )); then
    say "$name: skipped (no time left)"
    printf '%s\t%s\t%s\t%s\n' "$name" "skipped" 0 0 >>"$STEPS"
    publish
    return 0
  fi
  say "$name (at most ${box}s)"
  local t0; t0=$(date +%s)
  timeout -k 5 "$box" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$box" >>"$STEPS"
  (( rc == 124 || rc == 137 )) && say "$name: cut at ${box}s"
  (( rc != 0 && rc != 124 && rc != 137 )) && say "$name: exit $rc (see logs/$name.log)"
  publish
  return 0
}

# ------------------------------------------------------------------ 0. wheels and environment
if ! "$PYTHON" -c 'import fastapi, uvicorn, pydantic_settings, httpx, pytest, pytest_asyncio' 2>/dev/null; then
  if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
    say "installing $(ls "$ROOT"/.whl/*.whl | wc -l) wheels from .whl/ into $SITE"
    mkdir -p "$SITE"
    if ! "$PYTHON" -m pip install --quiet --no-deps --no-index --target "$SITE" "$ROOT"/.whl/*.whl \
        >"$LOGS/wheels.log" 2>&1; then
      for w in "$ROOT"/.whl/*.whl; do "$PYTHON" -m zipfile -e "$w" "$SITE" >>"$LOGS/wheels.log" 2>&1; done
    fi
  else
    say "no .whl/ and the server's packages are missing: run benchmarks/gpu_wheels.sh first"
  fi
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - >"$RAW/env.json" 2>"$LOGS/env.log" <<'PY'
import ctypes.util, json, os, shutil, subprocess, sys
env = {"python": sys.version.split()[0],
       "NVIDIA_DRIVER_CAPABILITIES": os.environ.get("NVIDIA_DRIVER_CAPABILITIES", "(unset)"),
       "cc": shutil.which("cc") or shutil.which("gcc") or "none (Triton cannot build its launcher)"}
try:
    import torch, torchvision
    env.update(torch=torch.__version__, torchvision=torchvision.__version__,
               cuda_build=torch.version.cuda, cuda=torch.cuda.is_available(),
               gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
except Exception as exc:
    env["torch"] = f"error: {exc}"
try:
    import onnxruntime as ort
    providers = ort.get_available_providers()
    env["onnxruntime"] = ort.__version__
    env["onnxruntime_gpu"] = "installed" if "CUDAExecutionProvider" in providers else "not installed"
    from app.backends.onnxruntime import find_tensorrt
    env["tensorrt"] = find_tensorrt() or "libnvinfer not found"
except Exception as exc:
    env["onnxruntime"] = f"error: {exc}"
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
except Exception as exc:
    env["nvidia_smi"] = f"unavailable: {exc}"
try:
    import fastapi, uvicorn
    env["fastapi"], env["uvicorn"] = fastapi.__version__, uvicorn.__version__
except Exception as exc:
    env["fastapi"] = f"missing: {exc}"
print(json.dumps(env, indent=2))
PY
say "environment: $(tr -d '\n' <"$RAW/env.json" | head -c 600)"

if [[ "$DRY" == 1 ]]; then
  DEVICE=cpu; ARCH=resnet-mini
else
  DEVICE=cuda:0; ARCH=resnet50
fi
MODELS="$WORK/models"
IMAGES="$WORK/images"         # the served step's JPEGs (make_images.py)
PHOTOS="$WORK/photos"         # gpu_images.py: small/ (decode, pipeline) and race/

# ------------------------------------------------------------------ 0. prepared once, on the CPU
# (beside the GPU tests: they use the GPU and a core, this uses the others)
prepare() {
  rm -rf "$MODELS" "$IMAGES" "$PHOTOS"
  "$PYTHON" benchmarks/gpu_images.py "$PHOTOS" $([[ "$DRY" == 1 ]] && echo --small) &&
  "$PYTHON" benchmarks/make_images.py "$IMAGES" --count 32 &&
  "$PYTHON" -m app.cli export --arch "$ARCH" --weights random --formats eager \
    --out "$MODELS/$ARCH" --name "$ARCH" &&
  "$PYTHON" - "$MODELS/$ARCH/config.json" "$DRY" <<'PY'
import json, sys
path, dry = sys.argv[1], sys.argv[2] == "1"
c = json.load(open(path))
c.update(backend="eager", device="cpu" if dry else "cuda:0", precision="fp32" if dry else "fp16")
c["input"] = {**c.get("input", {}), "decode": "cpu" if dry else "gpu"}
c["batching"] = {**c.get("batching", {}), "max_batch_size": 8 if dry else 128,
                 "instances": 1 if dry else 2, "max_queue_size": 1024}
json.dump(c, open(path, "w"), indent=2)
PY
}
PREP_T0=$(date +%s)
( prepare >"$LOGS/prepare.log" 2>&1; echo $? >"$WORK/prepare.rc" ) &
PREP_PID=$!
wait_prepared() {  # the prepare step's line in steps.tsv, once
  [[ -z "$PREP_PID" ]] && return 0
  wait "$PREP_PID" 2>/dev/null; PREP_PID=""
  local rc; rc=$(cat "$WORK/prepare.rc" 2>/dev/null || echo 1)
  printf '%s\t%s\t%s\t%s\n' prepare "$rc" "$(( $(date +%s) - PREP_T0 ))" 0 >>"$STEPS"
  (( rc != 0 )) && say "prepare: exit $rc (see logs/prepare.log)"
  say "prepared: $(grep -h 'gpu_images:' "$LOGS/prepare.log" | head -1)"
  return 0
}

# ------------------------------------------------------------------ 1. the GPU tests
TESTS=(tests/backends/torch/test_gpu_decode.py tests/backends/torch/test_compile_limit.py
       tests/backends/test_onnxruntime_gpu.py tests/test_instance_threads.py tests/test_placement.py)
if [[ "$DRY" == 1 ]]; then
  run tests 60 "$PYTHON" -m pytest -q -p no:cacheprovider --collect-only "${TESTS[@]}"
else
  run tests 80 "$PYTHON" -m pytest -q -p no:cacheprovider -rs --timeout 70 \
    --junitxml="$RAW/tests.xml" "${TESTS[@]}"
fi
wait_prepared

# ------------------------------------------------------------------ 2. decode speed and the race
if command -v nvidia-smi >/dev/null && [[ "$DRY" != 1 ]]; then
  nvidia-smi dmon -s u -d 1 -o T >"$LOGS/dmon.log" 2>&1 &
  DMON_PID=$!
fi
DECODE=(benchmarks/gpu_decode_check.py --images "$PHOTOS/small" --race-dir "$PHOTOS/race"
        --json "$RAW/decode.json")
if [[ "$DRY" == 1 ]]; then
  run decode 60 "$PYTHON" "${DECODE[@]}" --device cpu --small
else
  run decode 45 "$PYTHON" "${DECODE[@]}" --device "$DEVICE" --seconds 1
fi
if [[ -n "${DMON_PID:-}" ]]; then kill "$DMON_PID" 2>/dev/null; wait "$DMON_PID" 2>/dev/null; DMON_PID=""; fi

# ------------------------------------------------------------------ 3. in-process pipeline
PIPE=(benchmarks/gpu_pipeline.py --images "$PHOTOS/small" --num-images 64)
if [[ "$DRY" == 1 ]]; then
  run pipeline_eager 90 "$PYTHON" "${PIPE[@]}" --device cpu --arch resnet-mini --seconds 0 \
    --warmup 0 --crop 64 --resize 72 --batch-sizes 2 --instances 1 2 --processes 2 \
    --process-timeout 80 --json "$RAW/pipeline_eager.json"
else
  run pipeline_eager 50 "$PYTHON" "${PIPE[@]}" --arch resnet50 --precision fp16 \
    --batch-sizes 128 256 --seconds 1.5 --warmup 2 --instances 1 4 \
    --json "$RAW/pipeline_eager.json"
fi

# ------------------------------------------------------------------ 4. served over HTTP
start_server() {  # WORKERS: returns 0 once every worker has logged ready and /health/ready is 200
  local workers=$1 log="$LOGS/server-w$1.log" up
  RESNET_SERVE_MODELS_DIR="$MODELS" RESNET_SERVE_PORT="$PORT" RESNET_SERVE_HOST=127.0.0.1 \
    RESNET_SERVE_GRPC_PORT=$((PORT + 1)) \
    RESNET_SERVE_LOG_LEVEL=warning RESNET_SERVE_SHUTDOWN_GRACE_S=0 RESNET_SERVE_ACCESS_LOG=off \
    "$PYTHON" -m app.cli serve --workers "$workers" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 240); do
    # each process logs "ready (pid N)" once its models are loaded and warmed up: a worker
    # still loading accepts no connection from the shared socket, so a bench that connected
    # before every worker was up would keep its connections on the first ones
    up=$(grep -o 'ready (pid [0-9]*)' "$log" 2>/dev/null | sort -u | wc -l)
    if (( up >= workers )) &&
       "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/health/ready', timeout=1)" 2>/dev/null; then
      echo "server --workers $workers: $up processes ready"
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
  done
  echo "server with --workers $workers never became ready ($up processes logged ready)"
  tail -20 "$log"
  return 1
}
stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
}
bench() {  # MODE K CONCURRENCY DURATION LABEL: $CLIENTS bench processes at once
  local mode=$1 k=$2 conc=$3 duration=$4 label=$5 pids=() c
  for c in $(seq 1 "$CLIENTS"); do
    "$PYTHON" -m app.cli bench --url "http://127.0.0.1:$PORT" --model "$ARCH" --images "$IMAGES" \
      --mode "$mode" --images-per-request "$k" --concurrency "$conc" --duration "$duration" \
      --warmup 1 --timeout 30 --no-progress --label "$label" \
      --out "$RAW/served-$label-c$c.json" >"$LOGS/bench-$label-c$c.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
}
served() {  # exit 1 when a server never became ready, so the table says so
  trap 'stop_server' EXIT TERM
  [[ -f "$MODELS/$ARCH/config.json" ]] || { echo "no prepared model (see prepare.log)"; return 1; }
  local failed=0
  if [[ "$1" == 1 ]]; then  # dry: one server, both kinds of load, briefly
    if start_server 1; then
      bench raw 1 2 1 jpeg-w1; bench v2-pixels 4 2 1 pixels32-w1
    else
      failed=1
    fi
    stop_server
    return "$failed"
  fi
  local w
  for w in 1 4 8; do
    if start_server "$w"; then
      bench raw 1 32 5 "jpeg-w$w"
      if [[ $w == 8 ]]; then
        bench v2-pixels 32 8 5 pixels32-w8
        # the same 128 connections from twice the client processes: if img/s rises, the 4
        # Python clients (not the server) were the limit of the row above
        CLIENTS=$((CLIENTS * 2)) bench raw 1 16 5 "jpeg-w8-clients$((CLIENTS * 2))"
      fi
    else
      failed=1
    fi
    stop_server
  done
  return "$failed"
}
export -f start_server stop_server bench served
export PYTHON ARCH MODELS IMAGES PORT CLIENTS RAW LOGS DRY START BUDGET SERVER_PID WORK
if [[ "$DRY" == 1 ]]; then CLIENTS=1; run served 120 bash -c 'served 1'
else run served 150 bash -c 'served 0'; fi

# ------------------------------------------------------------------ 5, 6. processes, compiled
if [[ "$DRY" != 1 ]]; then
  run pipeline_processes 50 "$PYTHON" "${PIPE[@]}" --arch resnet50 --precision fp16 \
    --batch-sizes 128 --seconds 3 --warmup 2 --processes 4 --process-timeout 40 \
    --json "$RAW/pipeline_processes.json"
  run pipeline_compiled 90 "$PYTHON" "${PIPE[@]}" --arch resnet50 --precision fp16 \
    --batch-sizes 128 --compile --seconds 2 --warmup 2 --json "$RAW/pipeline_compiled.json"
fi

# ------------------------------------------------------------------ 7. onnxruntime-gpu, if brought
ort_gpu=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("onnxruntime_gpu",""))' "$RAW/env.json" 2>/dev/null)
ort_inprocess() {
  local dir="$WORK/models-ort/$ARCH"
  "$PYTHON" -m app.cli export --arch "$ARCH" --weights random --formats onnx --precisions fp16 \
    --out "$dir" --name "$ARCH-ort" || return 1
  "$PYTHON" -m app.cli bench --in-process "$dir" --backend onnxruntime --device cuda:0 \
    --precision fp16 --batch-sizes 64,128 --min-time 2 --out "$RAW/ort_inprocess.json"
}
export -f ort_inprocess
if [[ "$DRY" != 1 && "$ort_gpu" == installed ]]; then run ort 90 bash -c ort_inprocess; fi

# ------------------------------------------------------------------ the table
publish
cat "$OUT/gpu_check.txt"
say "done; $OUT: $(cd "$OUT" && ls -l | awk 'NR>1 {printf "%s %s B; ", $9, $5}')"
