"""Triton's own gRPC client (tritonclient[grpc] from PyPI) against a real resnet-serve process:
KServe V2 over gRPC on the same DataPlane as HTTP. The resnet18 export answers metadata, raw and
typed-contents infer, image files, classification and statistics (the same logits as HTTP V2);
fake models (tests/fakes.py, instant to load) answer the errors, the token, the message limit,
the deadline, the queue limit and cancellation."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, running_server
from tests.fakes import PLUGIN, fake_config, write_fake_model

pytestmark = pytest.mark.e2e
MODEL = "resnet18"
TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def metric(url: str, name: str, labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    if match is None:  # a missing series is an error, never 0.0: "== 0" checks can fail
        raise LookupError(f"no series {name}{{{labels}}} in the metrics")
    return float(match.group(1))


def pixels_input(batch: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("images", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)  # raw_input_contents
    return inp


def code(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(info.value.status())


# ---------------------------------------------------------------------------- resnet18
@pytest.fixture()
def server(resnet18_server):
    """The session's shared resnet18 server, for the tests that count nothing on it."""
    return resnet18_server


@pytest.fixture()
def client(server):
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield c
    c.close()


@pytest.fixture()
def fresh_server(models_repo: Path, start_server):
    """Its own server: the statistics and metrics asserted are those of one test's calls."""
    return start_server(models_repo)


@pytest.fixture()
def fresh_client(fresh_server):
    c = grpcclient.InferenceServerClient(url=fresh_server.grpc_url)
    yield c
    c.close()


def test_metadata_config_and_health(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "2") and not client.is_model_ready("nope")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "resnet-serve"
    assert {"binary_tensor_data", "classification", "statistics"} <= set(meta["extensions"])
    model = client.get_model_metadata(MODEL, as_json=True)
    assert model["platform"] == "onnxruntime_onnx" and model["versions"] == ["1"]
    assert model["inputs"][0] == {
        "name": "images",
        "datatype": "UINT8",
        "shape": ["-1", "224", "224", "3"],  # int64 in protobuf JSON
    }
    assert [o["name"] for o in model["outputs"]] == ["logits", "probabilities"]
    config = client.get_model_config(MODEL, as_json=True)["config"]
    assert config["input"][0]["dims"] == ["224", "224", "3"]
    assert config["input"][0]["format"] == "FORMAT_NHWC"
    assert int(config["max_batch_size"]) >= 1 and "dynamic_batching" in config
    with pytest.raises(InferenceServerException, match="no model named") as info:
        client.get_model_metadata("nope")
    assert code(info) == "StatusCode.NOT_FOUND"
    # the repository extension: the index answers in every mode; load and unload need
    # RESNET_SERVE_MODEL_CONTROL=explicit (test_repository_over_grpc)
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": MODEL, "version": "1", "state": "READY"} in [
        {k: m.get(k) for k in ("name", "version", "state")} for m in index
    ]
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException, match="model control") as info:
            call(MODEL)
        assert code(info) == "StatusCode.PERMISSION_DENIED"
    assert client.is_model_ready(MODEL)


def test_repository_over_grpc(tmp_path: Path, start_server) -> None:
    """Triton's repository calls over gRPC reach the same ModelRepository as HTTP: unload drains
    and the name answers NOT_FOUND, load brings it back, names are folders, never paths."""
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    env = {"RESNET_SERVE_BACKEND_PLUGINS": PLUGIN, "RESNET_SERVE_MODEL_CONTROL": "explicit"}
    server = start_server(repo, env=env)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    batch = np.zeros((1, 224, 224, 3), np.uint8)
    assert client.infer("fake", [pixels_input(batch)]).as_numpy("logits").shape[0] == 1
    client.unload_model("fake")
    with pytest.raises(InferenceServerException) as info:
        client.infer("fake", [pixels_input(batch)])
    assert code(info) == "StatusCode.NOT_FOUND"
    states = {
        m["name"]: m.get("state") for m in client.get_model_repository_index(as_json=True)["models"]
    }
    assert states["fake"] == "UNAVAILABLE"
    client.load_model("fake")
    assert client.is_model_ready("fake")
    assert client.infer("fake", [pixels_input(batch)]).as_numpy("logits").shape[0] == 1
    for bad in ("../fake", "nope"):
        with pytest.raises(InferenceServerException) as info:
            client.load_model(bad)
        assert code(info) in ("StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND"), bad
    with pytest.raises(InferenceServerException, match="not supported") as info:
        client.load_model("fake", config='{"backend": "eager"}')
    assert code(info) == "StatusCode.INVALID_ARGUMENT"


