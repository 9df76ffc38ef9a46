"""The web page (GET / and GET /status) and its live statistics (GET /v1/status).

The page is plain HTML, CSS and JavaScript from app/api/http/static/, served by the app itself
(no CDN, no build step). It holds no data, so it and its files load without the token when
RESNET_SERVE_AUTH_TOKEN is set; every call it makes (/v1/models, classify, /v1/status) sends
`Authorization: Bearer <token>` like any client. /v1/status is computed by app/stats.py from
the server's own metrics. RESNET_SERVE_UI=false serves none of this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.stats import StatsSampler

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC = "/ui"  # the page's script, styles and icon
PAGES = ("/", "/status")  # one page; the path picks the tab
PUBLIC_PATHS = PAGES
PUBLIC_PREFIXES = (f"{STATIC}/",)

# The page runs only its own files and talks only to this server.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()


async def _page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


for _path in PAGES:
    router.add_api_route(_path, _page, methods=["GET"], include_in_schema=False)


@router.get("/v1/status", tags=["status"], summary="Live figures of the server (the status page)")
async def status(request: Request) -> dict[str, Any]:
    """Requests/s, images/s, errors/s, p50/p99 latency, queue depth, requests in flight and
    batch sizes, one point per sampling interval over the last minutes, per model and for
    all models (`"*"`), read from the server's own metrics (every worker's with --workers > 1,
    as /metrics)."""
    sampler: StatsSampler = request.app.state.stats  # set by install()
    return sampler.report()


def install(app: FastAPI) -> None:
    """Serve the page, its files and /v1/status; the lifespan starts app.state.stats."""
    app.state.stats = StatsSampler(app.state.metrics)
    app.mount(STATIC, StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.include_router(router)
