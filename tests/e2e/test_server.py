"""A real `resnet-serve serve` process on 127.0.0.1, every backend side by side."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.scrape import sample

pytestmark = pytest.mark.e2e


def test_every_backend_gives_the_same_top5_for_real_jpegs(
    models_repo: Path, jpegs: list[bytes], start_server
) -> None:
    server = start_server(models_repo, ["--backends", "torchscript,eager"])
    names = ["resnet18", "resnet18-torchscript", "resnet18-eager"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert set(models) == set(names)
        assert models["resnet18"]["providers"] == ["CPUExecutionProvider"]
        assert models["resnet18-eager"]["backend"] == "eager"
        for data in jpegs:
            tops = []
            for name in names:
                r = client.post(
                    f"/v1/models/{name}/classify?top_k=5",
                    content=data,
                    headers={"Content-Type": "image/jpeg"},
                )
                assert r.status_code == 200, r.text
                tops.append([p["index"] for p in r.json()["predictions"][0]])
            assert tops[0] == tops[1] == tops[2]
        # several images in one multipart request come back in order
        files = [("images", (f"{i}.jpg", d, "image/jpeg")) for i, d in enumerate(jpegs[:3])]
        r = client.post("/v1/models/resnet18/classify?top_k=1", files=files)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3
        metrics = client.get("/metrics").text
        assert (
            'resnet_serve_requests_total{code="200",endpoint="classify",model="resnet18-eager"}'
            in metrics
        )
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_server_stays_up_and_not_ready_when_a_model_cannot_load(
    models_repo: Path, start_server
) -> None:
    (models_repo / "resnet18" / "model.onnx").write_bytes(b"this is not onnx")
    server = start_server(models_repo, wait=False)
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.get(f"{server.url}/health/ready", timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
    assert r.status_code == 503
    assert "load failed" in r.json()["models"]["resnet18"]["reason"]
    assert httpx.get(f"{server.url}/health/live").status_code == 200
    assert "model resnet18: load failed" in server.log()


def test_several_worker_processes_share_the_port_and_the_metrics(
    tmp_path: Path, start_server
) -> None:
    import os

    from tests.api.http.test_classify import grey_png
    from tests.fakes import PLUGIN, write_fake_model

    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    server = start_server(repo, ["--workers", "2"], env={"RESNET_SERVE_BACKEND_PLUGINS": PLUGIN})
    pids = set()
    with httpx.Client(
        base_url=server.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    ) as client:
        for i in range(40):
            r = client.post(
                "/v1/models/fake/classify?top_k=1",
                content=grey_png(i),
                headers={"Content-Type": "image/png"},
            )
            assert r.status_code == 200 and r.json()["predictions"][0][0]["index"] == i
        for _ in range(20):
            pids.add(client.get("/v1/models/fake").json()["worker_pid"])
        text = client.get("/metrics").text
    count = sample(
        text, "resnet_serve_requests_total", code="200", endpoint="classify", model="fake"
    )
    assert count == 40  # summed over both workers
    assert 'resnet_serve_model_ready{model="fake"} 1.0' in text
    assert len(pids) == 2 and os.getpid() not in pids
    assert server.stop() == 0
    assert "workers exited with [0, 0]" in server.log()
