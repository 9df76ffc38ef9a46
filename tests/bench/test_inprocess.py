"""`resnet-serve bench --in-process`: the backend alone, per batch size, and the decoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bench.inprocess import model_config, time_calls
from app.cli import main


def test_in_process_resnet18(
    resnet18_dir: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "inproc.json"
    assert (
        main(
            [
                "bench",
                "--in-process",
                str(resnet18_dir),
                "--batch-sizes",
                "1,2",
                "--min-time",
                "0.2",
                "--images",
                str(image_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )

    doc = json.loads(out.read_text())
    assert doc["kind"] == "in-process" and doc["backend"] == "onnxruntime"
    assert doc["backend_info"]["providers"] == ["CPUExecutionProvider"]
    rows = doc["steps"]
    assert [r["batch_size"] for r in rows] == [1, 2]
    for r in rows:
        assert r["iterations"] >= 3 and r["p50_ms"] > 0
        assert r["images_per_s"] == pytest.approx(r["batch_size"] * 1000 / r["p50_ms"])
    assert doc["decode"]["files"] == 5 and doc["decode"]["images_per_s_per_core"] > 0
    printed = capsys.readouterr().out
    assert "img/s" in printed and "decode" in printed


def test_in_process_other_backend_and_clear_failures(
    resnet18_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ts.json"
    assert (
        main(
            [
                "bench",
                "--in-process",
                str(resnet18_dir),
                "--backend",
                "torchscript",
                "--batch-sizes",
                "1",
                "--min-time",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert doc["backend"] == "torchscript" and doc["decode"] is None

    # int8 was not exported: the backend's own message, exit 2, no traceback
    assert (
        main(
            [
                "bench",
                "--in-process",
                str(resnet18_dir),
                "--precision",
                "int8",
                "--batch-sizes",
                "1",
                "--min-time",
                "0",
            ]
        )
        == 2
    )
    assert "onnx-int8" in capsys.readouterr().err
    assert main(["bench", "--in-process", str(tmp_path / "missing")]) == 2


def test_model_config_makes_room_for_the_largest_batch(resnet18_dir: Path) -> None:
    cfg = model_config(resnet18_dir, [1, 64], backend="eager")
    assert cfg.backend == "eager" and cfg.batching.max_batch_size == 64
    assert cfg.directory == resnet18_dir


def test_time_calls_honours_both_minimums() -> None:
    calls = []
    times = time_calls(lambda: calls.append(1), min_time=0.0, min_iters=4)
    assert len(times) == len(calls) == 4
