"""`resnet-serve bench` against a real server process (the resnet18 export, ONNX Runtime)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from tests.scrape import scraped

# no drain period when the fixture stops the server: nothing is in flight by then
FAST_STOP = {"RESNET_SERVE_SHUTDOWN_GRACE_S": "0"}
pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(server, image_dir: Path, out: Path, *args: str) -> int:
    return main(
        [
            "bench",
            "--url",
            server.url,
            "--images",
            str(image_dir),
            "--out",
            str(out),
            "--warmup",
            "0",
            "--no-progress",
            *args,
        ]
    )


def test_closed_loop_against_a_real_server(
    start_server,
    models_repo: Path,
    image_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = start_server(models_repo, env=FAST_STOP)
    out = tmp_path / "results.json"

    assert (
        bench(
            server,
            image_dir,
            out,
            "--model",
            "resnet18",
            "--concurrency",
            "1,4",
            "--requests",
            "12",
        )
        == 0
    )

    doc = json.loads(out.read_text())
    steps = {s["label"]: s for s in doc["steps"]}
    assert list(steps) == ["c=1", "c=4"]
    for s in steps.values():
        assert s["requests"] == s["ok"] == 12 and s["errors"] == {}
        assert s["images_per_s"] > 0 and 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert doc["mode"] == "raw" and doc["path"] == "/v1/models/resnet18/classify"
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    printed = capsys.readouterr().out
    assert "c=1" in printed and "p99 ms" in printed
    # the batches the server formed in each step, from its own histogram
    one = steps["c=1"]["batch_sizes"]
    assert one["batches"] == 12 and one["mean_batch_size"] == 1.0 and one["share_by_le"]["1.0"] == 1
    four = steps["c=4"]["batch_sizes"]
    assert 3 <= four["batches"] <= 12  # at most 4 images a batch at concurrency 4
    assert four["images"] == 12 and four["mean_batch_size"] == round(12 / four["batches"], 3)
    assert sum(four["share_by_le"].values()) == pytest.approx(1)
    assert "batch sizes: 12 batches, mean 1.00; 1: 100%" in printed

    # the server answered exactly what the client counted (no warm-up in requests mode)
    assert served(server, "200") == 24

    # an unknown model: every answer counted under its status, with what the server said
    errors = tmp_path / "errors.json"
    assert (
        bench(
            server,
            image_dir,
            errors,
            "--model",
            "no-such-model",
            "--concurrency",
            "2",
            "--requests",
            "10",
            "--mode",
            "multipart",
            "--images-per-request",
            "2",
        )
        == 0
    )
    (step,) = json.loads(errors.read_text())["steps"]
    assert step["ok"] == 0 and step["errors"] == {"404": 10}
    assert "no-such-model" in step["error_samples"]["404"]
    assert step["p50_ms"] is None
    assert errors.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
    # a duration step: in-flight requests at its end are answered, never cut off (no 499)
    assert (
        bench(
            server,
            image_dir,
            tmp_path / "d.json",
            "--model",
            "resnet18",
            "--concurrency",
            "4",
            "--duration",
            "1",
        )
        == 0
    )
    (step,) = json.loads((tmp_path / "d.json").read_text())["steps"]
    assert step["ok"] > 0 and step["duration_s"] == 1.0
    with pytest.raises(LookupError):  # not one request abandoned: no 499 series at all
        served(server, "499")


def served(server, code: str) -> float:
    """resnet_serve_requests_total for resnet18's classify endpoint and one status code."""
    return scraped(
        server.url, "resnet_serve_requests_total", model="resnet18", endpoint="classify", code=code
    )


def test_open_loop_and_multipart(resnet18_server, image_dir: Path, tmp_path: Path) -> None:
    server = resnet18_server  # shared: what is asserted is what the client counted
    out = tmp_path / "open.json"

    assert (
        bench(
            server,
            image_dir,
            out,
            "--model",
            "resnet18",
            "--rate",
            "5",
            "--requests",
            "6",
            "--mode",
            "multipart",
            "--images-per-request",
            "2",
        )
        == 0
    )

    (step,) = json.loads(out.read_text())["steps"]
    assert step["loop"] == "open" and step["rate"] == 5
    assert step["ok"] == 6 and step["errors"] == {}
    assert step["images_per_s"] == pytest.approx(2 * step["ok_per_s"])


def test_no_server_is_a_clear_failure(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert (
        main(
            [
                "bench",
                "--url",
                url,
                "--model",
                "m",
                "--images",
                str(image_dir),
                "--requests",
                "1",
                "--concurrency",
                "1",
            ]
        )
        == 2
    )
    assert "cannot connect" in capsys.readouterr().err
    assert main(["bench", "--url", url, "--model", "m", "--images", str(tmp_path)]) == 2


@pytest.mark.parametrize("mode", ["v2", "v2-pixels"])
def test_v2_modes(mode: str, resnet18_server, image_dir: Path, tmp_path: Path) -> None:
    """The KServe V2 binary requests (BYTES image_bytes, or UINT8 images) are accepted."""
    server = resnet18_server  # shared: what is asserted is what the client counted
    out = tmp_path / "v2.json"

    assert (
        bench(
            server,
            image_dir,
            out,
            "--model",
            "resnet18",
            "--mode",
            mode,
            "--images-per-request",
            "2",
            "--concurrency",
            "2",
            "--requests",
            "4",
        )
        == 0
    )

    (step,) = json.loads(out.read_text())["steps"]
    assert step["errors"] == {} and step["ok"] == 4
    assert step["images_per_s"] == pytest.approx(2 * step["ok_per_s"])
