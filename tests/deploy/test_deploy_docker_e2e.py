"""Opt-in: the real image and the real compose stack (deploy/ci/docker-e2e.sh).

Builds the Dockerfile with the classic builder, starts two resnet-serve replicas behind the
load balancer plus Prometheus, classifies through the load balancer and checks that Prometheus
scraped both replicas.  Needs root (dockerd, debootstrap) and a few minutes on a cold cache, so
it runs only with RESNET_SERVE_DOCKER_TESTS=1 (`make test-docker`).
"""

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
        reason="set RESNET_SERVE_DOCKER_TESTS=1 to build the image and run the compose stack",
    ),
]


@pytest.mark.timeout(1200)
def test_image_builds_and_compose_stack_serves_and_is_scraped():
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(DEPLOY / "ci" / "docker-e2e.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1150,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-8000:]
    assert "container healthy, uid 10001, no torch" in log
    assert "classified 8 images through the load balancer" in log
    assert "Prometheus scraped 8 requests from 2 replicas" in log