def test_versions_over_grpc(tmp_path: Path, start_server) -> None:
    """A folder serving versions 1 and 2: every version answers over gRPC as over HTTP, and
    model metadata lists every served version whichever version was asked."""
    folder = tmp_path / "models" / "fake"
    for v in (1, 2):
        (folder / str(v)).mkdir(parents=True)
        fake_config("fake", labels=[f"v{v}-{i}" for i in range(256)]).write(folder / str(v))
    (folder / "config.json").write_text(json.dumps({"version_policy": {"all": {}}}))
    server = start_server(folder.parent, env={"RESNET_SERVE_BACKEND_PLUGINS": PLUGIN})
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for version in ("", "1", "2"):
        meta = client.get_model_metadata("fake", version, as_json=True)
        assert meta["versions"] == ["1", "2"], version
        assert httpx.get(f"{server.url}/v2/models/fake").json()["versions"] == ["1", "2"]
        config = client.get_model_config("fake", version, as_json=True)["config"]
        assert config["version_policy"] == {"specific": {"versions": ["1", "2"]}}  # int64
        http_config = httpx.get(f"{server.url}/v2/models/fake/config").json()
        assert http_config["version_policy"] == {"specific": {"versions": [1, 2]}}
    batch = np.full((1, 224, 224, 3), 7, np.uint8)
    for version, label in (("1", "v1-7"), ("2", "v2-7"), ("", "v2-7")):
        assert client.is_model_ready("fake", version)
        res = client.infer(
            "fake",
            [pixels_input(batch)],
            model_version=version,
            outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=1)],
        )
        assert res.as_numpy("probabilities")[0][0].decode().split(":")[2] == label
        assert res.get_response().model_version == (version or "2")
    # statistics per version, as Triton's: version 1 ran once, version 2 twice (as "2" and "")
    for version, count in (("1", 1), ("2", 2)):
        stats = client.get_inference_statistics("fake", version, as_json=True)["model_stats"]
        assert [(s["version"], int(s.get("inference_count", 0))) for s in stats] == [
            (version, count)
        ]
        http_stats = httpx.get(f"{server.url}/v2/models/fake/versions/{version}/stats").json()
        assert http_stats["model_stats"][0]["inference_count"] == count
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert sorted((s["name"], s["version"]) for s in every) == [("fake", "1"), ("fake", "2")]
    http_every = httpx.get(f"{server.url}/v2/models/stats").json()["model_stats"]
    assert sorted((s["name"], s["version"]) for s in http_every) == [("fake", "1"), ("fake", "2")]
    assert not client.is_model_ready("fake", "3")
    with pytest.raises(InferenceServerException, match="no version") as info:
        client.get_model_metadata("fake", "3")
    assert code(info) == "StatusCode.NOT_FOUND"


def test_infer_matches_http_v2(client, server, photo_jpeg: bytes) -> None:
    batch = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    res = client.infer(
        MODEL,
        [pixels_input(batch)],
        outputs=[
            grpcclient.InferRequestedOutput("logits"),
            grpcclient.InferRequestedOutput("probabilities", class_count=3),
        ],
        request_id="grpc-1",
    )
    assert res.get_response().id == "grpc-1"
    logits = res.as_numpy("logits")
    assert logits.shape == (3, 1000) and logits.dtype == np.float32
    classes = res.as_numpy("probabilities")
    assert classes.shape == (3, 3)
    top = [int(e.decode().split(":")[1]) for e in classes[:, 0]]
    assert top == np.argmax(logits, axis=1).tolist()

    # HTTP V2 binary on the same server: the same numbers
    http = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        inp = httpclient.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch, binary_data=True)
        out = [httpclient.InferRequestedOutput("logits", binary_data=True)]
        np.testing.assert_array_equal(
            http.infer(MODEL, [inp], outputs=out).as_numpy("logits"), logits
        )
    finally:
        http.close()

    # typed contents (uint_contents) instead of raw bytes: same answer for the first image
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=[1, 224, 224, 3])
    tensor.contents.uint_contents.extend(batch[0].ravel().tolist())
    request.outputs.add(name="logits")
    response = client._client_stub.ModelInfer(request, timeout=60)
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(1, 1000)
    np.testing.assert_array_equal(got, logits[:1])

    # encoded files as image_bytes (BYTES): the same top-5 as /v1 classify
    files = grpcclient.InferInput("image_bytes", [1, 1], "BYTES")
    files.set_data_from_numpy(np.array([[photo_jpeg]], dtype=object))
    res = client.infer(
        MODEL,
        [files],
        model_version="1",
        outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=5)],
    )
    got_top = [int(e.decode().split(":")[1]) for e in res.as_numpy("probabilities").ravel()]
    v1 = httpx.post(
        f"{server.url}/v1/models/{MODEL}/classify?top_k=5",
        content=photo_jpeg,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    ).json()["predictions"][0]
    assert got_top == [p["index"] for p in v1]


