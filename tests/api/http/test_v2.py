"""The V2 / Open Inference Protocol routes, in-process, over the fake backend."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.api.v2.codec import HEADER_LENGTH, encode_bytes
from app.config import Settings
from app.main import create_app
from app.metrics import Metrics
from tests.conftest import app_client
from tests.fakes import Behaviour, FakeBackend, expected_logits, fake_config

CROP = 224


def make_app(tmp_path: Path, *configs, **settings):
    return create_app(
        Settings(models_dir=tmp_path, **settings),
        configs=list(configs) or [fake_config()],
        metrics=Metrics(),
    )


def grey(*values: int) -> np.ndarray:
    return np.stack([np.full((CROP, CROP, 3), v, np.uint8) for v in values])


def pixels_json(batch: np.ndarray, nested: bool = False, **extra) -> dict:
    data = batch.tolist() if nested else batch.ravel().tolist()
    return {
        "inputs": [
            {"name": "images", "datatype": "UINT8", "shape": list(batch.shape), "data": data}
        ],
        **extra,
    }


def binary_body(header: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    return raw + b"".join(blobs), {
        HEADER_LENGTH: str(len(raw)),
        "Content-Type": "application/octet-stream",
    }


def read_binary(response: httpx.Response) -> tuple[dict, dict[str, bytes]]:
    """(header, output name -> its binary data) of a binary response."""
    n = int(response.headers[HEADER_LENGTH])
    header = json.loads(response.content[:n])
    blobs, offset = {}, n
    for out in header["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[out["name"]] = response.content[offset : offset + size]
            offset += size
    assert offset == len(response.content)
    return header, blobs


def split_bytes(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        (n,) = struct.unpack_from("<I", blob, pos)
        out.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def backend_batches(name: str = "fake") -> list[int]:
    return FakeBackend.behaviour.setdefault(name, Behaviour()).batches


# ------------------------------------------------------------------------------ metadata
async def test_health_server_and_model_metadata(tmp_path: Path) -> None:
    async with app_client(make_app(tmp_path)) as c:
        assert (await c.get("/v2/health/live")).json() == {"live": True}
        assert (await c.get("/v2/health/ready")).status_code == 200
        server = (await c.get("/v2")).json()
        assert set(server["extensions"]) >= {
            "binary_tensor_data",
            "classification",
            "statistics",
            "model_configuration",
        }
        meta = (await c.get("/v2/models/fake")).json()
        assert meta == (await c.get("/v2/models/fake/versions/1")).json()
        assert meta["name"] == "fake" and meta["versions"] == ["1"]
        assert meta["inputs"][0] == {
            "name": "images",
            "datatype": "UINT8",
            "shape": [-1, 224, 224, 3],
        }
        assert len(meta["inputs"]) == 1  # perf_analyzer sends every input declared
        (files,) = meta["parameters"]["alternative_inputs"]
        assert files["name"] == "image_bytes" and files["datatype"] == "BYTES"
        assert meta["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [-1, 256]}
        assert (await c.get("/v2/models/fake/ready")).status_code == 200
        assert (await c.get("/v2/models/fake/versions/1/ready")).status_code == 200


async def test_config_describes_inputs_outputs_and_batching_as_triton_does(tmp_path: Path) -> None:
    cfg = fake_config(batching={"max_batch_size": 16, "max_queue_size": 7, "instances": 2})
    async with app_client(make_app(tmp_path, cfg)) as c:
        config = (await c.get("/v2/models/fake/config")).json()
        assert config == (await c.get("/v2/models/fake/versions/1/config")).json()
    assert config["max_batch_size"] == 16
    assert config["input"][0]["name"] == "images"
    assert config["input"][0]["data_type"] == "TYPE_UINT8"
    assert config["input"][0]["dims"] == [224, 224, 3]
    assert config["input"][0]["format"] == "FORMAT_NHWC"
    assert (
        len(config["input"]) == 1
        and "image_bytes" in config["parameters"]["alternative_input"]["string_value"]
    )
    assert config["output"][0] == {
        "name": "logits",
        "data_type": "TYPE_FP32",
        "dims": [256],
        "label_filename": "",
        "is_shape_tensor": False,
    }
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 7
    assert config["instance_group"][0]["count"] == 2
    assert config["instance_group"][0]["kind"] == "KIND_CPU"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/nope/config",
        "/v2/models/nope/stats",
        "/v2/models/fake/versions/2",
        "/v2/models/fake/versions/2/ready",
        "/v2/models/fake/versions/2/config",
        "/v2/models/fake/versions/2/stats",
    ],
)
async def test_unknown_models_and_versions_are_404(tmp_path: Path, path: str) -> None:
    async with app_client(make_app(tmp_path)) as c:
        r = await c.get(path)
        assert r.status_code == 404 and "error" in r.json()
        r = await c.post(
            path.removesuffix("/ready").removesuffix("/config").removesuffix("/stats") + "/infer",
            json=pixels_json(grey(1)),
        )
        assert r.status_code == 404 and "error" in r.json()
    assert backend_batches() == []


async def test_a_model_that_failed_to_load_is_not_ready(tmp_path: Path) -> None:
    FakeBackend.behaviour["broken"] = Behaviour(fail_load=True)
    unknown = fake_config("unknown", backend="no-such-backend")  # fails in create_backend
    app = make_app(tmp_path, fake_config(), fake_config("broken"), unknown)
    async with app_client(app) as c:
        assert (await c.get("/v2/health/ready")).status_code == 503
        r = await c.get("/v2/models/broken/ready")
        assert r.status_code == 503 and "load failed" in r.json()["error"]
        r = await c.post("/v2/models/broken/infer", json=pixels_json(grey(1)))
        assert r.status_code == 503 and "error" in r.json()
        assert (await c.get("/v2/models/broken")).status_code == 200  # metadata is still there
        r = await c.get("/v2/models/unknown")
        assert r.status_code == 200 and r.json()["platform"] == "no-such-backend"
        r = await c.get("/v2/models/unknown/config")
        assert r.status_code == 200 and r.json()["default_model_filename"] == ""


# ------------------------------------------------------------------------------ inference
@pytest.mark.parametrize("nested", [False, True])
async def test_json_infer_returns_every_output_and_echoes_the_id(
    tmp_path: Path, nested: bool
) -> None:
    batch = grey(3, 200)
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post("/v2/models/fake/infer", json=pixels_json(batch, nested, id="abc"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "abc" and body["model_name"] == "fake" and body["model_version"] == "1"
    logits, probs = body["outputs"]
    assert (
        logits["name"] == "logits" and logits["shape"] == [2, 256] and logits["datatype"] == "FP32"
    )
    np.testing.assert_allclose(
        np.array(logits["data"]).reshape(2, 256), expected_logits(batch, 256)
    )
    p = np.array(probs["data"]).reshape(2, 256)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert p.argmax(axis=1).tolist() == [3, 200]
    assert backend_batches() == [2]


async def test_binary_infer_with_binary_outputs(tmp_path: Path) -> None:
    batch = grey(7, 9, 11)
    header = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": [3, 224, 224, 3],
                "parameters": {"binary_data_size": batch.nbytes},
            }
        ],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
    content, headers = binary_body(header, [batch.tobytes()])
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post("/v2/models/fake/versions/1/infer", content=content, headers=headers)
    assert r.status_code == 200, r.text
    out, blobs = read_binary(r)
    assert out["outputs"] == [
        {
            "name": "logits",
            "datatype": "FP32",
            "shape": [3, 256],
            "parameters": {"binary_data_size": 3 * 256 * 4},
        }
    ]
    logits = np.frombuffer(blobs["logits"], "<f4").reshape(3, 256)
    np.testing.assert_array_equal(logits, expected_logits(batch, 256))


async def test_gzip_request_body(tmp_path: Path) -> None:
    import gzip

    body = gzip.compress(json.dumps(pixels_json(grey(4))).encode())
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post(
            "/v2/models/fake/infer", content=body, headers={"Content-Encoding": "gzip"}
        )
        bad = await c.post(
            "/v2/models/fake/infer", content=b"junk", headers={"Content-Encoding": "gzip"}
        )
    assert r.status_code == 200 and np.argmax(r.json()["outputs"][1]["data"]) == 4
    assert bad.status_code == 400 and "gzip" in bad.json()["error"]


async def test_request_level_binary_data_output(tmp_path: Path) -> None:
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post(
            "/v2/models/fake/infer",
            json=pixels_json(grey(5), parameters={"binary_data_output": True}),
        )
    header, blobs = read_binary(r)
    assert set(blobs) == {"logits", "probabilities"}
    assert np.frombuffer(blobs["probabilities"], "<f4").argmax() == 5


async def test_classification_extension(tmp_path: Path) -> None:
    request = pixels_json(
        grey(10, 250),
        outputs=[
            {"name": "probabilities", "parameters": {"classification": 3}},
            {"name": "logits", "parameters": {"classification": 2, "binary_data": True}},
        ],
    )
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post("/v2/models/fake/infer", json=request)
    header, blobs = read_binary(r)
    probs, logits = header["outputs"]
    assert probs["datatype"] == "BYTES" and probs["shape"] == [2, 3]
    rows = [s.split(":") for s in probs["data"]]
    assert [(int(i), label) for _, i, label in rows] == [
        (10, "grey10"),
        (9, "grey9"),
        (11, "grey11"),
        (250, "grey250"),
        (249, "grey249"),
        (251, "grey251"),
    ]
    assert float(rows[0][0]) > float(rows[1][0]) > 0
    assert logits["shape"] == [2, 2]
    assert [e.decode() for e in split_bytes(blobs["logits"])] == [
        "-0.0:10:grey10",
        "-1.0:9:grey9",
        "-0.0:250:grey250",
        "-1.0:249:grey249",
    ]


async def test_image_bytes_equal_the_classify_api(tmp_path: Path, jpegs: list[bytes]) -> None:
    files = jpegs[:3]
    header = {
        "id": "files",
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [3, 1],
                "parameters": {"binary_data_size": len(encode_bytes(files))},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}],
    }
    content, headers = binary_body(header, [encode_bytes(files)])
    as_json = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [3],
                "data": [base64.b64encode(f).decode() for f in files],
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}],
    }
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post("/v2/models/fake/infer", content=content, headers=headers)
        r_json = await c.post("/v2/models/fake/infer", json=as_json)
        v1 = await c.post(
            "/v1/models/fake/classify?top_k=5",
            files=[("images", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(files)],
        )
    assert r.status_code == 200 and r_json.status_code == 200 and v1.status_code == 200, r.text
    assert r.json()["id"] == "files"
    assert r.json()["outputs"] == r_json.json()["outputs"]
    got = [s.split(":") for s in r.json()["outputs"][0]["data"]]
    want = [p for row in v1.json()["predictions"] for p in row]
    assert [(float(s), int(i), label) for s, i, label in got] == [
        (p["probability"], p["index"], p["label"]) for p in want
    ]


# ------------------------------------------------------------------------------ errors
def pixels(shape: list[int], datatype: str = "UINT8", name: str = "images") -> dict:
    n = int(np.prod(shape))
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": [0] * n}]}


BAD_JSON = [
    (b"{not json", "not valid JSON"),
    # the same nesting limit as /v1 classify's JSON (max_json_depth, 64 by default)
    (b'{"inputs": ' + b"[" * 70 + b"]" * 70 + b"}", "nested deeper than 64 levels"),
    (b"[]", "JSON object"),
    (
        json.dumps(
            {"inputs": [{"name": "images", "datatype": "UINT9", "shape": [1], "data": [0]}]}
        ).encode(),
        "unknown datatype",
    ),
    (
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "images",
                        "datatype": "UINT8",
                        "shape": [1, 224, 224, 3],
                        "data": [0] * 10,
                    }
                ]
            }
        ).encode(),
        "holds 150528 elements",
    ),
    (json.dumps(pixels([1, 3, 224, 224])).encode(), "NCHW"),
    (json.dumps(pixels([1, 224, 224])).encode(), "takes \\[N, 224, 224, 3\\]"),
    (json.dumps(pixels([0, 224, 224, 3])).encode(), "no image"),
    (json.dumps(pixels([1, 224, 224, 3], "FP32")).encode(), "UINT8 pixels"),
    (json.dumps(pixels([1, 224, 224, 3], name="input__0")).encode(), "not accepted"),
    (
        json.dumps({**pixels([1, 224, 224, 3]), "outputs": [{"name": "softmax"}]}).encode(),
        "unknown output",
    ),
    (json.dumps({**pixels([1, 224, 224, 3]), "parameters": {"timeout": 0}}).encode(), "timeout"),
    (
        json.dumps(
            {
                "inputs": [
                    {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}
                ]
            }
        ).encode(),
        "base64",
    ),
    (
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "image_bytes",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [base64.b64encode(b"not an image").decode()],
                    }
                ]
            }
        ).encode(),
        "not an image",
    ),
    (
        json.dumps(
            {
                "inputs": [
                    {"name": "image_bytes", "datatype": "BYTES", "shape": [1, 2], "data": ["", ""]}
                ]
            }
        ).encode(),
        "\\[N\\] or \\[N, 1\\]",
    ),
    (
        json.dumps(
            {"inputs": [{"name": "image_bytes", "datatype": "UINT8", "shape": [1], "data": [1]}]}
        ).encode(),
        "must be BYTES",
    ),
]


@pytest.mark.parametrize("body, message", BAD_JSON)
async def test_malformed_json_requests_are_400_and_never_reach_the_backend(
    tmp_path: Path, body: bytes, message: str
) -> None:
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post(
            "/v2/models/fake/infer", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, r.text
        assert list(r.json()) == ["error"]
        assert r.json()["error"] and __import__("re").search(message, r.json()["error"]), r.json()
        ok = await c.post("/v2/models/fake/infer", json=pixels_json(grey(1)))  # the worker lives on
        assert ok.status_code == 200
    assert backend_batches() == [1]


@pytest.mark.parametrize(
    "declared, length, extra, message",
    [
        (150528, None, b"", "not valid JSON"),  # no header length: the whole body is read as JSON
        (150528, "5", b"", "not valid JSON"),
        (150528, "999999999", b"", "Inference-Header-Content-Length"),
        (150527, "auto", b"\x00", "needs 150528 bytes"),
        (150528, "auto", b"\x00", "add up to 150528"),
        (150529, "auto", b"", "runs past the end"),
    ],
)
async def test_binary_sizes_that_do_not_add_up_are_400(
    tmp_path: Path, declared: int, length: str | None, extra: bytes, message: str
) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [1, 224, 224, 3],
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    ).encode()
    headers = {}
    if length is not None:
        headers[HEADER_LENGTH] = str(len(header)) if length == "auto" else length
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post(
            "/v2/models/fake/infer", content=header + grey(1).tobytes() + extra, headers=headers
        )
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert backend_batches() == []


async def test_full_queue_is_503_and_deadline_is_504(tmp_path: Path) -> None:
    FakeBackend.behaviour["fake"] = Behaviour(delay_s=0.3)
    cfg = fake_config(batching={"max_batch_size": 1, "max_queue_size": 1})
    async with app_client(make_app(tmp_path, cfg)) as c:
        results = await asyncio.gather(
            *(c.post("/v2/models/fake/infer", json=pixels_json(grey(i))) for i in range(4))
        )
        codes = sorted(r.status_code for r in results)
        assert codes[0] == 200 and 503 in codes, codes
        full = next(r for r in results if r.status_code == 503)
        assert "queue" in full.json()["error"] and full.headers["Retry-After"]

        r = await c.post(
            "/v2/models/fake/infer", json=pixels_json(grey(1), parameters={"timeout": 50_000})
        )
        assert r.status_code == 504 and "deadline" in r.json()["error"]


async def test_too_large_a_body_is_413(tmp_path: Path) -> None:
    async with app_client(make_app(tmp_path, max_body_bytes=1000)) as c:
        r = await c.post("/v2/models/fake/infer", json=pixels_json(grey(1)))
    assert r.status_code == 413 and "error" in r.json()


# ------------------------------------------------------------------------------ statistics
async def test_statistics_count_requests_batches_and_failures(tmp_path: Path) -> None:
    async with app_client(make_app(tmp_path, fake_config(), fake_config("other"))) as c:
        for batch in (grey(1), grey(1, 2), grey(3)):
            assert (
                await c.post("/v2/models/fake/infer", json=pixels_json(batch))
            ).status_code == 200
        assert (await c.post("/v2/models/fake/infer", content=b"{")).status_code == 400
        stats = (await c.get("/v2/models/fake/stats")).json()
        assert stats == (await c.get("/v2/models/fake/versions/1/stats")).json()
        everything = (await c.get("/v2/models/stats")).json()
        metrics = (await c.get("/metrics")).text
    (s,) = stats["model_stats"]
    assert s["name"] == "fake" and s["version"] == "1"
    assert s["inference_count"] == 4 and s["execution_count"] == 3
    inf = s["inference_stats"]
    assert inf["success"]["count"] == 3 and inf["fail"]["count"] == 1
    assert inf["success"]["ns"] > 0
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inf[key]["count"] == 3, key
    assert inf["compute_infer"]["ns"] > 0
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in s["batch_stats"]}
    assert sizes == {1: 2, 2: 1}
    assert [m["name"] for m in everything["model_stats"]] == ["fake", "other"]
    assert everything["model_stats"][0] == s | {
        "last_inference": everything["model_stats"][0]["last_inference"]
    }
    assert 'resnet_serve_requests_total{code="200",endpoint="v2_infer",model="fake"} 3.0' in metrics
    assert 'resnet_serve_requests_total{code="400",endpoint="v2_infer",model="fake"} 1.0' in metrics
    assert 'resnet_serve_images_total{model="fake"} 4.0' in metrics
