"""Fixtures for the deployment tests (tests/deploy); the tools are found by helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.deploy.helpers import compose_binary


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "docker: builds the image and runs the compose stack (RESNET_SERVE_DOCKER_TESTS=1)",
    )


@pytest.fixture(scope="session")
def compose_cmd() -> list[str]:
    return compose_binary()


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without any RESNET_SERVE_* / GRAFANA_* overrides from the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RESNET_SERVE_", "GRAFANA_", "PROMETHEUS_", "COMPOSE_"))
    }
    env["DOCKER_CONFIG"] = env.get("DOCKER_CONFIG", str(Path.home() / ".docker"))
    return env
