"""The HTTP API in-process (httpx ASGI transport, lifespan running)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from PIL import Image

from app.config import Settings
from app.main import create_app
from app.metrics import Metrics
from tests.conftest import app_client, encode
from tests.fakes import Behaviour, FakeBackend, fake_config


def grey_png(value: int, size: int = 300) -> bytes:
    return encode(Image.new("RGB", (size, size), (value, value, value)), "PNG")


@pytest.fixture()
def fake_app():
    metrics = Metrics()
    app = create_app(
        Settings(max_images_per_request=4, max_body_bytes=2_000_000),
        configs=[fake_config("fake"), fake_config("other")],
        metrics=metrics,
    )
    return app, metrics


async def test_raw_multipart_and_json_bodies(fake_app) -> None:
    app, _ = fake_app
    async with app_client(app) as client:
        r = await client.post(
            "/v1/models/fake/classify?top_k=3",
            content=grey_png(42),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "fake"
        (preds,) = body["predictions"]
        assert [p["index"] for p in preds] == [42, 41, 43]  # ties ordered by index
        assert preds[0]["label"] == "grey42"
        assert preds[0]["probability"] > preds[1]["probability"]

        files = [("images", (f"{v}.png", grey_png(v), "image/png")) for v in (10, 200, 77)]
        r = await client.post("/v1/models/fake/classify?top_k=1", files=files)
        assert r.status_code == 200, r.text
        assert [row[0]["index"] for row in r.json()["predictions"]] == [10, 200, 77]

        images = [base64.b64encode(grey_png(v)).decode() for v in (5, 6)]
        images[1] = "data:image/png;base64," + images[1]
        r = await client.post("/v1/models/fake/classify", json={"images": images})
        assert r.status_code == 200, r.text
        assert [row[0]["index"] for row in r.json()["predictions"]] == [5, 6]
        assert len(r.json()["predictions"][0]) == 5  # default top_k


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"content": b"", "headers": {"Content-Type": "image/jpeg"}}, 400, "empty"),
        (
            {"content": b"not an image", "headers": {"Content-Type": "image/jpeg"}},
            400,
            "not an image",
        ),
        ({"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "Content-Type"),
        ({"json": {"images": ["%%%"]}}, 400, "base64"),
        ({"json": {"images": [42]}}, 400, "must be a base64 string"),
        (
            {
                "content": b'{"images": ' + b"[" * 70 + b"]" * 70 + b"}",
                "headers": {"Content-Type": "application/json"},
            },
            400,
            "nested deeper than 64 levels",
        ),
        (
            {"files": [("images", ("a.png", b"x", "image/png"))] * 5},
            413,
            "5 images in one request; the limit is 4",
        ),
        ({"json": {"pictures": []}}, 400, "images"),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
        ({"json": {"images": []}}, 400, "no image"),
        ({"json": {"images": ["AAAA"] * 5}}, 413, "limit"),
        ({"content": b"x" * 2_000_001, "headers": {"Content-Type": "image/jpeg"}}, 413, "limit"),
    ],
)
async def test_bad_requests_get_clear_json_errors(fake_app, kwargs, status, words) -> None:
    app, metrics = fake_app
    async with app_client(app) as client:
        r = await client.post("/v1/models/fake/classify", **kwargs)
        assert r.status_code == status, r.text
        assert words in r.json()["error"]
        assert FakeBackend.behaviour.get("fake", Behaviour()).batches == []  # never reached it
        # and the model still serves
        ok = await client.post(
            "/v1/models/fake/classify", content=grey_png(1), headers={"Content-Type": "image/png"}
        )
        assert ok.status_code == 200
    assert (
        metrics.registry.get_sample_value(
            "resnet_serve_requests_total",
            {"model": "fake", "endpoint": "classify", "code": str(status)},
        )
        == 1
    )


async def test_bad_image_in_multi_image_request_names_it(fake_app) -> None:
    app, _ = fake_app
    async with app_client(app) as client:
        files = [("a", ("a.png", grey_png(1), "image/png")), ("b", ("b.png", b"junk", "image/png"))]
        r = await client.post("/v1/models/fake/classify", files=files)
        assert r.status_code == 400 and r.json()["error"].startswith("image 1:")


async def test_unknown_model_top_k_and_timeout(fake_app) -> None:
    app, _ = fake_app
    async with app_client(app) as client:
        r = await client.post(
            "/v1/models/nope/classify", content=grey_png(1), headers={"Content-Type": "image/png"}
        )
        assert r.status_code == 404 and "nope" in r.json()["error"] and "fake" in r.json()["error"]
        r = await client.post(
            "/v1/models/fake/classify?top_k=0",
            content=grey_png(1),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 422 and "top_k" in r.json()["error"]
        r = await client.post(
            "/v1/models/fake/classify?top_k=500",
            content=grey_png(1),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 400 and "top_k must be between 1 and 100" in r.json()["error"]
        r = await client.post(
            "/v1/models/fake/classify?top_k=abc",
            content=grey_png(1),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 422 and "top_k" in r.json()["error"]
        FakeBackend.behaviour["fake"] = Behaviour(delay_s=0.3)
        r = await client.post(
            "/v1/models/fake/classify?timeout_ms=50",
            content=grey_png(1),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 504 and "deadline" in r.json()["error"]


async def test_full_queue_answers_503_with_retry_after() -> None:
    app = create_app(
        Settings(), configs=[fake_config("q", batching={"max_batch_size": 1, "max_queue_size": 1})]
    )
    FakeBackend.behaviour["q"] = Behaviour(delay_s=0.3)
    async with app_client(app) as client:
        import asyncio

        async def post():
            return await client.post(
                "/v1/models/q/classify", content=grey_png(3), headers={"Content-Type": "image/png"}
            )

        results = await asyncio.gather(*(post() for _ in range(4)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 2 and 503 in codes
        rejected = next(r for r in results if r.status_code == 503)
        assert rejected.headers["Retry-After"] == "1" and "queue" in rejected.json()["error"]


async def test_models_health_and_metrics(fake_app) -> None:
    app, _ = fake_app
    async with app_client(app) as client:
        assert (await client.get("/health/live")).json() == {"status": "alive"}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        models = (await client.get("/v1/models")).json()["models"]
        assert [m["name"] for m in models] == ["fake", "other"]
        one = (await client.get("/v1/models/fake")).json()
        assert one["backend"] == "fake" and one["providers"] == ["fake"] and one["ready"]
        assert one["batching"]["max_batch_size"] == 8 and one["input"]["shape"] == [224, 224, 3]
        assert (await client.get("/v1/models/zzz")).status_code == 404
        await client.post(
            "/v1/models/fake/classify", content=grey_png(9), headers={"Content-Type": "image/png"}
        )
        text = (await client.get("/metrics")).text
        for name in (
            "resnet_serve_request_duration_seconds_bucket",
            "resnet_serve_queue_wait_seconds",
            "resnet_serve_preprocess_duration_seconds",
            "resnet_serve_inference_duration_seconds",
            "resnet_serve_batch_size_bucket",
            "resnet_serve_images_total",
            "resnet_serve_queue_depth",
            "resnet_serve_requests_in_flight",
            "resnet_serve_model_ready",
        ):
            assert name in text, name
        assert (
            'resnet_serve_requests_total{code="200",endpoint="classify",model="fake"} 1.0' in text
        )
        assert 'le="0.0005"' in text and 'le="10.0"' in text


async def test_model_that_fails_to_load_leaves_server_up_not_ready() -> None:
    FakeBackend.behaviour["broken"] = Behaviour(fail_load=True)
    app = create_app(Settings(), configs=[fake_config("broken"), fake_config("fine")])
    async with app_client(app) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert "fake load failure" in ready.json()["models"]["broken"]["reason"]
        desc = (await client.get("/v1/models/broken")).json()
        assert desc["state"] == "failed" and "fake load failure" in desc["reason"]
        r = await client.post(
            "/v1/models/broken/classify", content=grey_png(1), headers={"Content-Type": "image/png"}
        )
        assert r.status_code == 503 and "failed" in r.json()["error"]
        r = await client.post(
            "/v1/models/fine/classify", content=grey_png(1), headers={"Content-Type": "image/png"}
        )
        assert r.status_code == 200


async def test_real_model_in_process(models_repo: Path, jpegs: list[bytes]) -> None:
    app = create_app(Settings(models_dir=models_repo))
    async with app_client(app) as client:
        r = await client.post(
            "/v1/models/resnet18/classify?top_k=5",
            content=jpegs[0],
            headers={"Content-Type": "image/jpeg"},
        )
        assert r.status_code == 200
        probs = [p["probability"] for p in r.json()["predictions"][0]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0


async def test_the_batchers_see_the_images_being_decoded(fake_app) -> None:
    # the adaptive scheduler starts no wide batch while the process decodes (app/batching.py)
    app, _ = fake_app
    async with app_client(app) as client:
        r = await client.get("/health/ready")
        assert r.status_code == 200
        gate = app.state.dataplane.decode_gate
        batcher = app.state.repository.models["fake"].batcher
        assert batcher is not None
        gate.admit(3)
        try:
            assert batcher._decoding() == 3
        finally:
            gate.release(3)
        assert batcher._decoding() == 0
