"""Opt-in (`make test-docker`): the Deployment rendered by `kubectl kustomize
deploy/k8s/overlays/cpu` runs under a real container runtime, `podman kube play`, against the
real image (deploy/ci/podman-kube-e2e.sh has the details): ready through its own probes, uid
10001, read-only root file system, classifies a JPEG, exits 0 within the grace period on SIGTERM
with every accepted request answered. Needs root, Debian's podman, catatonit, runc and
debootstrap, and several minutes on a cold cache (base image, image build)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.deploy.helpers import DEPLOY, REPO

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        os.environ.get("RESNET_SERVE_DOCKER_TESTS") != "1",
        reason="set RESNET_SERVE_DOCKER_TESTS=1 to build the image and run the pod under podman",
    ),
]


@pytest.mark.timeout(1800)
def test_rendered_deployment_runs_under_podman_kube_play():
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(DEPLOY / "ci" / "podman-kube-e2e.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1750,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-8000:]
    assert "pause image localhost/resnet-serve-pause:catatonit" in log
    assert "healthy through its probes, /health/ready 200" in log
    assert "uid 10001, read-only root file system (/tmp writable)" in log
    assert "classified a JPEG" in log
    assert " 0 lost " in log and "exited 0 after SIGTERM" in log
