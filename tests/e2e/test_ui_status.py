"""GET /v1/status with several worker processes: every worker reports the figures of all of
them (read from prometheus-client's multiprocess files, as /metrics is), so the status page
shows the same server whichever worker answers its poll."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.api.http.test_classify import grey_png
from tests.fakes import PLUGIN, write_fake_model
from tests.scrape import sample

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_every_worker_reports_the_figures_of_all_workers(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    server = start_server(repo, ["--workers", "2"], env={"RESNET_SERVE_BACKEND_PLUGINS": PLUGIN})
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection: either worker
    with httpx.Client(base_url=server.url, timeout=30, limits=fresh) as client:
        # both workers up before the first request: a worker's window starts at its own
        # start, so one still loading while the other served would count fewer (seen: 13 of
        # 40). The shared socket may hand one worker a long run of connections: poll.
        served_by: set[int] = set()
        until = time.monotonic() + 30
        while len(served_by) < 2 and time.monotonic() < until:
            served_by.add(client.get("/v1/models/fake").json()["worker_pid"])
        assert len(served_by) == 2
        for i in range(40):
            r = client.post(
                "/v1/models/fake/classify",
                content=grey_png(i, 64),
                headers={"Content-Type": "image/png"},
            )
            assert r.status_code == 200
        requests = sample(
            client.get("/metrics").text,
            "resnet_serve_requests_total",
            code="200",
            endpoint="classify",
            model="fake",
        )
        assert requests == 40
        time.sleep(2.5)  # every worker samples again (every 2 s)
        pids: set[int] = set()
        seen: list[float] = []
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            report = client.get("/v1/status").json()
            pids.add(report["pid"])
            seen.append(report["window"]["*"]["requests"])
            assert report["source"] == "all workers"
        assert len(pids) == 2, "one worker answered every poll"
        assert seen == [40.0] * len(seen)  # each worker: both workers' requests
    assert server.stop() == 0
