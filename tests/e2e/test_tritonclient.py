"""Triton's own HTTP client (tritonclient[http] from PyPI) against a real resnet-serve process
serving the resnet18 export: metadata, JSON and binary infer, classification, statistics, and
the same answers as /v1 classify for the same image."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from app.config import read_model_config
from app.postprocess import top_k_indices
from app.preprocess import decode

pytestmark = pytest.mark.e2e
MODEL = "resnet18"


@pytest.fixture()
def server(resnet18_server):
    """The session's shared resnet18 server: these tests read from it and count nothing."""
    return resnet18_server


@pytest.fixture()
def models_repo(server) -> Path:
    return Path(server.models)


def http_client(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(
        url=server.url.removeprefix("http://"), network_timeout=60.0
    )


@pytest.fixture()
def client(server):
    c = http_client(server)
    yield c
    c.close()


def classify_v1(server, image: bytes, k: int) -> list[dict]:
    r = httpx.post(
        f"{server.url}/v1/models/{MODEL}/classify?top_k={k}",
        content=image,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def parse_classes(values: np.ndarray) -> list[tuple[float, int, str]]:
    out = []
    for element in values.ravel():
        text = element.decode() if isinstance(element, bytes) else element  # JSON gives str
        score, index, label = text.split(":", 2)
        out.append((float(score), int(index), label))
    return out


def test_metadata_and_config(client, models_repo: Path) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "2")
    server = client.get_server_metadata()
    assert {"binary_tensor_data", "classification", "statistics"} <= set(server["extensions"])
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"][0] == {"name": "images", "datatype": "UINT8", "shape": [-1, 224, 224, 3]}
    assert meta["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}
    config = client.get_model_config(MODEL)
    cfg = read_model_config(models_repo / MODEL)
    assert config["max_batch_size"] == cfg.batching.max_batch_size
    assert config["input"][0]["dims"] == [224, 224, 3]
    with pytest.raises(InferenceServerException, match="no model named"):
        client.get_model_metadata("nope")


def test_json_binary_and_file_inputs_agree_with_classify(
    client, server, models_repo: Path, photo_jpeg: bytes
) -> None:
    cfg = read_model_config(models_repo / MODEL)
    pixels = decode(photo_jpeg, cfg.input, 10**8)[None]  # what /v1 classify feeds the model
    want = classify_v1(server, photo_jpeg, 5)

    results = {}
    for binary in (False, True):
        inp = httpclient.InferInput("images", list(pixels.shape), "UINT8")
        inp.set_data_from_numpy(pixels, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("logits", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=5),
        ]
        res = client.infer(
            MODEL,
            [inp],
            outputs=outputs,
            request_id=f"req-{binary}",
            request_compression_algorithm="gzip" if binary else None,
        )
        assert res.get_response()["id"] == f"req-{binary}"
        results[binary] = res

    files = httpclient.InferInput("image_bytes", [1, 1], "BYTES")
    files.set_data_from_numpy(np.array([[photo_jpeg]], dtype=object), binary_data=True)
    res_files = client.infer(
        MODEL,
        [files],
        model_version="1",
        outputs=[httpclient.InferRequestedOutput("probabilities", class_count=5)],
    )

    logits_json = results[False].as_numpy("logits")
    logits_bin = results[True].as_numpy("logits")
    assert logits_json.shape == (1, 1000) and logits_bin.dtype == np.float32
    np.testing.assert_array_equal(logits_json, logits_bin)
    assert [p["index"] for p in want] == top_k_indices(logits_bin, 5)[0].tolist()

    expected = [(p["probability"], p["index"], p["label"]) for p in want]
    for res in (results[False], results[True], res_files):
        got = parse_classes(res.as_numpy("probabilities"))
        assert [g[1:] for g in got] == [e[1:] for e in expected]
        assert [g[0] for g in got] == pytest.approx([e[0] for e in expected], rel=1e-5)
    # files are decoded exactly as /v1 classify decodes them: the very same scores
    assert parse_classes(res_files.as_numpy("probabilities")) == expected


def test_errors_reach_the_client(client) -> None:
    inp = httpclient.InferInput("images", [1, 3, 224, 224], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 3, 224, 224), np.uint8))
    with pytest.raises(InferenceServerException, match="NCHW") as info:
        client.infer(MODEL, [inp])
    assert info.value.status() == "400"
    good = httpclient.InferInput("images", [1, 224, 224, 3], "UINT8")
    good.set_data_from_numpy(np.zeros((1, 224, 224, 3), np.uint8))
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [good], model_version="7")
    assert info.value.status() == "404"


@pytest.fixture()
def fresh_client(models_repo: Path, start_server):
    """Its own server: the statistics asserted are those of these requests alone."""
    c = http_client(start_server(models_repo))
    yield c
    c.close()


def test_statistics(fresh_client) -> None:
    client = fresh_client
    batch = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    for _ in range(3):
        inp = httpclient.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        client.infer(MODEL, [inp])
    stats = client.get_inference_statistics(MODEL)
    (s,) = stats["model_stats"]
    assert s["name"] == MODEL and s["version"] == "1"
    assert s["inference_count"] == 6 and s["execution_count"] == 3
    inf = s["inference_stats"]
    assert inf["success"]["count"] == 3 and inf["fail"]["count"] == 0
    assert inf["compute_infer"]["count"] == 3 and inf["compute_infer"]["ns"] > 0
    assert inf["queue"]["count"] == 3
    assert [b["batch_size"] for b in s["batch_stats"]] == [2]
    assert MODEL in [m["name"] for m in client.get_inference_statistics()["model_stats"]]
