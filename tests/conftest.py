"""Shared fixtures: small models made by the tests themselves, real images, app and server."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import fakes
from tests.digits_fixtures import digits_dir, digits_images  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
# In-process apps open no gRPC port (a test asks for one); ServerProcess gives each its own.
os.environ.setdefault("RESNET_SERVE_GRPC_PORT", "0")


def sample_photo_path() -> Path:
    """A real photograph that ships with matplotlib (a dev dependency)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="session")
def photo_jpeg() -> bytes:
    try:
        return sample_photo_path().read_bytes()
    except ImportError:  # a bare GPU machine (benchmarks/gpu_check.sh) has no matplotlib:
        return encode(synthetic_photo(99, (512, 600)), quality=90)  # the photo's size


def synthetic_photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like image: smooth gradients, shapes and noise, deterministic per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(0.002, 0.03, 2).tolist() + [rng.uniform(0, 6.28)]
        img[..., c] = 127 + 100 * np.sin(x * fx + y * fy + phase)
    for _ in range(6):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(20, 120)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        img[mask] = rng.integers(0, 256, 3)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def jpegs(photo_jpeg: bytes) -> list[bytes]:
    """Real JPEG files: the matplotlib photograph and synthetic photos of several sizes."""
    sizes = [(640, 480), (300, 500), (1024, 768), (224, 224)]
    return [photo_jpeg] + [encode(synthetic_photo(i, s), quality=90) for i, s in enumerate(sizes)]


@pytest.fixture(scope="session")
def resnet18_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18 with random weights, exported in every format (made once per session)."""
    from app.offline.export import export_model

    out = tmp_path_factory.mktemp("models") / "resnet18"
    export_model("resnet18", "random", ["eager", "torchscript", "onnx"], out, seed=0)
    return out


@pytest.fixture()
def models_repo(resnet18_dir: Path, tmp_path: Path) -> Path:
    """A model repository holding the resnet18 export (a fresh copy per test)."""
    repo = tmp_path / "models"
    repo.mkdir()
    shutil.copytree(resnet18_dir, repo / "resnet18")
    return repo


@pytest.fixture(autouse=True)
def _fake_backend() -> Iterator[None]:
    fakes.register()
    fakes.FakeBackend.behaviour.clear()
    yield
    fakes.FakeBackend.behaviour.clear()


@asynccontextmanager
async def app_client(app) -> AsyncIterator[httpx.AsyncClient]:
    """In-process client with the app's lifespan running (models loaded and closed)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A real `resnet-serve serve` process on 127.0.0.1."""

    def __init__(
        self,
        models: Path,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        **popen: Any,  # more subprocess.Popen arguments (preexec_fn=...)
    ):
        self.models = models
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()  # KServe V2 over gRPC (app/api/grpc/service.py)
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.log_path = models.parent / f"server-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--models",
            str(models),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            *(args or []),
        ]
        # no drain period on SIGTERM unless a test asks for one (the default, 5 s, would be
        # waited out by every stop, with nothing in flight); the grace-period tests set theirs
        full_env = {
            "RESNET_SERVE_SHUTDOWN_GRACE_S": "0",
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, **popen
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


@pytest.fixture(scope="session")
def resnet18_server(
    resnet18_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real server of the resnet18 export (default arguments, no drain period on stop),
    shared by the tests that only read from it: metadata, answers, errors of their own
    requests. Tests that assert counts, statistics or metrics of a fresh server, or change the
    repository, start their own with start_server."""
    repo = tmp_path_factory.mktemp("shared-server") / "models"
    repo.mkdir()
    shutil.copytree(resnet18_dir, repo / "resnet18")
    with running_server(repo, env={"RESNET_SERVE_SHUTDOWN_GRACE_S": "0"}) as server:
        yield server


@contextmanager
def running_server(
    models: Path, args: list[str] | None = None, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A ready ServerProcess, stopped on exit: for module- and session-scoped fixtures."""
    server = ServerProcess(models, args, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def start_server() -> Iterator:
    """Factory: start_server(models_dir, args=[...], env={...}) -> ready ServerProcess."""
    started: list[ServerProcess] = []

    def start(
        models: Path,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> ServerProcess:
        server = ServerProcess(models, args, env)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
