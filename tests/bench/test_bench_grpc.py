"""`resnet-serve bench --mode grpc` against a real server process: pre-decoded uint8 batches
over KServe V2 gRPC, counted by the client exactly as the server counts them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from app.cli import main
from tests.fakes import PLUGIN, write_fake_model

pytestmark = pytest.mark.e2e


def grpc_requests(server, code: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("resnet_serve_requests_total{") and (
            f'code="{code}"' in line and 'endpoint="v2_grpc_infer"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    # a missing series is an error, never 0.0 (issue 14): a "== 0" check must be able to fail
    raise LookupError(f"no resnet_serve_requests_total series for code {code} of v2_grpc_infer")


def test_bench_grpc_mode(start_server, image_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_fake_model(repo, "fake")
    server = start_server(
        repo,
        env={
            "RESNET_SERVE_BACKEND_PLUGINS": PLUGIN,
            "RESNET_SERVE_AUTH_TOKEN": "tok",
            "RESNET_SERVE_SHUTDOWN_GRACE_S": "0",
        },
    )
    common = ["bench", "--url", f"grpc://{server.grpc_url}", "--images", str(image_dir)]
    common += ["--mode", "grpc", "--warmup", "0", "--no-progress", "--images-per-request", "4"]
    out = tmp_path / "grpc.json"
    args = [*common, "--model", "fake", "--out", str(out), "--plot", str(tmp_path / "g.png")]
    assert (
        main(
            [
                *args,
                "--concurrency",
                "1,3",
                "--requests",
                "9",
                "--header",
                "Authorization: Bearer tok",
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert doc["mode"] == "grpc" and doc["path"] == "/inference.GRPCInferenceService/ModelInfer"
    for step in doc["steps"]:
        assert step["requests"] == step["ok"] == 9 and step["errors"] == {}
        assert step["images_per_s"] == pytest.approx(4 * step["ok_per_s"])
    assert grpc_requests(server, "200") == 18

    # errors are counted under their gRPC code, with the server's message
    bad = tmp_path / "bad.json"
    assert (
        main(
            [
                *common,
                "--model",
                "nope",
                "--out",
                str(bad),
                "--concurrency",
                "2",
                "--requests",
                "4",
                "--header",
                "Authorization: Bearer tok",
            ]
        )
        == 0
    )
    (step,) = json.loads(bad.read_text())["steps"]
    assert step["ok"] == 0 and step["errors"] == {"NOT_FOUND": 4}
    assert "nope" in step["error_samples"]["NOT_FOUND"]
    denied = tmp_path / "denied.json"
    assert (
        main([*common, "--model", "fake", "--out", str(denied), "--rate", "20", "--requests", "3"])
        == 0
    )
    (step,) = json.loads(denied.read_text())["steps"]
    assert step["loop"] == "open" and step["errors"] == {"UNAUTHENTICATED": 3}
    # an http:// URL is refused with a clear message
    assert main([*common[:2], server.url, *common[3:], "--model", "fake", "--requests", "1"]) == 2
