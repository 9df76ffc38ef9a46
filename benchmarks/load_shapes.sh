#!/usr/bin/env bash
# Issue 19's targets in one sitting (docs/benchmarks.md, "Fast at every load"): for OpenVINO int8
# and ONNX Runtime int8, with the export's defaults (no hand tuning):
#   in-process batch 1..8 on all cores and the decoder's ms/image (the c=1 target and the
#   decode-adjusted ceiling), then served: c=1, closed loop c=16 (the peak), Poisson at 50 %,
#   80 % and 95 % of the static scheduler's peak (the same rates for both), and the burst test
#   (benchmarks/burst.py); then one table.
# Each model is run twice, adaptive (the default) and static (batching.scheduler "static": the
# scheduler before issue 19), so "no step worse than today" is measured in the same sitting.
#
#   benchmarks/load_shapes.sh                 # WORK=~/.cache/resnet-serve-bench/load-shapes
#   MODELS="resnet50-ov-int8" SCHEDULERS=adaptive POISSON_S=30 benchmarks/load_shapes.sh
#
# Exports ResNet-50 (random weights: speed does not depend on them) with int8 calibrated on the
# bench images when $WORK/models/resnet50 is missing. About 20 minutes with the defaults; run
# it with nothing else on the machine (the load average is logged before every step).
set -u
cd "$(dirname "$0")/.."
W=${WORK:-$HOME/.cache/resnet-serve-bench/load-shapes}
PY=${PYTHON:-.venv/bin/python}
RS="$PY -m app.cli"
MODELS=${MODELS:-"resnet50-ov-int8 resnet50-int8"}
SCHEDULERS=${SCHEDULERS:-"adaptive static"}
SINGLE_S=${SINGLE_S:-30}      # c=1 and c=16 steps
POISSON_S=${POISSON_S:-60}    # each Poisson step
BURST=${BURST:-200}
PORT=${PORT:-8000}
R=${OUT:-$W/r-$(date +%Y%m%d-%H%M)}
mkdir -p "$R"
log() { echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a "$R/log"; }

if [ ! -d "$W/images" ]; then
  $PY benchmarks/make_images.py "$W/images" --count 32
fi
if [ ! -f "$W/models/resnet50/model.int8.onnx" ]; then
  log export
  $RS export --arch resnet50 --weights random --formats onnx --precisions int8 \
    --calibration-images "$W/images" --out "$W/models/resnet50" > "$R/export.txt" 2>&1 || exit 1
fi
# the variants: the export's defaults, with only the backend, precision and scheduler set
$PY - "$W/models/resnet50/config.json" <<'PY'
import json, sys
path = sys.argv[1]
cfg = json.load(open(path))
batching = {k: v for k, v in cfg["batching"].items() if k != "scheduler"}
variants = {}
for name, backend in (("resnet50-ov-int8", "openvino"), ("resnet50-int8", "onnxruntime")):
    for scheduler, suffix in (("adaptive", ""), ("static", "-static")):
        variants[name + suffix] = {
            "backend": backend,
            "precision": "int8",
            "batching": {**batching, "scheduler": scheduler},
        }
cfg["variants"] = variants
json.dump(cfg, open(path, "w"), indent=2)
PY

log start
# 1. in-process: every batch size on all cores (the backend's own default threads), and decode
for spec in "openvino int8" "onnxruntime int8"; do
  set -- $spec
  log "in-process $1 $2"
  $RS bench --in-process "$W/models/resnet50" --backend $1 --precision $2 --batch-sizes 1,2,4,8 \
    --min-time 4 --images "$W/images" --out "$R/inproc-$1-$2.json" > "$R/inproc-$1-$2.txt" 2>&1
done

# 2. served
# no per-request access log (on by default when the log is not a terminal): the figures stay
# comparable with the earlier sittings; text lines, so the scheduler's start-up line reads plainly
RESNET_SERVE_ACCESS_LOG=off RESNET_SERVE_LOG_FORMAT=text \
  $RS serve --models "$W/models" --port $PORT --grpc-port 0 --log-level info > "$R/server.log" 2>&1 &
SP=$!
trap 'kill -TERM $SP 2>/dev/null; wait $SP 2>/dev/null' EXIT
for i in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$PORT/v1/models" > "$R/models.json" || { log "server not ready"; exit 1; }
log "server ready"
# Both schedulers of a model get the same offered Poisson rates: fractions of the static
# scheduler's c=16 peak (today's), so "no step worse than today" compares equal loads; each
# scheduler's own peak is in its closed-loop file.
peak_of() {
  $PY -c "import json,sys; s=json.load(open(sys.argv[1]))['steps']; print(max(x['ok_per_s'] for x in s if x['concurrency']==16))" "$1"
}
variant() { if [ "$2" = static ]; then echo "$1-static"; else echo "$1"; fi; }
for m in $MODELS; do
  for s in $SCHEDULERS; do
    v=$(variant $m $s)
    log "c=1 and c=16 $v"
    $RS bench --url "http://127.0.0.1:$PORT" --model $v --images "$W/images" --concurrency 1,16 \
      --duration $SINGLE_S --warmup 3 --no-progress --out "$R/closed-$v.json" > "$R/closed-$v.txt" 2>&1
  done
  ref=$m-static; [ -f "$R/closed-$ref.json" ] || ref=$m
  peak=$(peak_of "$R/closed-$ref.json")
  for s in $SCHEDULERS; do
    v=$(variant $m $s)
    log "poisson $v at 0.5,0.8,0.95 of $peak (the c=16 peak of $ref)"
    $RS bench --url "http://127.0.0.1:$PORT" --model $v --images "$W/images" --peak $peak \
      --rate-fraction 0.5,0.8,0.95 --duration $POISSON_S --warmup 5 --no-progress \
      --out "$R/poisson-$v.json" > "$R/poisson-$v.txt" 2>&1
  done
  for s in $SCHEDULERS; do
    v=$(variant $m $s)
    log "burst $v"
    $PY benchmarks/burst.py --url "http://127.0.0.1:$PORT" --model $v --images "$W/images" \
      --count $BURST --out "$R/burst-$v.json" > "$R/burst-$v.txt" 2>&1
  done
done
curl -sf "http://127.0.0.1:$PORT/v1/models" > "$R/models-after.json"
log end
grep "scheduler: model" "$R/server.log" > "$R/scheduler.txt"
$PY benchmarks/load_shapes_report.py "$R" | tee "$R/table.md"
echo "$R"
