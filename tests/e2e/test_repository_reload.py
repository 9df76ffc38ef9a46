"""Reload without downtime against a real server process (model control 'explicit'), driven by
Triton's own HTTP client: swaps between two exports under load, memory over many swaps, a
failed load, unload with requests in flight."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.fakes import PLUGIN, write_fake_model
from tests.scrape import scraped
from tests.tiny_onnx import CROP, expected_logits, write_tiny_model

pytestmark = pytest.mark.e2e
EXPLICIT = {"RESNET_SERVE_MODEL_CONTROL": "explicit"}
SEEDS = {"A": 1, "B": 2}


def triton(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(
        url=server.url.removeprefix("http://"), network_timeout=60.0, concurrency=1
    )


def install(export: Path, folder: Path) -> None:
    """A new export written into the served folder (what `resnet-serve export` would do)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in export.iterdir():
        shutil.copy(f, folder / f.name)  # copy, not copy2: a new mtime


def images(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, CROP, CROP, 3), dtype=np.uint8)


def infer_body(x: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "logits"}],
    }


def which(x: np.ndarray, logits: np.ndarray) -> str:
    """The export that gave these logits: A, B or '?'."""
    for tag, seed in SEEDS.items():
        if np.allclose(logits, expected_logits(x, seed), atol=1e-3, rtol=1e-3):
            return tag
    return "?"


@pytest.fixture()
def exports(tmp_path: Path) -> dict[str, Path]:
    return {
        tag: write_tiny_model(tmp_path / f"export-{tag}" / "tiny", seed)
        for tag, seed in SEEDS.items()
    }


@pytest.mark.slow  # 10-20 s on a loaded 2-core machine
def test_five_swaps_under_load_lose_nothing_and_switch_at_the_load(
    tmp_path: Path, exports: dict[str, Path], start_server
) -> None:
    repo = tmp_path / "models"
    install(exports["A"], repo / "tiny")
    server = start_server(repo, env=EXPLICIT)
    client = triton(server)
    assert client.get_model_repository_index() == [
        {"name": "tiny", "version": "1", "state": "READY", "reason": ""}
    ]
    total, clients = 2000, 16
    results: list[tuple[float, float, int, str]] = []  # sent, received, status, model
    lock = threading.Lock()
    counter = iter(range(total))

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                x = images(i)
                sent = time.monotonic()
                r = http.post("/v2/models/tiny/infer", json=infer_body(x))
                got = time.monotonic()
                tag = "-"
                if r.status_code == 200:
                    out = r.json()["outputs"][0]
                    tag = which(x, np.array(out["data"], np.float32).reshape(out["shape"]))
                with lock:
                    results.append((sent, got, r.status_code, tag))

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    swaps: list[tuple[float, float, str]] = [(float("-inf"), float("-inf"), "A")]
    for k in range(1, 6):
        while len(results) < k * total // 7:  # spread the swaps over the run
            time.sleep(0.005)
        new = "B" if k % 2 else "A"
        install(exports[new], repo / "tiny")
        start = time.monotonic()
        client.load_model("tiny")
        swaps.append((start, time.monotonic(), new))
    for t in threads:
        t.join(120)
    client.close()
    assert len(results) == total
    bad = [r for r in results if r[2] != 200]
    assert not bad, bad[:5]
    assert {r[3] for r in results} <= {"A", "B"}, "an answer from neither export"
    # Export j serves at the earliest when its load was called (swaps[j][0]) and at the latest
    # for requests sent before the next load returned (queued requests finish on the old one).
    ends = [s[1] for s in swaps[1:]] + [float("inf")]
    wrong = []
    for sent, got, _, tag in results:
        possible = {
            swaps[j][2] for j in range(len(swaps)) if got >= swaps[j][0] and sent <= ends[j]
        }
        if tag not in possible:
            wrong.append((sent, got, tag, possible))
    assert not wrong, wrong[:5]
    after_last = [r for r in results if r[0] > swaps[-1][1]]
    assert after_last and {r[3] for r in after_last} == {"B"}
    assert sum(r[3] == "A" for r in results) > 100 and sum(r[3] == "B" for r in results) > 100
    assert "Traceback" not in server.log()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow  # 10-20 s on a loaded 2-core machine