def test_errors_and_statistics(fresh_client, fresh_server) -> None:
    client, server = fresh_client, fresh_server
    nchw = np.zeros((1, 3, 224, 224), np.uint8)
    with pytest.raises(InferenceServerException, match="NCHW") as info:
        client.infer(MODEL, [pixels_input(nchw)])
    assert code(info) == "StatusCode.INVALID_ARGUMENT"
    good = pixels_input(np.zeros((2, 224, 224, 3), np.uint8))
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [good], model_version="7")
    assert code(info) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [good])
    assert code(info) == "StatusCode.NOT_FOUND"
    fp32 = grpcclient.InferInput("images", [1, 224, 224, 3], "FP32")
    fp32.set_data_from_numpy(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(InferenceServerException, match="UINT8") as info:
        client.infer(MODEL, [fp32])
    assert code(info) == "StatusCode.INVALID_ARGUMENT"
    for _ in range(3):
        client.infer(MODEL, [good])

    (s,) = client.get_inference_statistics(MODEL, as_json=True)["model_stats"]
    assert s["name"] == MODEL and s["version"] == "1"
    assert int(s["inference_count"]) == 6 and int(s["execution_count"]) == 3
    inf = s["inference_stats"]
    assert int(inf["success"]["count"]) == 3 and int(inf["fail"]["count"]) == 2  # bad shape, FP32
    assert int(inf["compute_infer"]["count"]) == 3
    labels = 'code="200",endpoint="v2_grpc_infer",model="resnet18"'
    assert metric(server.url, "resnet_serve_requests_total", labels) == 3
    labels = 'code="400",endpoint="v2_grpc_infer",model="resnet18"'
    assert metric(server.url, "resnet_serve_requests_total", labels) == 2
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert MODEL in [m["name"] for m in everything]


# ---------------------------------------------------------------------------- fake models
def start_fake(tmp_path: Path, start_server, **env: str):
    """A fast and a slow fake model, a token, and a gRPC message limit of 200 kB (one 224x224
    image fits, two do not)."""
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    write_fake_model(
        repo,
        "slow",
        options={"delay_s": 1.0},
        batching={"max_batch_size": 1, "max_queue_size": 1, "instances": 1},
    )
    env = {
        "RESNET_SERVE_BACKEND_PLUGINS": PLUGIN,
        "RESNET_SERVE_AUTH_TOKEN": TOKEN,
        "RESNET_SERVE_GRPC_MAX_MESSAGE_BYTES": "200000",
        **env,
    }
    return start_server(repo, env=env)


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory):
    """Shared by the token and the deadline tests: they call different models ("fake" and
    "slow"), and what the deadline test counts on "slow" is its own calls alone."""
    with ExitStack() as stack:

        def start(repo: Path, env: dict[str, str]) -> ServerProcess:
            return stack.enter_context(running_server(repo, env=env))

        yield start_fake(tmp_path_factory.mktemp("grpc-fake"), start)


@pytest.fixture()
def fake_client(fake_server):
    c = grpcclient.InferenceServerClient(url=fake_server.grpc_url)
    yield c
    c.close()


def grey(n: int, level: int) -> np.ndarray:
    return np.full((n, 224, 224, 3), level, np.uint8)


def test_token_and_message_limit(fake_client) -> None:
    assert fake_client.is_server_live() and fake_client.is_server_ready()  # open, like health
    for headers, why in ((None, "missing"), ({"authorization": "Bearer nope"}, "wrong")):
        with pytest.raises(InferenceServerException, match=why) as info:
            fake_client.infer("fake", [pixels_input(grey(1, 7))], headers=headers)
        assert code(info) == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as info:
            fake_client.get_model_metadata("fake", headers=headers)
        assert code(info) == "StatusCode.UNAUTHENTICATED"
    res = fake_client.infer("fake", [pixels_input(grey(1, 7))], headers=AUTH)
    assert int(np.argmax(res.as_numpy("logits"))) == 7
    with pytest.raises(InferenceServerException) as info:
        fake_client.infer("fake", [pixels_input(grey(2, 7))], headers=AUTH)
    assert code(info) == "StatusCode.RESOURCE_EXHAUSTED"


