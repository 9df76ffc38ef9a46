"""The JSON log of a real server (RESNET_SERVE_LOG_FORMAT=json): one JSON object a line,
one access line per request with its ID (HTTP and gRPC, errors included: a 400, a 401, a
503), phases that add up to the total, and never the token, an image's bytes, or a hostile
request ID."""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image, PngImagePlugin

from tests.fakes import PLUGIN, write_fake_model

pytestmark = pytest.mark.e2e

TOKEN = "planted-token-1f6e9c2b"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKER = "IMAGEBYTESMARKER7Q3"  # inside the image files: must never reach the log
PHASES = ("read_ms", "decode_ms", "queue_ms", "infer_ms", "post_ms", "send_ms")


def marked_png(value: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", MARKER * 4)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (value, value, value)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def test_the_json_log(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    write_fake_model(repo, "broken", options={"fail_on": [7]})  # grey 7 fails its batch
    write_fake_model(
        repo,
        "slow",
        options={"delay_s": 1.0},
        batching={"max_batch_size": 1, "max_queue_size": 1, "instances": 1},
    )
    server = start_server(
        repo,
        env={
            "RESNET_SERVE_BACKEND_PLUGINS": PLUGIN,
            "RESNET_SERVE_AUTH_TOKEN": TOKEN,
            "RESNET_SERVE_LOG_FORMAT": "json",
        },
    )
    url = server.url
    png = marked_png(7)
    hostile = "h" * 300
    sent: dict[str, int] = {}  # request id -> the status it got

    def post(path: str, request_id: str, **kwargs: object) -> httpx.Response:
        headers = {**AUTH, "X-Request-ID": request_id, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        r = httpx.post(f"{url}{path}", headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]
        assert r.headers["x-request-id"] == request_id
        sent[request_id] = r.status_code
        return r

    raw = {"Content-Type": "image/png"}
    assert post("/v1/models/fake/classify", "ok-raw", content=png, headers=raw).status_code == 200
    as_json = {"images": [base64.b64encode(png).decode()]}
    assert post("/v1/models/fake/classify", "ok-json", json=as_json).status_code == 200
    files = [("images", ("a.png", png, "image/png")), ("images", ("b.png", png, "image/png"))]
    assert post("/v1/models/fake/classify", "ok-multi", files=files).status_code == 200
    r = post("/v1/models/broken/classify", "fail-500", content=png, headers=raw)
    assert r.status_code == 500
    bad = b"GIF89a" + MARKER.encode() * 8  # looks like a GIF, is not one
    assert post("/v1/models/fake/classify", "bad-400", content=bad, headers=raw).status_code == 400
    v2 = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(png).decode()],
            }
        ]
    }
    r = post("/v2/models/fake/infer", "ok-v2", json=v2)
    assert r.status_code == 200 and r.json()["id"] == "ok-v2"
    # the token as a request ID: a client may do that; the log must not show it
    assert post("/v1/models/fake/classify", TOKEN, content=png, headers=raw).status_code == 200
    r = httpx.get(f"{url}/v2/models/fake", headers={"Authorization": f"Bearer {MARKER}"})
    assert r.status_code == 401
    denied_id = r.headers["x-request-id"]
    r = httpx.post(
        f"{url}/v1/models/fake/classify",
        content=png,
        headers={**AUTH, **raw, "X-Request-ID": hostile},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["x-request-id"] != hostile
    replaced_id = r.headers["x-request-id"]
    # one runs, one waits in the queue of one, the third is refused: 503
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(post, "/v1/models/slow/classify", "slow-1", content=png, headers=raw)
        time.sleep(0.3)
        queued = pool.submit(post, "/v1/models/slow/classify", "slow-2", content=png, headers=raw)
        time.sleep(0.3)
        refused = post("/v1/models/slow/classify", "slow-503", content=png, headers=raw)
        assert refused.status_code == 503 and "queue" in refused.json()["error"]
        assert running.result().status_code == 200 and queued.result().status_code == 200
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    inp = grpcclient.InferInput("images", [1, 224, 224, 3], "UINT8")
    inp.set_data_from_numpy(np.full((1, 224, 224, 3), 3, np.uint8))
    client.infer(
        "fake", [inp], headers={"authorization": AUTH["Authorization"], "x-request-id": "grpc-1"}
    )
    client.close()
    assert server.stop() == 0

    text = server.log()
    assert TOKEN not in text and MARKER not in text and hostile not in text
    assert base64.b64encode(png).decode()[40:80] not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]  # replaced
    assert any(line["logger"] == "uvicorn.error" for line in lines)  # uvicorn's own, as JSON
    access = [line for line in lines if line["logger"] == "resnet_serve.access"]
    ids = [line["request_id"] for line in access]
    assert len(ids) == len(set(ids)), "one access line per request"
    by_id = {line["request_id"]: line for line in access}
    sent.pop(TOKEN)
    for request_id, status in sent.items():
        assert by_id[request_id]["status"] == status, request_id
    assert by_id["[redacted]"]["status"] == 200  # the request whose ID was the token
    assert by_id[denied_id]["status"] == 401 and by_id[replaced_id]["status"] == 200

    for line in access:  # the phases tile the request
        assert abs(sum(line[p] for p in PHASES) - line["total_ms"]) <= 1.0, line
        assert min(line[p] for p in PHASES) >= 0, line

    ok = by_id["ok-raw"]
    assert ok["route"] == "/v1/models/{name}/classify" and ok["protocol"] == "http"
    assert (ok["model"], ok["version"], ok["images"]) == ("fake", "1", 1)
    assert ok["bytes_in"] == len(png) and ok["bytes_out"] > 0 and ok["decode_ms"] > 0
    assert by_id["ok-multi"]["images"] == 2
    assert by_id["ok-v2"]["route"] == "/v2/models/{name}/infer"
    (failed,) = [x for x in lines if x["logger"] == "app.batching" and x["level"] == "ERROR"]
    assert "(requests fail-500)" in failed["message"]  # the batch's log line names them
    assert by_id["fail-500"]["infer_ms"] > 0
    bad_line = by_id["bad-400"]
    assert bad_line["decode_ms"] > 0 and bad_line["infer_ms"] == 0
    assert by_id["slow-1"]["infer_ms"] >= 1000
    assert by_id["slow-2"]["queue_ms"] >= 300  # waited for slow-1's batch
    full = by_id["slow-503"]
    assert full["model"] == "slow" and full["infer_ms"] == 0
    g = by_id["grpc-1"]
    assert (g["protocol"], g["method"], g["status"], g["grpc_status"]) == (
        "grpc",
        "ModelInfer",
        200,
        "OK",
    )
    assert g["model"] == "fake" and g["images"] == 1 and g["bytes_in"] > 224 * 224 * 3
