#!/usr/bin/env bash
# Opt-in: the Kubernetes Deployment as rendered by `kubectl kustomize deploy/k8s/overlays/cpu`,
# run by a real container runtime, `podman kube play`, against the real image (the Dockerfile).
# No Kubernetes control plane or kubelet can run here; podman runs the pod spec itself.
#
#   - The pod's infra ("pause") container is a local image holding Debian's static catatonit,
#     built here and set as podman's infra_image: nothing is pulled.
#   - The image is built by `podman build --pull=never` from the Dockerfile (EXPORT_MODEL=0);
#     its base image, when missing, comes from debootstrap + `podman import`, as in
#     deploy/ci/docker-e2e.sh.
#   - Local adaptations of the rendered Deployment, and nothing else: the local image with
#     imagePullPolicy Never, replicas 1, a hostPort on 127.0.0.1 (a pod has no Service here),
#     and the model repository as a read-only hostPath volume at /models.  Security context,
#     probes, env, resources, the /tmp emptyDir and terminationGracePeriodSeconds are as rendered.
#   - podman 4.3 runs an httpGet probe as `curl -f http://localhost:PORT/PATH` inside the
#     container; the slim image has no curl, so the image under test gets one extra layer with
#     a 20-line Python stand-in for `curl -f` (deploy/ci/probe-curl.py). The real image is
#     otherwise unchanged.
#
# Checks: the container becomes healthy through its own probes and /health/ready answers 200;
# it runs as uid 10001 with a read-only root file system (writes fail, /tmp works); it classifies
# a JPEG; on SIGTERM (podman stop, which waits terminationGracePeriodSeconds before SIGKILL)
# it exits 0 within the grace period and every request it accepted is answered.
#
# Usage: deploy/ci/podman-kube-e2e.sh   (root; Debian's podman, catatonit, runc, debootstrap)
# Env:   PYTHON   a Python with the project and the dev extra (kubectl, pyyaml, httpx)
#        SCRATCH  work dir kept between runs (podman storage, base rootfs, model), default
#                 /tmp/resnet-serve-podman
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
BIN="$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")"
KUBECTL="${KUBECTL:-$BIN/kubectl}"
SCRATCH="${SCRATCH:-/tmp/resnet-serve-podman}"
BASE_IMAGE="docker.io/library/python:3.11-slim-bookworm"
IMAGE="localhost/resnet-serve:kube"
PAUSE_IMAGE="localhost/resnet-serve-pause:catatonit"
mkdir -p "$SCRATCH"
t0=$(date +%s)
step() { echo "[podman-kube +$(( $(date +%s) - t0 ))s] $*" >&2; }
for tool in podman catatonit debootstrap; do
    command -v "$tool" >/dev/null || { echo "no $tool: deploy/ci/install-test-tools.sh --docker" >&2; exit 1; }
done
[ -x "$KUBECTL" ] || KUBECTL="$(command -v kubectl)"

# ---------------------------------------------------------------- podman, isolated
# Its own storage and run roots (nothing shared with other podman users of the machine), and a
# containers.conf: the local pause image; runc where crun cannot drive the cgroups (v1/hybrid);
# ulimits the runtime may set without CAP_SYS_RESOURCE (podman's defaults exceed the hard
# limits of a container it runs in).
conf="$SCRATCH/containers.conf"
hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
nofile=$(( hard_nofile == 0 || hard_nofile > 16384 ? 16384 : hard_nofile / 2 ))
[ "$hard_nofile" = unlimited ] && nofile=16384
nproc=32768
[ "$hard_nproc" != unlimited ] && [ "$hard_nproc" -le 65536 ] && nproc=$(( hard_nproc / 2 ))
runtime=""
if [ ! -f /sys/fs/cgroup/cgroup.controllers ] && command -v runc >/dev/null; then runtime='runtime = "runc"'; fi
cat >"$conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
infra_image = "$PAUSE_IMAGE"
cgroup_manager = "cgroupfs"
events_logger = "file"
$runtime
CONF
export CONTAINERS_CONF="$conf"
P=(podman --root "$SCRATCH/storage" --runroot "$SCRATCH/run")

MANIFEST="$SCRATCH/deployment.yaml"
cleanup() {
    rc=$?
    if [ "$rc" -ne 0 ]; then
        "${P[@]}" ps -a --format '{{.Names}} {{.Status}}' >&2 || true
        "${P[@]}" logs --tail 60 resnet-serve-pod-resnet-serve >&2 2>/dev/null || true
    fi
    [ -f "$MANIFEST" ] && "${P[@]}" kube down "$MANIFEST" >/dev/null 2>&1 || true
    step "done (rc=$rc)"
    exit "$rc"
}
trap cleanup EXIT
"${P[@]}" kube down "$MANIFEST" >/dev/null 2>&1 || true  # a previous run's leftovers

# ---------------------------------------------------------------- the pause image, built here
pause_ctx="$SCRATCH/pause"
mkdir -p "$pause_ctx"
cp "$(command -v catatonit)" "$pause_ctx/catatonit"
printf 'FROM scratch\nCOPY catatonit /catatonit\nENTRYPOINT ["/catatonit", "-P"]\n' >"$pause_ctx/Containerfile"
"${P[@]}" build -q --pull=never -t "$PAUSE_IMAGE" "$pause_ctx" >/dev/null
step "pause image $PAUSE_IMAGE (Debian's catatonit)"