def test_deadline_queue_limit_and_cancellation(fake_client, fake_server) -> None:
    url = fake_server.url
    results: queue.Queue[tuple[object, object]] = queue.Queue()

    def done(result: object, error: object) -> None:
        results.put((result, error))

    # the call's deadline is the request's: answered at the deadline, not after the batch
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as info:
        fake_client.infer("slow", [pixels_input(grey(1, 1))], headers=AUTH, client_timeout=0.3)
    assert code(info) == "StatusCode.DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 0.9
    time.sleep(1.2)  # let the instance finish what it had started

    # one call runs (1 s), one waits in the queue of one: a third is refused at once
    fake_client.async_infer("slow", [pixels_input(grey(1, 2))], done, headers=AUTH)
    time.sleep(0.3)
    fake_client.async_infer("slow", [pixels_input(grey(1, 3))], done, headers=AUTH)
    time.sleep(0.3)
    with pytest.raises(InferenceServerException, match="queue") as info:
        fake_client.infer("slow", [pixels_input(grey(1, 4))], headers=AUTH)
    assert code(info) == "StatusCode.UNAVAILABLE"
    for _ in range(2):
        result, error = results.get(timeout=10)
        assert error is None, error
    images_before = metric(url, "resnet_serve_images_total", 'model="slow"')

    # cancelled while queued behind a running call: never reaches the model
    fake_client.async_infer("slow", [pixels_input(grey(1, 5))], done, headers=AUTH)
    time.sleep(0.3)  # the instance is busy with it now
    call = fake_client.async_infer("slow", [pixels_input(grey(1, 6))], done, headers=AUTH)
    time.sleep(0.3)  # queued
    call.cancel()
    outcomes = [results.get(timeout=10) for _ in range(2)]
    assert sum(error is None for _, error in outcomes) == 1
    assert any("CANCELLED" in str(error) for _, error in outcomes)
    time.sleep(1.5)  # long enough for the cancelled call to have run, had it been run
    assert metric(url, "resnet_serve_images_total", 'model="slow"') == images_before + 1
    labels = 'code="499",endpoint="v2_grpc_infer",model="slow"'
    assert metric(url, "resnet_serve_requests_total", labels) == 1
    (s,) = fake_client.get_inference_statistics("slow", headers=AUTH, as_json=True)["model_stats"]
    assert int(s["inference_count"]) == images_before + 1


def test_sigterm_answers_accepted_calls(tmp_path: Path, start_server) -> None:
    """No grace period: the gRPC server stops at once, yet finishes the call it accepted."""
    fake_server = start_fake(tmp_path, start_server, RESNET_SERVE_SHUTDOWN_GRACE_S="0")
    fake_client = grpcclient.InferenceServerClient(url=fake_server.grpc_url)
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    fake_client.async_infer(
        "slow",
        [pixels_input(grey(1, 9))],
        lambda result, error: results.put((result, error)),
        headers=AUTH,
    )
    time.sleep(0.3)
    fake_server.proc.send_signal(signal.SIGTERM)
    result, error = results.get(timeout=20)
    # type-ignore reason: the queue holds objects; the callback put an InferResult there
    assert error is None and int(np.argmax(result.as_numpy("logits"))) == 9  # type: ignore[attr-defined]
    assert fake_server.proc.wait(30) == 0
    fake_client.close()
    assert "KServe V2 gRPC on 127.0.0.1" in fake_server.log()


def test_every_worker_serves_grpc(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    server = start_server(
        repo, args=["--workers", "2"], env={"RESNET_SERVE_BACKEND_PLUGINS": PLUGIN}
    )
    deadline = time.monotonic() + 60  # the second worker may still be loading
    while server.log().count("KServe V2 gRPC on") < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    for i in range(12):  # a new connection each time: the kernel spreads them (SO_REUSEPORT)
        c = grpcclient.InferenceServerClient(url=server.grpc_url)
        try:
            res = c.infer("fake", [pixels_input(grey(1, i))])
            assert int(np.argmax(res.as_numpy("logits"))) == i
        finally:
            c.close()
    labels = 'code="200",endpoint="v2_grpc_infer",model="fake"'
    assert metric(server.url, "resnet_serve_requests_total", labels) == 12  # summed over workers
    assert server.stop() == 0


def test_a_taken_grpc_port_is_a_clear_start_up_error(tmp_path: Path, start_server) -> None:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(
            repo,
            args=["--grpc-port", str(port)],
            env={"RESNET_SERVE_BACKEND_PLUGINS": PLUGIN},
            wait=False,
        )
        assert server.proc.wait(60) != 0
    assert f"cannot serve gRPC on 127.0.0.1:{port}" in server.log()
    assert "all models closed" in server.log()
