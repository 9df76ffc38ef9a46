"""Reduced-precision ONNX files made from an exported fp32 graph: int8 (static QDQ) and fp16.

int8: ONNX Runtime's static quantisation in QDQ format, per-channel int8 weights, int8
activations whose ranges are calibrated (MinMax) on real images decoded by the server's own
preprocessing. The uint8 head of the graph (Transpose, Cast, Mul, Sub: the normalisation) is
left in float, so the first quantised tensor is the normalised image the first Conv reads.

fp16: onnxruntime's float16 converter (the onnxconverter-common code it ships) with the
graph's inputs and outputs kept: uint8 images in, float32 logits out, float16 in between.
Made for the CUDA and TensorRT execution providers.
"""

from __future__ import annotations

import collections
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.config import PreprocessConfig
from app.offline.imagefolder import load_images

CALIBRATION_BATCH = 32


@dataclass
class QuantizeReport:
    calibration_images: int
    ops: dict[str, int]  # op type -> count in the quantised graph
    quantised_nodes: int  # nodes that run on int8 inputs (each with a DequantizeLinear in front)

    def summary(self) -> str:
        return (
            f"{self.quantised_nodes} nodes quantised, {self.ops.get('QuantizeLinear', 0)} "
            f"QuantizeLinear / {self.ops.get('DequantizeLinear', 0)} DequantizeLinear, "
            f"calibrated on {self.calibration_images} images"
        )


def head_nodes(model: Any) -> list[str]:
    """Names of the nodes before the first Conv: the uint8 -> normalised float head."""
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            return names
        names.append(node.name)
    raise ValueError("the graph has no Conv: not a ResNet export")


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calibration_dir: Path,
    preprocess: PreprocessConfig,
    limit: int | None = 512,
) -> QuantizeReport:
    """Write a static int8 QDQ model calibrated on (the first `limit` of) calibration_dir."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = load_images(calibration_dir, preprocess, limit=limit).images
    name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime has no types: Any
        def __init__(self) -> None:
            self._batches = iter(
                images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and graph clean-up first, as onnxruntime recommends
        quant_pre_process(str(fp32_path), str(prepared))
        head = head_nodes(onnx.load(str(prepared)))
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # uint8 activations with int8 weights (U8S8): ONNX Runtime's x86 CPU kernels fuse
            # every QDQ Conv into QLinearConv then (ResNet-50: 53 QLinearConv + 16 QLinearAdd,
            # ~3x fp32 here). With int8 activations (S8S8) it left 94 DequantizeLinear, 20 float
            # Convs and 33 Transposes in the optimised graph and ran no faster than fp32.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=head,
        )
    quantised = onnx.load(str(out_path))
    ops = collections.Counter(n.op_type for n in quantised.graph.node)
    dequantised = {
        o for n in quantised.graph.node if n.op_type == "DequantizeLinear" for o in n.output
    }
    fed = sum(
        1
        for n in quantised.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(i in dequantised for i in n.input)
    )
    return QuantizeReport(len(images), dict(ops), fed)


def convert_fp16(fp32_path: Path, out_path: Path) -> None:
    """Write an fp16 copy of the graph: uint8 in, float32 logits out, float16 inside."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
