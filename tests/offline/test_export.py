"""The export tool: formats, config, agreement check, and loud, recorded weight fallback."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torchvision

from app.cli import main
from app.config import read_model_config
from app.offline.export import ExportError, export_model


def test_export_writes_every_format_and_a_config(resnet18_dir: Path) -> None:
    cfg = read_model_config(resnet18_dir)
    assert cfg.files == {
        "eager": "model.pt",
        "torchscript": "model.torchscript.pt",
        "onnx": "model.onnx",
    }
    assert all((resnet18_dir / f).is_file() for f in cfg.files.values())
    assert cfg.backend == "onnxruntime" and cfg.device == "cpu" and cfg.precision == "fp32"
    assert set(cfg.export_check) == {"eager", "torchscript", "onnx"}
    assert all(err < 1e-4 for err in cfg.export_check.values())
    assert cfg.labels[1] == "goldfish" and cfg.num_classes == 1000
    assert cfg.input.resize == 256 and cfg.input.crop == 224
    assert not cfg.weights_fallback and cfg.weights.startswith("random")


def test_onnx_graph_has_dynamic_batch_and_uint8_input(resnet18_dir: Path) -> None:
    import onnx

    model = onnx.load(str(resnet18_dir / "model.onnx"))
    assert model.opset_import[0].version >= 17
    (inp,) = model.graph.input
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [224, 224, 3]


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse)


def test_imagenet_offline_stops_without_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _offline(monkeypatch)
    code = main(
        [
            "export",
            "--arch",
            "resnet18",
            "--weights",
            "imagenet",
            "--formats",
            "onnx",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert code == 2
    assert "--allow-random-fallback" in capsys.readouterr().err
    assert not (tmp_path / "m" / "config.json").exists()


def test_imagenet_offline_fallback_is_loud_and_recorded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _offline(monkeypatch)
    cfg = export_model("resnet18", "imagenet", ["onnx"], tmp_path / "m", allow_random_fallback=True)
    assert "RANDOM" in capsys.readouterr().err
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["weights_fallback"] is True and "FALLBACK" in saved["weights"]
    assert cfg.labels[0] == "tench"  # class names come from torchvision's metadata offline


def test_state_dict_file_and_bad_arguments(resnet18_dir: Path, tmp_path: Path) -> None:
    cfg = export_model("resnet18", str(resnet18_dir / "model.pt"), ["torchscript"], tmp_path / "s")
    assert cfg.weights == "file model.pt" and cfg.backend == "torchscript"
    with pytest.raises(ExportError, match="do not fit"):
        export_model("resnet34", str(resnet18_dir / "model.pt"), ["onnx"], tmp_path / "x")
    with pytest.raises(ExportError, match="unknown architecture"):
        export_model("vgg16", "random", ["onnx"], tmp_path / "y")
    with pytest.raises(ExportError, match="formats"):
        export_model("resnet18", "random", ["tflite"], tmp_path / "z")


def test_disagreeing_format_fails_the_export(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import app.offline.export as export

    real = export.run_onnx
    monkeypatch.setattr(export, "run_onnx", lambda path, batch: real(path, batch) * 1.01)
    with pytest.raises(ExportError, match="disagrees"):
        export_model("resnet18", "random", ["onnx"], tmp_path / "m")
