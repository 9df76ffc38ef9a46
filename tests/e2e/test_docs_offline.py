"""/docs (Swagger UI) and /redoc render in a real browser with no internet: Debian's chromium,
headless, against a real server process on 127.0.0.1, with every other host unresolvable. The
rendered DOM must list the classify operation, which only happens once the page's script has run
and fetched /openapi.json; with assets from a CDN the page stays blank. Takes ~10 s (two
browser starts). Skipped where chromium is missing (deploy/ci/install-test-tools.sh installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import running_server
from tests.fakes import PLUGIN, write_fake_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CLASSIFY = "/v1/models/{name}/classify"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One server for both tests: they only read its pages."""
    repo = tmp_path_factory.mktemp("docs") / "models"
    write_fake_model(repo, "fake")
    with running_server(repo, env={"RESNET_SERVE_BACKEND_PLUGINS": PLUGIN}) as server:
        yield server


def rendered(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran, in a browser that can reach 127.0.0.1 only."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # no internet
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def external_references(html: str) -> list[str]:
    """Every src/href of the page that leaves the server."""
    return re.findall(r"""(?:src|href)\s*=\s*["']?((?:https?:)?//[^"' >]+)""", html)


def test_pages_reference_only_the_server(server) -> None:
    for page in ("/docs", "/redoc"):
        r = httpx.get(server.url + page, timeout=10)
        assert r.status_code == 200
        assert external_references(r.text) == [], page
        assert "https://" not in r.text and "http://" not in r.text, page
        for asset in re.findall(r"""["'](/docs/static/[^"']+)["']""", r.text):
            got = httpx.get(server.url + asset, timeout=10)
            assert got.status_code == 200 and len(got.content) > 1000, asset
    assert httpx.get(server.url + "/docs/oauth2-redirect", timeout=10).status_code == 200


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_swagger_ui_and_redoc_render_offline(server, tmp_path: Path) -> None:
    swagger = rendered(server.url + "/docs", tmp_path / "profile-docs")
    blocks = re.findall(r'<div class="opblock opblock-(\w+)[^"]*" id="([^"]+)"', swagger)
    assert ("post", "operations-classify-classify_v1_models__name__classify_post") in blocks
    assert CLASSIFY in swagger and len(blocks) > 10

    redoc = rendered(server.url + "/redoc", tmp_path / "profile-redoc")
    assert 'id="operation/classify_v1_models__name__classify_post"' in redoc
    assert re.search(r'http-verb post">post</span><span[^>]*>' + re.escape(CLASSIFY), redoc)
