"""Reduced-precision exports: int8 static QDQ with per-channel weights calibrated on a folder,
fp16 ONNX with uint8 in and float32 out, bf16 TorchScript; and the export options' errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from app.config import read_model_config
from app.offline.export import ExportError, export_model
from app.offline.quantize import head_nodes, quantize_int8
from app.offline.recipes import digits


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def run(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": batch})[0]


def test_config_names_every_precision_file(digits_dir: Path) -> None:
    cfg = read_model_config(digits_dir)
    assert cfg.files == {
        "eager": "model.pt",
        "torchscript": "model.torchscript.pt",
        "onnx": "model.onnx",
        "onnx-int8": "model.int8.onnx",
        "onnx-fp16": "model.fp16.onnx",
        "torchscript-bf16": "model.torchscript-bf16.pt",
    }
    assert all((digits_dir / f).is_file() for f in cfg.files.values())
    assert {"onnx-int8", "onnx-fp16", "torchscript-bf16"} <= set(cfg.export_check)


def test_int8_is_qdq_with_per_channel_weights(digits_dir: Path) -> None:
    model = onnx.load(str(digits_dir / "model.int8.onnx"))
    made_by = producers(model)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(convs) == 13  # 12 convolutions (one per BasicBlock conv, stem, 3 downsamples) + fc
    for node in convs:
        data, weight = made_by[node.input[0]], made_by[node.input[1]]
        assert data.op_type == "DequantizeLinear", f"{node.name} reads float activations"
        assert weight.op_type == "DequantizeLinear", f"{node.name} has float weights"
        quantised, scale = weights[weight.input[0]], weights[weight.input[1]]
        assert quantised.dtype == np.int8
        out_channels = quantised.shape[0]
        assert scale.shape == (out_channels,), f"{node.name}: per-tensor scale"  # per channel
    # the uint8 -> normalised float head stays float: the first quantised tensor is its output
    first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert made_by[first.input[0]].op_type == "Sub"
    for name in head_nodes(onnx.load(str(digits_dir / "model.onnx"))):
        node = next(n for n in model.graph.node if n.name == name)
        assert not any(
            made_by.get(i) is not None and made_by[i].op_type == "DequantizeLinear"
            for i in node.input
        )
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_int8_calibration_folder_decides_the_ranges(digits_dir: Path, tmp_path: Path) -> None:
    """Calibrating on blank paper instead of digits gives other activation scales, and a model
    that no longer agrees with fp32: the folder is really used."""
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(3):
        Image.new("L", (80, 80), 255).save(blank / f"{i}.png")
    out = tmp_path / "blank.int8.onnx"
    report = quantize_int8(digits_dir / "model.onnx", out, blank, digits.PREPROCESS)
    assert report.calibration_images == 3 and report.quantised_nodes >= 13

    def scales(path: Path) -> dict[str, float]:
        m = onnx.load(str(path))
        init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        return {
            n.output[0]: float(init[n.input[1]])
            for n in m.graph.node
            if n.op_type == "QuantizeLinear" and init[n.input[1]].ndim == 0
        }

    good, bad = scales(digits_dir / "model.int8.onnx"), scales(out)
    assert good.keys() == bad.keys() and good != bad


def test_fp16_graph_keeps_uint8_in_and_float32_out(digits_dir: Path) -> None:
    """fp16 is for the CUDA / TensorRT providers; here only its structure, and the CPU
    provider's run of it, can be checked (GPU accuracy is checked by `check --device cuda:0`)."""
    model = onnx.load(str(digits_dir / "model.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    dtypes = {i.data_type for i in model.graph.initializer if i.name in conv_weights}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    batch = np.random.default_rng(0).integers(0, 256, (2, 56, 56, 3), dtype=np.uint8)
    out = run(digits_dir / "model.fp16.onnx", batch)
    assert out.dtype == np.float32 and out.shape == (2, 10)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_bf16_torchscript_runs_in_bf16(digits_dir: Path) -> None:
    module = torch.jit.load(str(digits_dir / "model.torchscript-bf16.pt"))
    # frozen: the weights are constants of the graph
    constants = [
        n.t("value")
        for n in module.graph.nodes()
        if n.kind() == "prim::Constant" and n.hasAttribute("value") and n.kindOf("value") == "t"
    ]
    big = {t.dtype for t in constants if t.numel() > 16}
    assert big == {torch.bfloat16}
    batch = torch.from_numpy(np.zeros((1, 56, 56, 3), np.uint8))
    assert module(batch).dtype == torch.float32  # logits come back as float32


@pytest.mark.parametrize(
    ("formats", "precisions", "calibration", "message"),
    [
        (["eager", "onnx"], ["int8"], None, "calibration images"),
        (["eager", "onnx"], ["int8"], "missing", "does not exist"),
        (["eager", "torchscript"], ["fp16"], None, "add onnx"),
        (["eager", "onnx"], ["int4"], None, "precisions must be"),
    ],
)
def test_export_refuses_impossible_precisions(
    tmp_path: Path,
    formats: list[str],
    precisions: list[str],
    calibration: str | None,
    message: str,
) -> None:
    cal = tmp_path / calibration if calibration else None
    with pytest.raises(ExportError, match=message):
        export_model(
            "resnet-mini",
            "random",
            formats,
            tmp_path / "m",
            precisions=precisions,
            calibration_images=cal,
        )
    assert not (tmp_path / "m").exists()  # refused before writing anything


def test_export_cli_with_precisions(digits_images: dict[str, Path], tmp_path: Path) -> None:
    from app.cli import main

    # a small calibration folder: the first image of each digit
    cal = tmp_path / "cal"
    for folder in sorted(digits_images["train"].iterdir()):
        (cal / folder.name).mkdir(parents=True)
        shutil.copy(sorted(folder.iterdir())[0], cal / folder.name)
    out = tmp_path / "models" / "mini"
    rc = main(
        [
            "export",
            "--recipe",
            "digits",
            "--formats",
            "eager,onnx",
            "--precisions",
            "int8,fp16",
            "--calibration-images",
            str(cal),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    cfg = read_model_config(out)
    assert set(cfg.files) == {"eager", "onnx", "onnx-int8", "onnx-fp16"}
    assert cfg.arch == "resnet-mini" and cfg.labels == digits.LABELS and cfg.input.crop == 56
    assert (
        main(
            [
                "export",
                "--arch",
                "resnet-mini",
                "--weights",
                str(digits.WEIGHTS),
                "--precisions",
                "int8",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