# ---------------------------------------------------------------- base image (offline stand-in)
if ! "${P[@]}" image exists "$BASE_IMAGE"; then
    rootfs="$SCRATCH/rootfs"
    if [ ! -x "$rootfs/usr/bin/python3" ] || [ ! -f "$rootfs/etc/ssl/certs/ca-certificates.crt" ]; then
        step "debootstrap bookworm into $rootfs"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" http://deb.debian.org/debian >"$SCRATCH/debootstrap.log" 2>&1
    fi
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    step "podman import $BASE_IMAGE"
    tar -C "$rootfs" -c . | "${P[@]}" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
fi

# ---------------------------------------------------------------- the image under test
step "podman build (EXPORT_MODEL=0)"
# docker format: the OCI format drops the Dockerfile's SHELL (sh -eu) and HEALTHCHECK
"${P[@]}" build --format docker --pull=never --build-arg EXPORT_MODEL=0 --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    -t localhost/resnet-serve:cpu -f "$REPO/Dockerfile" "$REPO" >"$SCRATCH/build.log" 2>&1 \
    || { tail -40 "$SCRATCH/build.log" >&2; exit 1; }
probe_ctx="$SCRATCH/probe"
mkdir -p "$probe_ctx"
cp "$REPO/deploy/ci/probe-curl.py" "$probe_ctx/curl"
printf 'FROM localhost/resnet-serve:cpu\nCOPY --chmod=755 curl /usr/local/bin/curl\n' >"$probe_ctx/Containerfile"
"${P[@]}" build -q --format docker --pull=never -t "$IMAGE" "$probe_ctx" >/dev/null
step "image $IMAGE built"

# ---------------------------------------------------------------- model (mounted, not baked)
MODELS="$SCRATCH/models"
if [ ! -f "$MODELS/resnet18/config.json" ]; then
    step "exporting resnet18 (random weights, onnx) into $MODELS"
    rm -rf "$MODELS/resnet18"
    (cd "$REPO" && "$PY" -m app.cli export --arch resnet18 --weights random --formats onnx \
        --out "$MODELS/resnet18" >/dev/null)
fi
chmod -R a+rX "$MODELS"

# ---------------------------------------------------------------- the rendered Deployment
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$KUBECTL" kustomize "$REPO/deploy/k8s/overlays/cpu" >"$SCRATCH/rendered.yaml"
"$PY" "$REPO/deploy/ci/kube_play_manifest.py" "$SCRATCH/rendered.yaml" "$MANIFEST" \
    --image "$IMAGE" --host-port "$PORT" --models "$MODELS" >"$SCRATCH/grace_s"
GRACE_S=$(cat "$SCRATCH/grace_s")

step "podman kube play (pod spec of the rendered Deployment, port $PORT)"
"${P[@]}" kube play "$MANIFEST" >"$SCRATCH/play.log" 2>&1 || { cat "$SCRATCH/play.log" >&2; exit 1; }
CTR=$("${P[@]}" ps --filter label=app.kubernetes.io/name=resnet-serve --format '{{.Names}}' | grep -v infra | head -1)
[ -n "$CTR" ] || CTR=$("${P[@]}" ps --format '{{.Names}}' | grep -v -- -infra | head -1)
step "container $CTR; infra image: $("${P[@]}" pod inspect "$("${P[@]}" inspect "$CTR" --format '{{.Pod}}')" --format '{{.InfraContainerID}}' | xargs -r "${P[@]}" inspect --format '{{.ImageName}}')"

# ---------------------------------------------------------------- ready through its own probes
hc=$("${P[@]}" inspect "$CTR" --format '{{json .Config.Healthcheck}}')
echo "$hc" | grep -q '/health/' || { echo "podman made no health check from the probes: $hc" >&2; exit 1; }
step "podman health check from the pod spec's probes: $hc"
status=""
for _ in $(seq 150); do
    "${P[@]}" healthcheck run "$CTR" >/dev/null 2>&1 || true
    status=$("${P[@]}" inspect "$CTR" --format '{{.State.Health.Status}}' 2>/dev/null || true)
    ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/health/ready" || true)
    [ "$status" = healthy ] && [ "$ready" = 200 ] && break
    sleep 2
done
[ "$status" = healthy ] && [ "$ready" = 200 ] || { echo "not ready: health '$status', /health/ready $ready" >&2; exit 1; }
step "healthy through its probes, /health/ready 200"

# ---------------------------------------------------------------- uid, read-only root
uid=$("${P[@]}" exec "$CTR" id -u)
[ "$uid" = 10001 ] || { echo "runs as uid $uid" >&2; exit 1; }
[ "$("${P[@]}" inspect "$CTR" --format '{{.HostConfig.ReadonlyRootfs}}')" = true ]
if "${P[@]}" exec "$CTR" sh -c 'echo x > /opt/venv/x' 2>/dev/null; then
    echo "the root file system is writable" >&2; exit 1
fi
"${P[@]}" exec "$CTR" sh -c 'echo x > /tmp/x && rm /tmp/x'
step "uid $uid, read-only root file system (/tmp writable)"

# ---------------------------------------------------------------- classify, then SIGTERM under load
"$PY" "$REPO/deploy/ci/kube_play_shutdown.py" --url "http://127.0.0.1:$PORT" --grace-s "$GRACE_S" \
    -- "${P[@]}" stop --time "$GRACE_S" "$CTR"
code=$("${P[@]}" inspect "$CTR" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || { echo "exit code $code after SIGTERM" >&2; "${P[@]}" logs --tail 40 "$CTR" >&2; exit 1; }
step "exited 0 after SIGTERM"
