"""Bearer-token auth, body limits on every route, and no client-named paths or URLs."""

from __future__ import annotations

import base64

import pytest

from app.config import Settings
from app.main import create_app
from tests.api.http.test_classify import grey_png
from tests.conftest import app_client
from tests.fakes import fake_config

PNG = {"Content-Type": "image/png"}


async def test_auth_off_by_default() -> None:
    app = create_app(Settings(), configs=[fake_config()])
    async with app_client(app) as client:
        r = await client.post("/v1/models/fake/classify", content=grey_png(1), headers=PNG)
        assert r.status_code == 200


@pytest.mark.parametrize("protect_metrics", [False, True])
async def test_bearer_token_guards_inference_and_admin(protect_metrics: bool) -> None:
    app = create_app(
        Settings(auth_token="s3cret", protect_metrics=protect_metrics), configs=[fake_config()]
    )
    async with app_client(app) as client:
        for path in ("/health/live", "/health/ready"):
            assert (await client.get(path)).status_code == 200
        r = await client.post("/v1/models/fake/classify", content=grey_png(1), headers=PNG)
        assert r.status_code == 401 and "bearer" in r.json()["error"]
        assert r.headers["WWW-Authenticate"] == "Bearer"
        r = await client.post(
            "/v1/models/fake/classify",
            content=grey_png(1),
            headers={**PNG, "Authorization": "Bearer wrong"},
        )
        assert r.status_code == 401 and "wrong" in r.json()["error"]
        assert (await client.get("/v1/models")).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        r = await client.post(
            "/v1/models/fake/classify", content=grey_png(1), headers={**PNG, **good}
        )
        assert r.status_code == 200
        assert (await client.get("/v1/models", headers=good)).status_code == 200
        metrics = await client.get("/metrics")
        assert metrics.status_code == (401 if protect_metrics else 200)


async def test_chunked_body_over_the_limit_is_stopped() -> None:
    app = create_app(Settings(max_body_bytes=10_000), configs=[fake_config()])

    async def chunks():
        for _ in range(100):
            yield b"x" * 1000

    async with app_client(app) as client:
        r = await client.post("/v1/models/fake/classify", content=chunks(), headers=PNG)
        assert r.status_code == 413 and "limit" in r.json()["error"]
        files = [("a", ("a.png", b"y" * 20_000, "image/png"))]
        r = await client.post(
            "/v1/models/fake/classify", files=files, headers={"Transfer-Encoding": "chunked"}
        )
        assert r.status_code == 413


async def test_no_endpoint_reads_a_path_or_url_named_by_the_client() -> None:
    app = create_app(Settings(), configs=[fake_config()])
    async with app_client(app) as client:
        for ref in ("/etc/passwd", "file:///etc/passwd", "http://127.0.0.1:1/x.jpg"):
            r = await client.post("/v1/models/fake/classify", json={"images": [ref]})
            assert r.status_code == 400, ref
        encoded = base64.b64encode(b"/etc/passwd").decode()
        r = await client.post("/v1/models/fake/classify", json={"images": [encoded]})
        assert r.status_code == 400 and "not an image" in r.json()["error"]
        r = await client.post(
            "/v1/models/..%2F..%2Fetc%2Fpasswd/classify", content=b"x", headers=PNG
        )
        assert r.status_code == 404
