"""The OpenVINO backend served by a real server process: `--backends openvino`, what runs read
back into /v1/models, V2 metadata and config, and the model_info metric; the same answers as
ONNX Runtime; and a SIGTERM under load loses nothing."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

pytest.importorskip("openvino")
pytestmark = pytest.mark.e2e

JPEG = {"Content-Type": "image/jpeg"}


def test_backends_openvino_serves_and_reports_what_runs(
    models_repo: Path, jpegs: list[bytes], start_server
) -> None:
    server = start_server(models_repo, ["--backends", "openvino"])
    with httpx.Client(base_url=server.url, timeout=60) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        ov = models["resnet18-openvino"]
        assert ov["ready"] and ov["backend"] == "openvino" and ov["device"] == "cpu"
        assert ov["providers"] == ["OpenVINO:CPU:fp32"]
        assert ov["details"]["inference_precision"] == "fp32"
        assert ov["details"]["performance_hint"] == "THROUGHPUT"
        assert ov["details"]["num_streams"] == ov["threads"]["instances"]
        assert ov["threads"]["source"]["instances"] == "budget"
        for data in jpegs[:3]:
            tops = [
                [
                    p["index"]
                    for p in client.post(
                        f"/v1/models/{name}/classify?top_k=5", content=data, headers=JPEG
                    ).json()["predictions"][0]
                ]
                for name in ("resnet18", "resnet18-openvino")
            ]
            assert tops[0] == tops[1]
        meta = client.get("/v2/models/resnet18-openvino").json()
        assert meta["platform"] == "openvino"
        assert meta["parameters"]["providers"] == ["OpenVINO:CPU:fp32"]
        assert meta["parameters"]["execution_precision"] == "fp32"
        config = client.get("/v2/models/resnet18-openvino/config").json()
        assert config["platform"] == "openvino" and config["backend"] == "openvino"
        assert config["parameters"]["execution_precision"] == {"string_value": "fp32"}
        assert config["default_model_filename"] == "model.onnx"
        assert config["instance_group"][0]["count"] == ov["threads"]["instances"]
        metrics = client.get("/metrics").text
        assert (
            'resnet_serve_model_info{backend="openvino",device="cpu",model="resnet18-openvino",'
            'precision="fp32"} 1.0' in metrics
        )
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_sigterm_under_load_answers_every_accepted_request(
    models_repo: Path, jpegs: list[bytes], start_server
) -> None:
    (models_repo / "resnet18" / "config.json").write_text(
        (models_repo / "resnet18" / "config.json")
        .read_text()
        .replace('"backend": "onnxruntime"', '"backend": "openvino"')
    )
    server = start_server(models_repo, env={"RESNET_SERVE_SHUTDOWN_GRACE_S": "1"})
    assert httpx.get(f"{server.url}/v1/models").json()["models"][0]["backend"] == "openvino"
    outcomes: list[object] = []
    lock = threading.Lock()
    stop = threading.Event()

    def loop() -> None:
        # a new connection per request, as in test_reliability: once the listener closes, a
        # connect is refused or a connection still in the accept backlog is reset
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.url, timeout=60, limits=limits) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v1/models/resnet18/classify", content=jpegs[0], headers=JPEG)
                    outcome: object = r.status_code
                except httpx.ConnectError:
                    outcome = "refused"  # after the grace period: never accepted
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    outcome = "reset"
                except httpx.HTTPError as exc:
                    outcome = f"error: {type(exc).__name__}"
                with lock:
                    outcomes.append(outcome)
                if outcome != 200:
                    return

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    while len(outcomes) < 4:  # under load before the signal
        threading.Event().wait(0.05)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    stop.set()
    assert server.proc.wait(30) == 0
    answered = [o for o in outcomes if isinstance(o, int)]
    assert len(answered) > 4 and set(answered) == {200}, outcomes
    assert not [o for o in outcomes if str(o).startswith("error")], outcomes
    assert "Traceback" not in server.log()
