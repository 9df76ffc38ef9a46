"""The web page's routes (app/api/http/ui.py): served from the app itself, open without the
token (it holds no data) while its data comes from routes that need it, and gone with
RESNET_SERVE_UI=false."""

from __future__ import annotations

import re

from app.config import Settings
from app.main import create_app
from tests.api.http.test_classify import grey_png
from tests.conftest import app_client
from tests.fakes import fake_config

ASSETS = ("/ui/ui.js", "/ui/ui.css")


async def test_page_and_assets_come_from_the_server() -> None:
    app = create_app(Settings(), configs=[fake_config()])
    async with app_client(app) as client:
        for path in ("/", "/status"):
            r = await client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "default-src 'none'" in r.headers["content-security-policy"]
            assert "connect-src 'self'" in r.headers["content-security-policy"]
            refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
            assert set(ASSETS) <= set(refs)
            assert [u for u in refs if "//" in u] == []  # no CDN: nothing off this server
        for path in ASSETS:
            r = await client.get(path)
            assert r.status_code == 200 and len(r.content) > 1000, path
        assert (await client.get("/docs")).status_code == 200  # unchanged beside the page
        assert (await client.get("/redoc")).status_code == 200


async def test_status_reports_the_servers_own_figures() -> None:
    app = create_app(Settings(), configs=[fake_config()])
    async with app_client(app) as client:
        for i in range(3):
            r = await client.post(
                "/v1/models/fake/classify",
                content=grey_png(i),
                headers={"Content-Type": "image/png"},
            )
            assert r.status_code == 200
        app.state.stats.sample()  # as the background task does every interval
        report = (await client.get("/v1/status")).json()
        assert report["models"] == ["fake"]
        assert report["window"]["*"]["requests"] == 3
        assert report["window"]["fake"]["images"] == 3
        assert report["interval_s"] == 2.0 and report["window_s"] == 600.0
        assert set(report["series"]["fake"]) >= {"requests_per_s", "p99_ms", "queue_depth"}
    assert app.state.stats._task is None  # stopped with the lifespan


async def test_with_a_token_the_page_loads_and_its_data_needs_the_token() -> None:
    app = create_app(Settings(auth_token="s3cret"), configs=[fake_config()])
    async with app_client(app) as client:
        for path in ("/", "/status", *ASSETS):
            assert (await client.get(path)).status_code == 200, path
        for path in ("/v1/status", "/v1/models", "/ui/../v1/models", "/docs"):
            assert (await client.get(path)).status_code in (401, 404), path
        assert (await client.get("/v1/status")).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/v1/status", headers=good)).status_code == 200


async def test_ui_off_serves_the_api_only() -> None:
    app = create_app(Settings(ui=False), configs=[fake_config()])
    async with app_client(app) as client:
        for path in ("/", "/status", "/v1/status", *ASSETS):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/v1/models")).status_code == 200
    assert not hasattr(app.state, "stats")
