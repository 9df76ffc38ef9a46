"""A tiny real ONNX model for tests that swap exports many times: uint8 [N, 16, 16, 3] ->
per-channel means -> two seeded linear layers (3 -> HIDDEN -> 10) -> logits [N, 10]. Served by
the real onnxruntime backend in milliseconds; two seeds give two models whose answers differ.
HIDDEN makes the weights about 1.7 MB: big enough that keeping old copies alive shows in the
server's memory, small enough to load in a blink."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.config import ModelConfig

CROP, CLASSES, HIDDEN = 16, 10, 32768


def weights(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(3, HIDDEN)) / 128).astype(np.float32)
    w2 = (rng.normal(size=(HIDDEN, CLASSES)) / np.sqrt(HIDDEN)).astype(np.float32)
    b = rng.normal(size=CLASSES).astype(np.float32)
    return w1, w2, b


def expected_logits(images: np.ndarray, seed: int) -> np.ndarray:
    w1, w2, b = weights(seed)
    means = images.astype(np.float64).mean(axis=(1, 2))
    return (means @ w1.astype(np.float64) @ w2.astype(np.float64) + b).astype(np.float32)


def write_tiny_model(directory: Path, seed: int, name: str = "tiny", **overrides: object) -> Path:
    """model.onnx and config.json in `directory` (created); returns the directory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, w2, b = weights(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["m", "w1"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["y"]),
            helper.make_node("Add", ["y", "b"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", CROP, CROP, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b, "b"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / "model.onnx"))
    data: dict[str, object] = {
        "name": name,
        "arch": "tiny-linear",
        "backend": "onnxruntime",
        "num_classes": CLASSES,
        "weights": f"random, seed {seed}",
        "files": {"onnx": "model.onnx"},
        "input": {"resize": CROP, "crop": CROP},
        "batching": {"max_batch_size": 8},
    }
    data.update(overrides)
    ModelConfig.model_validate(data).write(directory)
    return directory