def test_memory_after_twenty_swaps_stays_within_ten_percent_of_one(
    tmp_path: Path, exports: dict[str, Path], start_server
) -> None:
    repo = tmp_path / "models"
    install(exports["A"], repo / "tiny")
    server = start_server(repo, env=EXPLICIT)
    client = triton(server)
    x = images(7, 4)

    def swap(k: int) -> None:
        tag = "B" if k % 2 else "A"
        install(exports[tag], repo / "tiny")
        client.load_model("tiny")
        for _ in range(5):
            r = httpx.post(f"{server.url}/v2/models/tiny/infer", json=infer_body(x), timeout=30)
            out = r.json()["outputs"][0]
            assert which(x, np.array(out["data"], np.float32).reshape(out["shape"])) == tag

    swap(1)
    after_one = rss_kib(server.proc.pid)
    for k in range(2, 21):
        swap(k)
    after_twenty = rss_kib(server.proc.pid)
    client.close()
    assert after_twenty <= after_one * 1.10, (after_one, after_twenty)
    log = server.log()
    assert log.count("draining the previous instances") == 20


def test_a_failed_load_leaves_the_old_one_serving_and_says_why(
    tmp_path: Path, exports: dict[str, Path], start_server
) -> None:
    repo = tmp_path / "models"
    install(exports["A"], repo / "tiny")
    server = start_server(repo, env=EXPLICIT)
    client = triton(server)
    (repo / "tiny" / "config.json").write_text('{"name": "tiny", "num_classes": -3}')
    with pytest.raises(InferenceServerException) as err:
        client.load_model("tiny")
    assert "num_classes" in str(err.value) and "keeps serving" in str(err.value)
    (entry,) = client.get_model_repository_index()
    assert entry["state"] == "READY" and "num_classes" in entry["reason"]
    assert client.is_model_ready("tiny")
    x = images(3)
    r = httpx.post(f"{server.url}/v2/models/tiny/infer", json=infer_body(x), timeout=30)
    assert r.status_code == 200
    out = r.json()["outputs"][0]
    assert which(x, np.array(out["data"], np.float32).reshape(out["shape"])) == "A"
    # a model file that is not ONNX: the same
    install(exports["B"], repo / "tiny")
    (repo / "tiny" / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(InferenceServerException, match="load failed"):
        client.load_model("tiny")
    assert client.is_model_ready("tiny")
    client.close()
    assert "Traceback" not in server.log()


def test_unload_finishes_what_it_accepted_then_404(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    small = {"resize": CROP, "crop": CROP}
    write_fake_model(repo, "slow", options={"delay_s": 1.0}, input=small)
    server = start_server(repo, env={**EXPLICIT, "RESNET_SERVE_BACKEND_PLUGINS": PLUGIN})
    client = triton(server)
    statuses: list[int] = []

    def one(grey: int) -> None:
        x = np.full((1, CROP, CROP, 3), grey, np.uint8)
        r = httpx.post(f"{server.url}/v2/models/slow/infer", json=infer_body(x), timeout=30)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=one, args=(g,)) for g in (1, 2, 3)]
    for t in threads:
        t.start()
    while scraped(server.url, "resnet_serve_requests_in_flight", model="slow") < 3:
        time.sleep(0.01)
    time.sleep(0.2)  # past decoding: queued or running (each batch takes 1 s)
    client.unload_model("slow")
    for t in threads:
        t.join(30)
    assert statuses == [200, 200, 200]
    assert not client.is_model_ready("slow")
    r = httpx.post(
        f"{server.url}/v2/models/slow/infer",
        json=infer_body(np.zeros((1, CROP, CROP, 3), np.uint8)),
        timeout=30,
    )
    assert r.status_code == 404
    assert client.get_model_repository_index() == [
        {"name": "slow", "state": "UNAVAILABLE", "reason": "unloaded"}
    ]
    client.load_model("slow")
    assert client.is_model_ready("slow")
    client.close()
