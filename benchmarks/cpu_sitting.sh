#!/usr/bin/env bash
# One quiet sitting on the CPU (docs/benchmarks.md, 2026-11-29): in-process and served figures per
# backend and precision, Poisson at 80 % of the peak, gRPC against HTTP V2 binary, TorchServe
# in the same run, and the crafted costly images. Needs the export and variants of
# docs/benchmarks.md ("Commands for the issue's targets") in $WORK/models/resnet50.
set -u
cd "$(dirname "$0")/.."
W=${WORK:-$HOME/.cache/resnet-serve-bench}
R=$W/r-$(date +%H%M)
mkdir -p $R
RS=.venv/bin/resnet-serve
PY=.venv/bin/python
log() { echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a $R/log; }
log start
# 1. in-process, per backend/precision
for spec in "onnxruntime int8" "openvino int8" "onnxruntime fp32" "openvino fp32" "openvino bf16"; do
  set -- $spec
  log "inproc $1 $2"
  $RS bench --in-process $W/models/resnet50 --backend $1 --precision $2 --batch-sizes 1,8,16 \
     --min-time 4 --images $W/images --out $R/inproc-$1-$2.json > $R/inproc-$1-$2.txt 2>&1
done
# 2. served, one JPEG per request
$RS serve --models $W/models --port 8000 --grpc-port 8001 --log-level warning > $R/server.log 2>&1 &
SP=$!
for i in $(seq 1 240); do curl -sf http://127.0.0.1:8000/health/ready >/dev/null && break; sleep 1; done
log "server ready"
for m in resnet50-ov-int8 resnet50-int8 resnet50-ov-bf16 resnet50-ov-fp32 resnet50; do
  log "served $m"
  $RS bench --url http://127.0.0.1:8000 --model $m --images $W/images --concurrency 1,8,16 \
     --duration 15 --warmup 3 --no-progress --out $R/served-$m.json > $R/served-$m.txt 2>&1
done
# 3. Poisson at 80 % of the peak, 60 s
for m in resnet50-ov-int8; do
  log "poisson $m"
  $RS bench --url http://127.0.0.1:8000 --model $m --images $W/images --concurrency 16 \
     --rate-fraction 0.8 --duration 60 --warmup 5 --no-progress --out $R/poisson-$m.json > $R/poisson-$m.txt 2>&1
done
# 4. gRPC vs HTTP V2 binary, pre-decoded uint8 batches
for k in 8 32; do
  log "v2-pixels $k"
  $RS bench --mode v2-pixels --url http://127.0.0.1:8000 --model resnet50-ov-int8 --images $W/images \
     --images-per-request $k --concurrency 1,4 --duration 12 --warmup 3 --no-progress --out $R/v2px-$k.json > $R/v2px-$k.txt 2>&1
  log "grpc $k"
  $RS bench --mode grpc --url grpc://127.0.0.1:8001 --model resnet50-ov-int8 --images $W/images \
     --images-per-request $k --concurrency 1,4 --duration 12 --warmup 3 --no-progress --out $R/grpc-$k.json > $R/grpc-$k.txt 2>&1
done
kill -TERM $SP; wait $SP
# 5. TorchServe in the same sitting
log torchserve
WORK=$W PYTHON=.venv/bin/python RS_MODELS="resnet50-ov-int8 resnet50-int8" TS_BATCH_SIZES="1" \
  CONCURRENCY=8 DURATION=15 ROUNDS=1 WRK=0 OUT=$R/ts benchmarks/torchserve_compare.sh > $R/ts.txt 2>&1
# 6. crafted inputs: decode times with and without the limits
log costly
$PY -m tests.costly_images --no-limits > $R/costly-nolimits.txt 2>&1
$PY -m tests.costly_images > $R/costly-limits.txt 2>&1
log end
echo $R
