"""Faults, disconnects, logs and graceful shutdown against a real server process, with the
fault-injecting fake backend loaded as a plugin (RESNET_SERVE_BACKEND_PLUGINS)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.http.test_classify import grey_png
from tests.fakes import PLUGIN, write_fake_model
from tests.scrape import scraped

pytestmark = pytest.mark.e2e
PNG = {"Content-Type": "image/png"}
ENV = {"RESNET_SERVE_BACKEND_PLUGINS": PLUGIN}


def post(client: httpx.Client, model: str, grey: int) -> httpx.Response:
    return client.post(f"/v1/models/{model}/classify?top_k=1", content=grey_png(grey), headers=PNG)


def test_backend_faults_fail_only_their_batch(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    write_fake_model(
        repo,
        "faulty",
        options={"fail_on": [13], "oom_on": [15], "hang_on": [14], "hang_s": 3.0},
        batching={"max_batch_size": 1, "instances": 2, "infer_timeout_s": 0.5},
    )
    server = start_server(repo, env=ENV)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = post(client, "faulty", 13)
        assert r.status_code == 500 and "injected backend failure" in r.json()["error"]
        r = post(client, "faulty", 15)
        assert r.status_code == 500 and "MemoryError" in r.json()["error"]
        started = time.monotonic()
        r = post(client, "faulty", 14)
        assert r.status_code == 500 and "did not finish" in r.json()["error"]
        assert time.monotonic() - started < 2.5  # answered at the timeout, not after the hang
        # the other instance still serves while one is stuck, and the model stays ready
        ok = post(client, "faulty", 100)
        assert ok.status_code == 200 and ok.json()["predictions"][0][0]["index"] == 100
        assert client.get("/health/ready").status_code == 200
        assert scraped(server.url, "resnet_serve_inference_failures_total", model="faulty") == 3
        # both instances stuck: not ready, then it recovers by itself
        threads = [threading.Thread(target=post, args=(client, "faulty", 14)) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert client.get("/health/ready").status_code == 503
        r = post(client, "faulty", 100)
        assert r.status_code == 503 and "outlived" in r.json()["error"]
        for t in threads:
            t.join()
        deadline = time.monotonic() + 10
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "model did not recover"
            time.sleep(0.2)
        assert post(client, "faulty", 7).status_code == 200
    assert server.stop() == 0


def test_client_that_disconnects_costs_no_inference(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    # one instance, busy with the blocker (the thread budget would give 2 on 2 cores)
    write_fake_model(
        repo, "slow", options={"delay_s": 1.0}, batching={"max_batch_size": 1, "instances": 1}
    )
    server = start_server(repo, env=ENV)
    body = grey_png(50)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        blocker = threading.Thread(target=post, args=(client, "slow", 1))
        blocker.start()
        time.sleep(0.3)  # the instance is busy with the blocker now
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            b"POST /v1/models/slow/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)  # queued behind the blocker
        sock.close()
        blocker.join()
        time.sleep(1.5)  # long enough for the abandoned request to have run, had it been run
        assert scraped(server.url, "resnet_serve_images_total", model="slow") == 1
        assert (
            scraped(
                server.url,
                "resnet_serve_requests_total",
                code="499",
                endpoint="classify",
                model="slow",
            )
            == 1
        )


def test_logs_never_hold_request_bodies(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    server = start_server(repo, env=ENV, args=["--log-level", "debug"])
    marker = b"SECRET-BODY-MARKER-7f3a"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.post("/v1/models/fake/classify", content=marker * 10, headers=PNG)
        client.post("/v1/models/fake/classify", json={"images": [marker.decode()]})
        client.post("/v1/models/fake/classify", files=[("a", ("a.png", marker, "image/png"))])
    server.stop()
    assert marker.decode() not in server.log()


def test_sigterm_drains_under_load_and_loses_nothing(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake", options={"delay_s": 0.02}, batching={"max_batch_size": 4})
    server = start_server(repo, env={**ENV, "RESNET_SERVE_SHUTDOWN_GRACE_S": "1.5"})
    results: list[tuple[float, object]] = []
    lock = threading.Lock()
    sigterm_at: list[float] = []

    def client_loop(seed: int) -> None:
        # A new connection per request. Once the listener closes, a connect is refused, or a
        # connection still in the kernel's accept backlog (never accepted by the server) is
        # reset: both only after the grace period. Every request the server accepted must be
        # answered 200.
        with httpx.Client(
            base_url=server.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        ) as client:
            for i in range(10_000):
                sent = time.monotonic()
                try:
                    r = post(client, "fake", (seed * 31 + i) % 256)
                    outcome: object = r.status_code
                except httpx.ConnectError:
                    outcome = "refused"
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    outcome = f"reset: {exc}"
                except Exception as exc:
                    outcome = f"error: {type(exc).__name__}: {exc}"
                with lock:
                    results.append((sent, outcome))
                if outcome != 200:
                    return

    threads = [threading.Thread(target=client_loop, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    sigterm_at.append(time.monotonic())
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(f"{server.url}/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    for t in threads:
        t.join(60)
    assert server.proc.wait(30) == 0
    grace_end = sigterm_at[0] + 1.5
    answered = [o for _, o in results if isinstance(o, int)]
    assert answered and all(o == 200 for o in answered), sorted(set(map(str, answered)))
    errors = [str(o) for _, o in results if str(o).startswith("error")]
    assert not errors, errors
    during_grace = [o for s, o in results if sigterm_at[0] < s < grace_end - 0.3]
    assert during_grace and all(o == 200 for o in during_grace)  # still accepting in the grace
    not_served_early = [
        (s - sigterm_at[0], o) for s, o in results if o != 200 and s < grace_end - 0.1
    ]
    assert not not_served_early, not_served_early
    assert "Traceback" not in server.log()
