"""Hostile and careless clients against a real server on 127.0.0.1 (app/connections.py):
oversized bodies still get their 413 read (lingering close), slow headers get 408, the
connection cap answers 503, and 600 slowloris + 600 idle connections under a soft descriptor
limit of 1,024 do not stop a well-behaved client."""

from __future__ import annotations

import base64
import json
import resource
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
import requests

from tests.conftest import ServerProcess
from tests.fakes import PLUGIN, write_fake_model

pytestmark = pytest.mark.e2e

LIMIT = 1_000_000  # body limit of these servers: bodies of 1.8 MB are over it, within the linger
BIG = 1_800_000


def png_bytes() -> bytes:
    from tests.api.http.test_classify import grey_png

    return grey_png(90)


@pytest.fixture()
def fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    return repo


def env(**extra: str) -> dict[str, str]:
    return {
        "RESNET_SERVE_BACKEND_PLUGINS": PLUGIN,
        "RESNET_SERVE_MAX_BODY_BYTES": str(LIMIT),
        "RESNET_SERVE_SHUTDOWN_GRACE_S": "0",
        **extra,
    }


def bodies() -> dict[str, tuple[str, dict[str, str], bytes]]:
    """route name -> (path, headers, body over the limit)."""
    raw = b"\xff\xd8" + b"\0" * BIG
    boundary = "xyzzy"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + raw
        + f"\r\n--{boundary}--\r\n".encode()
    )
    as_json = json.dumps({"images": [base64.b64encode(raw[: BIG * 3 // 4]).decode()]}).encode()
    v2 = json.dumps(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a" * BIG]}]}
    ).encode()
    return {
        "raw": ("/v1/models/fake/classify", {"Content-Type": "image/jpeg"}, raw),
        "multipart": (
            "/v1/models/fake/classify",
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
            multipart,
        ),
        "json": ("/v1/models/fake/classify", {"Content-Type": "application/json"}, as_json),
        "v2": ("/v2/models/fake/infer", {"Content-Type": "application/json"}, v2),
    }


def check_413(status: int, text: str | bytes) -> None:
    assert status == 413, text
    assert "limit" in json.loads(text)["error"]


def test_every_client_reads_the_413_of_an_oversized_body(fake_repo: Path, start_server) -> None:
    server: ServerProcess = start_server(fake_repo, env=env())
    for name, (path, headers, body) in bodies().items():
        url = server.url + path
        # urllib sends the whole body (and Connection: close) before it reads anything
        req = urllib.request.Request(url, data=body, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(req, timeout=30)
        check_413(caught.value.code, caught.value.read())
        r = requests.post(url, data=body, headers=headers, timeout=30)
        check_413(r.status_code, r.content)
        r2 = httpx.post(url, content=body, headers=headers, timeout=30)
        check_413(r2.status_code, r2.content)
        # chunked: no Content-Length, the limit is passed mid-stream
        chunks = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
        r3 = requests.post(url, data=chunks, headers=headers, timeout=30)
        check_413(r3.status_code, r3.content)
        for expect in ("Expect: 100-continue", "Expect:"):  # curl, with and without
            out = subprocess.run(
                ["curl", "-sS", "-H", expect, "--data-binary", "@-", "-w", "\n%{http_code}"]
                + [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
                + [url],
                input=body,
                capture_output=True,
                timeout=30,
            )
            text, _, code = out.stdout.rpartition(b"\n")
            assert out.returncode == 0, (name, expect, out.stderr)
            check_413(int(code), text)
    assert httpx.get(server.url + "/health/live").status_code == 200
    assert "Traceback" not in server.log()


def test_slow_headers_get_408_and_the_connection_cap_answers_503(
    fake_repo: Path, start_server
) -> None:
    server: ServerProcess = start_server(
        fake_repo,
        env=env(
            RESNET_SERVE_HEADER_TIMEOUT_S="1",
            RESNET_SERVE_BODY_TIMEOUT_S="1",
            RESNET_SERVE_MAX_CONNECTIONS="8",
        ),
    )
    # a body that stalls: 408 once nothing came for the body timeout; the app sees a disconnect
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(
        b"POST /v1/models/fake/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 1000\r\n\r\n" + png_bytes()[:100]
    )
    s.settimeout(5)
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"body stalled" in answer
    s.close()
    # headers trickled: 408 once the header timeout passes, then closed
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
    s.settimeout(5)
    started = time.monotonic()
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    assert 0.8 < time.monotonic() - started < 4
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"headers not received" in answer
    s.close()
    # at the cap: held connections, then a client that is refused at once, and told so
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(8)]
    try:
        time.sleep(0.2)
        r = httpx.get(server.url + "/health/live", timeout=5)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
        assert "connection cap" in r.json()["error"]
    finally:
        for h in held:
            h.close()
    time.sleep(0.3)
    metrics = httpx.get(server.url + "/metrics").text
    assert "resnet_serve_connections_rejected_total 1.0" in metrics
    assert "resnet_serve_open_connections 1.0" in metrics  # this request's own
    assert "connection cap of 8 reached" in server.log()


def test_slowloris_and_idle_connections_do_not_stop_a_good_client(
    fake_repo: Path, tmp_path: Path
) -> None:
    """600 slowloris + 600 idle connections, the server started with a soft limit of 1,024
    descriptors (hard limit higher: it must raise its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"hard descriptor limit {hard} leaves no room to test raising 1,024")
    if soft < 1400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))  # for our clients

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    server = ServerProcess(
        fake_repo, env=env(RESNET_SERVE_HEADER_TIMEOUT_S="30"), preexec_fn=low_limit
    )
    try:
        server.wait_ready()
        assert "soft limit raised from 1024" in server.log()
        conns: list[socket.socket] = []
        for i in range(1200):
            c = socket.create_connection(("127.0.0.1", server.port))
            if i % 2 == 0:
                c.sendall(b"POST /v1/models/fake/classify HTTP/1.1\r\nHost: x\r\n")
            conns.append(c)
        stop = threading.Event()

        def trickle() -> None:  # slowloris: a header byte now and then on every other one
            while not stop.is_set():
                for c in conns[::2]:
                    try:
                        c.send(b"X")
                    except OSError:
                        pass
                stop.wait(1.0)

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        image = png_bytes()
        slowest = 0.0
        deadline = time.monotonic() + 15
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while time.monotonic() < deadline:
                started = time.monotonic()
                r = client.post(
                    "/v1/models/fake/classify",
                    content=image,
                    headers={"Content-Type": "image/png"},
                )
                slowest = max(slowest, time.monotonic() - started)
                assert r.status_code == 200, r.text
                time.sleep(0.1)
            metrics = client.get("/metrics").text
        stop.set()
        t.join()
        assert slowest < 2.0, f"a good request took {slowest:.2f} s"
        assert "resnet_serve_open_connections 120" in metrics  # 1,200 held (and our own)
        for c in conns:
            c.close()
        assert httpx.get(server.url + "/health/live", timeout=5).status_code == 200
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_with_two_workers_a_killed_worker_loses_only_its_requests(
    fake_repo: Path, start_server
) -> None:
    """kill -9 of one of two workers under load from 8 clients: only requests in flight on it
    fail, a replacement serves, and the connection metrics are summed over the workers."""
    import os
    import signal

    server: ServerProcess = start_server(fake_repo, ["--workers", "2"], env=env())
    image = png_bytes()
    ok, failed = [0], [0]
    pids: set[int] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post(
                        "/v1/models/fake/classify",
                        content=image,
                        headers={"Content-Type": "image/png"},
                    )
                    good = r.status_code == 200
                except httpx.HTTPError:
                    good = False
                with lock:
                    ok[0] += good
                    failed[0] += not good

    def worker_pids() -> set[int]:
        seen = set()
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection: either worker
        with httpx.Client(base_url=server.url, timeout=10, limits=fresh) as c:
            for _ in range(30):
                seen.add(c.get("/v1/models/fake").json()["worker_pid"])
        return seen

    pids = worker_pids()
    assert len(pids) == 2
    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(2)
    victim = sorted(pids)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = worker_pids()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no replacement worker: {now}")
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join(15)
    assert ok[0] > 100, (ok, failed)
    assert failed[0] <= 16, f"{failed[0]} of {ok[0] + failed[0]} requests lost (8 clients)"
    text = httpx.get(server.url + "/metrics").text
    assert "resnet_serve_open_connections 1.0" in text  # the dead worker's gauge is gone
    assert server.stop() == 0
