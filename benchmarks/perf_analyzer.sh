#!/usr/bin/env bash
# Drive a running resnet-serve with Triton's load generator, perf_analyzer, over the V2 HTTP API
# (or over gRPC: `-i grpc -u 127.0.0.1:8001`).
#
# perf_analyzer's PyPI wheels need glibc >= 2.38 (on older systems `pip install perf-analyzer`
# picks an empty placeholder), so it runs inside a minimal Debian trixie root made with
# debootstrap and cached outside the repository. Opt-in: needs root, debootstrap and the
# Debian and PyPI package registries the first time (a few minutes); later runs reuse the root.
#
#   benchmarks/perf_analyzer.sh --setup-only            # build the root only
#   benchmarks/perf_analyzer.sh -u 127.0.0.1:8000 -m resnet18 [perf_analyzer options...]
#
# Everything after the script's own options goes to perf_analyzer as is; `-i http` is added
# unless the arguments name a protocol (-i grpc: point -u at the gRPC port).
# Defaults: -b 1 --concurrency-range 1:4:1 --measurement-interval 5000. With the model's UINT8
# `images` input perf_analyzer generates random pixels itself (use --input-data zero|random|DIR).
#
# Environment: TRIXIE_ROOT (default /var/cache/resnet-serve/trixie),
#              PERF_ANALYZER_VERSION (default 2.60.0), DEBIAN_MIRROR (default: debootstrap's).
set -euo pipefail

ROOT_DIR=${TRIXIE_ROOT:-/var/cache/resnet-serve/trixie}
PA_VERSION=${PERF_ANALYZER_VERSION:-2.60.0}
MIRROR=${DEBIAN_MIRROR:-}  # empty: debootstrap's default mirror
CHROOT=$(PATH=$PATH:/usr/sbin:/sbin command -v chroot)

# A clean environment inside the root: the host's pip/SSL variables name host-only paths.
in_root() {
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} ${https_proxy:+https_proxy=$https_proxy} \
        "$CHROOT" "$ROOT_DIR" "$@"
}

setup_root() {
    if [ -x "$ROOT_DIR/opt/pa/bin/perf_analyzer" ]; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "perf_analyzer.sh: building the trixie root needs root (debootstrap, chroot)" >&2
        exit 2
    fi
    if ! command -v debootstrap >/dev/null; then
        echo "perf_analyzer.sh: installing debootstrap" >&2
        apt-get update -qq && apt-get install -y -qq debootstrap
    fi
    if [ ! -x "$ROOT_DIR/usr/bin/python3" ]; then
        mkdir -p "$ROOT_DIR"
        echo "perf_analyzer.sh: debootstrap trixie into $ROOT_DIR (a few minutes)" >&2
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            trixie "$ROOT_DIR" ${MIRROR:+"$MIRROR"}
    fi
    cp /etc/resolv.conf "$ROOT_DIR/etc/resolv.conf" 2>/dev/null || true
    # The host's CA bundle (it may hold a TLS-intercepting proxy's CA the root lacks).
    local host_ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    local cert_args=()
    if [ -f "$host_ca" ]; then
        cp "$host_ca" "$ROOT_DIR/etc/ssl/host-ca-bundle.crt"
        cert_args=(--cert /etc/ssl/host-ca-bundle.crt)
    fi
    in_root /usr/bin/python3 -m venv /opt/pa
    in_root /opt/pa/bin/pip install --quiet --disable-pip-version-check "${cert_args[@]}" \
        "perf-analyzer==$PA_VERSION"
    if [ ! -x "$ROOT_DIR/opt/pa/bin/perf_analyzer" ]; then
        echo "perf_analyzer.sh: perf-analyzer==$PA_VERSION installed no perf_analyzer binary" >&2
        exit 1
    fi
}

if [ "${1:-}" = "--setup-only" ]; then
    setup_root
    in_root /opt/pa/bin/perf_analyzer --version || true
    exit 0
fi

setup_root
# The chroot shares the host's network namespace: 127.0.0.1 is the host's loopback.
args=("$@")
have() { local a; for a in "${args[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
have -b || args+=(-b 1)
have --concurrency-range || have --request-rate-range || args+=(--concurrency-range 1:4:1)
have --measurement-interval || have -p || have --request-count \
    || args+=(--measurement-interval 5000)
have -i || have --protocol || args=(-i http "${args[@]}")
in_root /opt/pa/bin/perf_analyzer "${args[@]}"
