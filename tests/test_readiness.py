"""The repository owns readiness: begin_drain() turns the server and every model not ready at
once (requests still answered in the grace period), and nothing turns them ready again: not a
batcher whose stuck instance comes back during the drain."""

from __future__ import annotations

import asyncio

from PIL import Image

from app.config import Settings
from app.main import create_app
from app.metrics import Metrics
from app.repository import ModelRepository
from tests.conftest import app_client, encode
from tests.fakes import Behaviour, FakeBackend, fake_config

PNG = {"Content-Type": "image/png"}


def grey_png(value: int) -> bytes:
    return encode(Image.new("RGB", (64, 64), (value, value, value)), "PNG")


def gauge(metrics: Metrics, model: str) -> float:
    value = metrics.registry.get_sample_value("resnet_serve_model_ready", {"model": model})
    assert value is not None, f"no model_ready series for {model}"
    return value


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_drain_turns_everything_not_ready_but_keeps_serving() -> None:
    metrics = Metrics()
    app = create_app(Settings(), configs=[fake_config("fake")], metrics=metrics)
    async with app_client(app) as client:
        repository: ModelRepository = app.state.repository
        assert (await client.get("/health/ready")).status_code == 200
        assert gauge(metrics, "fake") == 1
        repository.begin_drain()
        r = await client.get("/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "draining"
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/v1/models/fake")).json()["ready"] is False
        assert gauge(metrics, "fake") == 0
        # the grace period: requests are still answered
        r = await client.post("/v1/models/fake/classify", content=grey_png(7), headers=PNG)
        assert r.status_code == 200, r.text
    assert gauge(metrics, "fake") == 0


async def test_a_stuck_instance_that_recovers_during_the_drain_does_not_make_it_ready() -> None:
    FakeBackend.behaviour["slow"] = Behaviour(delay_s=1.0)
    metrics = Metrics()
    cfg = fake_config("slow", batching={"instances": 1, "infer_timeout_s": 0.2})
    app = create_app(Settings(), configs=[cfg], metrics=metrics)
    async with app_client(app) as client:
        repository: ModelRepository = app.state.repository
        model = repository.get("slow")
        assert model.batcher is not None and gauge(metrics, "slow") == 1
        stuck = asyncio.create_task(
            client.post("/v1/models/slow/classify", content=grey_png(1), headers=PNG)
        )
        await until(lambda: not model.batcher.healthy)
        assert gauge(metrics, "slow") == 0 and not repository.ready
        assert (await stuck).status_code == 500  # its batch outlived infer_timeout_s
        repository.begin_drain()
        await until(lambda: model.batcher.healthy)
        # the instance is back, the batcher said so; the drain still wins
        assert model.serving and not model.ready and not repository.ready
        assert gauge(metrics, "slow") == 0
        r = await client.get("/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "draining"
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/v1/models")).json()["models"][0]["ready"] is False


async def test_a_recovered_instance_makes_the_model_ready_again_when_not_draining() -> None:
    """The other half of the race test: the same recovery outside a drain does turn it ready,
    so the test above can fail."""
    FakeBackend.behaviour["slow"] = Behaviour(delay_s=1.0)
    metrics = Metrics()
    cfg = fake_config("slow", batching={"instances": 1, "infer_timeout_s": 0.2})
    app = create_app(Settings(), configs=[cfg], metrics=metrics)
    async with app_client(app) as client:
        model = app.state.repository.get("slow")
        stuck = asyncio.create_task(
            client.post("/v1/models/slow/classify", content=grey_png(1), headers=PNG)
        )
        await until(lambda: not model.batcher.healthy)
        assert gauge(metrics, "slow") == 0
        await stuck
        await until(lambda: model.batcher.healthy)
        assert gauge(metrics, "slow") == 1 and model.ready
        assert (await client.get("/health/ready")).status_code == 200
