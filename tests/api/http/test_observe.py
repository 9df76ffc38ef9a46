"""Seeing one request over HTTP, in-process: X-Request-ID on every answer, Server-Timing on
the inference routes (the contract with the web UI, issue 21), the access line, the V2 id,
and Triton's trace settings routes."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.main import create_app
from app.metrics import Metrics
from tests.conftest import encode
from tests.fakes import Behaviour, FakeBackend, fake_config

TOKEN = "observe-token-5d1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMING = re.compile(
    r"decode;dur=(\d+\.\d{3}), queue;dur=(\d+\.\d{3}), infer;dur=(\d+\.\d{3}), "
    r"post;dur=(\d+\.\d{3}), total;dur=(\d+\.\d{3})"
)
HEX32 = re.compile(r"[0-9a-f]{32}")


@asynccontextmanager
async def client_for(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """In-process client whose transport answers an app's unhandled exception with its 500
    (as uvicorn does) instead of raising it in the test."""
    app = create_app(
        Settings(auth_token=TOKEN, max_body_bytes=1_000_000, **settings),
        configs=[fake_config("fake")],
        metrics=Metrics(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=AUTH
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def png(value: int = 42) -> bytes:
    return encode(Image.new("RGB", (300, 300), (value, value, value)), "PNG")


def pixels(value: int = 3, **extra: object) -> dict:
    batch = np.full((1, 224, 224, 3), value, np.uint8)
    return {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": [1, 224, 224, 3],
                "data": batch.ravel().tolist(),
            }
        ],
        **extra,
    }


def classify(client: httpx.AsyncClient, body: bytes, **headers: str):
    return client.post(
        "/v1/models/fake/classify",
        content=body,
        headers={"Content-Type": "image/png", **headers},
    )


async def test_every_answer_echoes_the_request_id() -> None:
    async with client_for() as c:
        cases = [
            (await classify(c, png(), **{"X-Request-ID": "mine-1"}), 200),
            (await classify(c, b"not an image", **{"X-Request-ID": "mine-2"}), 400),
            (await c.post("/v1/models/nope/classify", content=png()), 404),
            (await c.get("/no/such/route"), 404),
            (await c.post("/v1/models/fake/classify?top_k=0", content=png()), 422),
            (await classify(c, b"x" * 1_000_001), 413),
            (await c.get("/v2/models/fake", headers={"Authorization": "Bearer wrong"}), 401),
            (await c.get("/metrics"), 200),
            (await c.get("/health/live"), 200),
        ]
        for r, status in cases:
            assert r.status_code == status, r.text
            assert r.headers["x-request-id"], r.request.url
        assert cases[0][0].headers["x-request-id"] == "mine-1"
        assert cases[1][0].headers["x-request-id"] == "mine-2"
        assert cases[1][0].json() == {"error": cases[1][0].json()["error"]}  # format unchanged
        ids = [r.headers["x-request-id"] for r, _ in cases[2:]]
        assert all(HEX32.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)


async def test_an_unexpected_error_answers_500_with_the_request_id(monkeypatch) -> None:
    async with client_for() as c:

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("unexpected")

        monkeypatch.setattr(c.app.state.dataplane, "classify", broken)  # type: ignore[attr-defined]
        r = await classify(c, png(), **{"X-Request-ID": "boom-1"})
        assert r.status_code == 500 and r.headers["x-request-id"] == "boom-1"
        assert r.json() == {"error": "internal error: RuntimeError; see the server log"}
        assert r.headers["server-timing"].startswith("total;dur=")


@pytest.mark.parametrize("value", ["x" * 129, "caf\u00e9".encode("utf-8"), b"tab\there", b"a b"])
async def test_a_hostile_request_id_is_replaced(value: str | bytes) -> None:
    async with client_for() as c:
        r = await classify(c, png(), **{"X-Request-ID": value})  # type: ignore[arg-type]
        assert r.status_code == 200
        assert HEX32.fullmatch(r.headers["x-request-id"])


async def test_server_timing_on_classify_and_v2_infer() -> None:
    FakeBackend.behaviour["fake"] = Behaviour(delay_s=0.02)
    async with client_for() as c:
        r = await classify(c, png())
        v1 = TIMING.fullmatch(r.headers["server-timing"])
        assert v1, r.headers["server-timing"]
        decode, queue, infer, post, total = map(float, v1.groups())
        assert decode > 0 and infer >= 20.0 and post > 0
        assert decode + queue + infer + post <= total + 0.005
        for path in ("/v2/models/fake/infer", "/v2/models/fake/versions/1/infer"):
            r = await c.post(path, json=pixels())
            assert r.status_code == 200
            v2 = TIMING.fullmatch(r.headers["server-timing"])
            assert v2 and float(v2.group(1)) == 0.0  # pixels: nothing to decode
            assert float(v2.group(3)) >= 20.0
        r = await c.post("/v2/models/fake/infer", json={"inputs": []})
        assert r.status_code == 400 and r.headers["server-timing"].startswith("total;dur=")
        r = await classify(c, b"not an image")
        assert re.fullmatch(
            r"decode;dur=\d+\.\d{3}, total;dur=\d+\.\d{3}", r.headers["server-timing"]
        )
        for other in ("/v2/models/fake", "/v1/models", "/health/ready", "/metrics"):
            assert "server-timing" not in (await c.get(other)).headers


async def test_server_timing_can_be_turned_off() -> None:
    async with client_for(server_timing=False) as c:
        r = await classify(c, png())
        assert r.status_code == 200 and "server-timing" not in r.headers
        assert r.headers["x-request-id"]
        r = await c.post("/v2/models/fake/infer", json=pixels())
        assert "server-timing" not in r.headers


async def test_the_v2_id_is_the_request_id_when_the_body_has_none() -> None:
    async with client_for() as c:
        r = await c.post("/v2/models/fake/infer", json=pixels(), headers={"X-Request-ID": "v2-7"})
        assert r.json()["id"] == "v2-7"
        r = await c.post("/v2/models/fake/infer", json=pixels())
        assert r.json()["id"] == r.headers["x-request-id"]
        r = await c.post("/v2/models/fake/infer", json=pixels(id="body-id"))
        assert r.json()["id"] == "body-id" and r.headers["x-request-id"] != "body-id"


async def test_the_access_line(caplog) -> None:
    caplog.set_level(logging.INFO, logger="resnet_serve.access")
    async with client_for(access_log=True) as c:
        r = await classify(c, png(), **{"X-Request-ID": "acc-1"})
        assert r.status_code == 200
        await classify(c, b"not an image", **{"X-Request-ID": "acc-2"})
    lines = {r.access["request_id"]: r.access for r in caplog.records if hasattr(r, "access")}
    ok, bad = lines["acc-1"], lines["acc-2"]
    assert ok["route"] == "/v1/models/{name}/classify" and ok["model"] == "fake"
    assert ok["version"] == "1" and ok["status"] == 200 and ok["images"] == 1
    assert ok["bytes_in"] == len(png()) and ok["bytes_out"] == len(r.content)
    phases = ("read_ms", "decode_ms", "queue_ms", "infer_ms", "post_ms", "send_ms")
    assert abs(sum(ok[p] for p in phases) - ok["total_ms"]) < 0.01
    assert bad["status"] == 400 and bad["decode_ms"] > 0 and bad["infer_ms"] == 0


async def test_trace_settings_routes() -> None:
    async with client_for() as c:
        r = await c.get("/v2/trace/setting")
        assert r.json() == {
            "trace_level": ["OFF"],  # no exporter configured
            "trace_rate": "1",
            "trace_count": "-1",
            "trace_mode": "opentelemetry",
        }
        assert "trace" in (await c.get("/v2")).json()["extensions"]
        r = await c.post("/v2/trace/setting", json={"trace_level": ["TIMESTAMPS"]})
        assert r.status_code == 400 and "OTEL_EXPORTER_OTLP_ENDPOINT" in r.json()["error"]
        r = await c.post("/v2/trace/setting", json={"trace_rate": "10"})
        assert r.status_code == 200 and r.json()["trace_rate"] == "10"
        r = await c.post("/v2/models/fake/trace/setting", json={"trace_rate": "3"})
        assert r.json()["trace_rate"] == "3"
        assert (await c.get("/v2/models/fake/trace/setting")).json()["trace_rate"] == "3"
        r = await c.post("/v2/models/fake/trace/setting", content=b"")  # no settings: cleared
        assert r.json()["trace_rate"] == "10"
        assert (await c.get("/v2/models/nope/trace/setting")).status_code == 404
        r = await c.post("/v2/trace/setting", json={"trace_file": "/tmp/x"})
        assert r.status_code == 400
        r = await c.get("/v2/trace/setting", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401


async def test_trace_settings_cannot_change_with_several_workers() -> None:
    async with client_for(workers=2) as c:
        r = await c.post("/v2/trace/setting", json={"trace_rate": "10"})
        assert r.status_code == 403 and "OTEL_TRACES_SAMPLER" in r.json()["error"]
        assert (await c.get("/v2/trace/setting")).status_code == 200
