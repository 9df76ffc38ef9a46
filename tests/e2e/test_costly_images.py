"""Fair decoding on a real server: while 4 clients post a flat 36 Mpx PNG in a loop, a client
posting 500x375 JPEGs keeps its p99 within 3x its unloaded p99, or the PNGs are refused.

Both outcomes are exercised: with the default limits the PNG is over max_full_decode_pixels
(413 from its header, nothing decoded); with that limit lifted the PNGs are decoded, but only
in the costly slots (half the decode threads), and those that find the costly line full get
503 + Retry-After at once. The p99s are measured in the same test, unloaded then loaded, on
a machine shared with other work: the bound allows 3x plus 50 ms of scheduling noise."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import costly_images
from tests.conftest import encode, synthetic_photo
from tests.fakes import PLUGIN, write_fake_model
from tests.scrape import scraped

pytestmark = pytest.mark.e2e

FLOODERS = 4


@pytest.fixture(scope="module")
def flat_png() -> bytes:
    return costly_images.flat_png()  # 36 Mpx, ~0.12 MB


def cheap_p99(client: httpx.Client, jpeg: bytes, seconds: float, at_least: int) -> float:
    times: list[float] = []
    deadline = time.monotonic() + seconds
    cutoff = deadline + 2 * seconds  # bounded even when the cheap requests are starved
    while (time.monotonic() < deadline or len(times) < at_least) and time.monotonic() < cutoff:
        started = time.perf_counter()
        r = client.post(
            "/v1/models/fake/classify", content=jpeg, headers={"Content-Type": "image/jpeg"}
        )
        times.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
        if len(times) >= 4 * at_least:
            break
    return float(np.percentile(times, 99))


def flood_and_measure(
    url: str, png: bytes, content_type: str = "image/png"
) -> tuple[float, float, dict[int, int]]:
    jpeg = encode(synthetic_photo(5, (500, 375)), quality=90)
    codes: dict[int, int] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def flooder() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                r = c.post(
                    "/v1/models/fake/classify", content=png, headers={"Content-Type": content_type}
                )
                if r.status_code == 503:
                    assert r.headers["retry-after"]
                with lock:
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1

    with httpx.Client(base_url=url, timeout=30) as client:
        cheap_p99(client, jpeg, 1.0, 20)  # warm up
        unloaded = cheap_p99(client, jpeg, 4.0, 100)
        threads = [threading.Thread(target=flooder, daemon=True) for _ in range(FLOODERS)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        loaded = cheap_p99(client, jpeg, 8.0, 100)
        stop.set()
        for t in threads:
            t.join(60)
    return unloaded, loaded, codes


def test_costly_pngs_are_refused_or_cannot_starve_cheap_jpegs(
    tmp_path: Path, start_server, flat_png: bytes
) -> None:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    env = {
        "RESNET_SERVE_BACKEND_PLUGINS": PLUGIN,
        "RESNET_SERVE_DECODE_THREADS": "2",
        "RESNET_SERVE_SHUTDOWN_GRACE_S": "0",
    }
    # defaults: the 36 Mpx PNG is over the full-decode pixel limit, refused from its header
    server = start_server(repo, env=env)
    unloaded, loaded, codes = flood_and_measure(server.url, flat_png)
    print(f"refused: unloaded p99 {unloaded * 1000:.1f} ms, loaded {loaded * 1000:.1f} ms, {codes}")
    assert set(codes) == {413}, codes
    assert loaded <= 3 * unloaded + 0.05, (unloaded, loaded)
    server.stop()

    # limit lifted: the PNGs are decoded, in the costly slots only; the rest wait or get 503
    lifted = {
        "RESNET_SERVE_MAX_FULL_DECODE_PIXELS": "40000000",
        "RESNET_SERVE_DECODE_COSTLY_QUEUE": "1",
    }
    server = start_server(repo, env={**env, **lifted})  # 1 costly slot, 1 waiting: 2 get 503
    unloaded, loaded, codes = flood_and_measure(server.url, flat_png)
    print(f"decoded: unloaded p99 {unloaded * 1000:.1f} ms, loaded {loaded * 1000:.1f} ms, {codes}")
    assert codes.get(200, 0) >= 1 and codes.get(503, 0) >= 1, codes
    assert set(codes) <= {200, 503}, codes
    # counted like a full inference queue's 503s, with their own reason
    refused = scraped(server.url, "resnet_serve_rejected_total", reason="costly_queue_full")
    assert refused == codes[503], (refused, codes)
    assert loaded <= 3 * unloaded + 0.05, (unloaded, loaded, codes)
    assert "Traceback" not in server.log()


def one_decode_thread_server(tmp_path: Path, start_server):
    """The fake model served with the one decode thread the budget gives 2 cores."""
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    env = {
        "RESNET_SERVE_BACKEND_PLUGINS": PLUGIN,
        "RESNET_SERVE_DECODE_THREADS": "1",
        "RESNET_SERVE_SHUTDOWN_GRACE_S": "0",
    }
    return start_server(repo, env=env)


def test_with_one_decode_thread_costly_images_cannot_starve_cheap_jpegs(
    tmp_path: Path, start_server
) -> None:
    """One decode thread is the thread budget's default on 2 cores (max(1, cores // 4)), where
    half the decode threads rounds to none: a flat 16 Mpx WebP (30 KB, accepted by the default
    limits, costly) must then not take the only thread the cheap JPEGs have.

    The bound is 3x + 100 ms rather than the issue's 3x + 50 ms: here the costly decodes keep
    one of the 2 cores busy for the whole step (at nice +10), so everything else (the server's
    loop, the cheap decodes, this client and its 4 flooders) shares the other, and a clean CI
    run measured 77 ms against a 5 ms unloaded p99. The old sharing, where the costly images
    took the only decode thread, measured 84-94 ms on a quiet machine (287 ms under load):
    this bound guards against worse starvation; the ordering test below is the one that fails
    on the old sharing every time."""
    server = one_decode_thread_server(tmp_path, start_server)
    webp = costly_images.flat_image("WEBP", 16 / 36)  # 16 Mpx, under the full-decode limit
    unloaded, loaded, codes = flood_and_measure(server.url, webp, "image/webp")
    print(
        f"1 thread: unloaded p99 {unloaded * 1000:.1f} ms, loaded {loaded * 1000:.1f} ms, {codes}"
    )
    assert codes.get(200, 0) >= 1 and set(codes) <= {200, 503}, codes
    assert loaded <= 3 * unloaded + 0.1, (unloaded, loaded, codes)
    assert "Traceback" not in server.log()


def test_with_one_decode_thread_a_cheap_jpeg_does_not_wait_for_a_costly_decode(
    tmp_path: Path, start_server
) -> None:
    """The ordering behind the test above, free of timing bounds: with one decode thread, a
    cheap JPEG sent while a costly WebP is being decoded is answered before the WebP. When the
    costly image held the only decode thread, the JPEG waited for it and came second."""
    server = one_decode_thread_server(tmp_path, start_server)
    webp = costly_images.flat_image("WEBP", 16 / 36)
    jpeg = encode(synthetic_photo(5, (500, 375)), quality=90)
    path = "/v1/models/fake/classify"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for body, kind in ((webp, "image/webp"), (jpeg, "image/jpeg")):  # warm up both
            assert client.post(path, content=body, headers={"Content-Type": kind}).is_success
        started = time.perf_counter()
        client.post(path, content=webp, headers={"Content-Type": "image/webp"})
        costly_s = time.perf_counter() - started
    print(f"costly WebP alone: {costly_s * 1000:.0f} ms")
    assert costly_s > 0.03, "the WebP must decode for long enough to overlap a cheap request"

    order: list[str] = []
    lock = threading.Lock()

    def post(body: bytes, kind: str, name: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.post(path, content=body, headers={"Content-Type": kind})
        assert r.status_code == 200, r.text
        with lock:
            order.append(name)

    for _ in range(3):
        order.clear()
        costly = threading.Thread(target=post, args=(webp, "image/webp", "costly"))
        costly.start()
        time.sleep(costly_s / 4)  # the WebP is in its decode now
        post(jpeg, "image/jpeg", "cheap")
        costly.join(30)
        assert order == ["cheap", "costly"], order
    assert "Traceback" not in server.log()
