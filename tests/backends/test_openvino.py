"""The OpenVINO backend on the project's own exports: the precision in force read back from the
compiled model, fp32 as exact as ONNX Runtime's, bf16 only where the CPU has it, int8 really in
int8 kernels, both batch-shape modes equal, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.backends import create_backend
from app.backends import openvino as ov_backend
from app.backends.openvino import OpenVinoBackend
from app.config import read_model_config
from app.offline.agreement import relative_error

pytest.importorskip("openvino")


def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov_backend.cpu_capabilities(ov.Core())


@pytest.fixture(scope="module")
def digits_batch(digits_dir: Path) -> np.ndarray:
    crop = read_model_config(digits_dir).input.crop
    return np.random.default_rng(3).integers(0, 256, (5, crop, crop, 3), dtype=np.uint8)


def run(cfg, batch: np.ndarray):
    backend = create_backend(cfg)
    backend.load()
    try:
        return backend.infer(batch), backend.info()
    finally:
        backend.close()


def test_fp32_is_true_f32_and_says_so(digits_dir: Path, digits_batch: np.ndarray) -> None:
    base = read_model_config(digits_dir)
    ref, _ = run(base, digits_batch)  # onnxruntime fp32
    out, info = run(base.variant("ov", backend="openvino"), digits_batch)
    assert relative_error(ref, out) < 1e-4
    assert info.precision == "fp32" and info.providers == ["OpenVINO:CPU:fp32"]
    assert info.details["inference_precision"] == "fp32"
    assert set(info.details["convolution_precisions"]) == {"fp32"}


def test_int8_runs_int8_kernels(digits_dir: Path, digits_batch: np.ndarray) -> None:
    base = read_model_config(digits_dir)
    ref, _ = run(base.variant("ort8", precision="int8"), digits_batch)
    out, info = run(base.variant("ov8", backend="openvino", precision="int8"), digits_batch)
    assert info.precision == "int8" and info.providers == ["OpenVINO:CPU:int8"]
    assert info.details["convolution_precisions"].get("int8", 0) >= 1
    assert (ref.argmax(1) == out.argmax(1)).all()


def test_bf16_where_the_cpu_has_it(digits_dir: Path, digits_batch: np.ndarray) -> None:
    base = read_model_config(digits_dir)
    cfg = base.variant("ovbf", backend="openvino", precision="bf16")
    if not cpu_has_bf16():
        with pytest.raises(ValueError, match="native bf16"):
            create_backend(cfg).load()
        return
    ref, _ = run(base, digits_batch)
    out, info = run(cfg, digits_batch)
    assert info.precision == "bf16" and info.providers == ["OpenVINO:CPU:bf16"]
    assert info.details["convolution_precisions"].get("bf16", 0) >= 1
    assert 1e-6 < relative_error(ref, out) < 5e-2  # really bf16: not bit-equal, still close


def test_bf16_refused_on_a_cpu_without_it(
    digits_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU here may have bf16: the capability list is replaced by one without it (the
    only faked part; OpenVINO itself is real) to see the refusal and its message."""
    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda core: ["FP32", "INT8"])
    cfg = read_model_config(digits_dir).variant("b", backend="openvino", precision="bf16")
    with pytest.raises(ValueError, match="native bf16.*FP32, INT8.*serve fp32 or int8"):
        create_backend(cfg).load()


def test_bucket_shapes_equal_dynamic(digits_dir: Path, digits_batch: np.ndarray) -> None:
    base = read_model_config(digits_dir).variant("ovd", backend="openvino")
    buckets = base.variant("ovb", openvino={"batch_shapes": "buckets"})
    backend = create_backend(buckets)
    backend.load()
    backend.warmup([1, 2, 4, 8])
    assert backend.info().details["compiled_batch_sizes"] == [1, 2, 4, 8]
    dynamic, _ = run(base, digits_batch)
    for n in (1, 3, 5):  # 3 and 5 are padded to 4 and 8
        assert relative_error(dynamic[:n], backend.infer(digits_batch[:n])) < 1e-5
    assert backend.infer(np.concatenate([digits_batch] * 2)).shape[0] == 10  # > max: chunks
    backend.close()


def test_thread_option_reaches_openvino(digits_dir: Path, digits_batch: np.ndarray) -> None:
    base = read_model_config(digits_dir).variant("t", backend="openvino")
    latency = base.variant("l", openvino={"threads": 1, "performance_hint": "LATENCY"})
    _, info = run(latency, digits_batch)
    assert info.details["inference_num_threads"] == 1 and info.details["num_streams"] == 1
    assert info.details["performance_hint"] == "LATENCY"
    assert not info.details["shared_by_instances"]


def test_instances_share_one_throughput_model(digits_dir: Path, digits_batch: np.ndarray) -> None:
    """The default: the model's instances share one compiled model, a stream each, their own
    infer requests; it is released when the last instance closes."""
    cfg = read_model_config(digits_dir).variant(
        "s", backend="openvino", batching={"instances": 2}, openvino={"threads": 1}
    )
    first, second = create_backend(cfg), create_backend(cfg)
    assert isinstance(first, OpenVinoBackend) and isinstance(second, OpenVinoBackend)
    first.load()
    second.load()
    assert first._compiled[0] is second._compiled[0]  # one compiled model
    assert first._requests[0] is not second._requests[0]  # a request each
    details = first.info().details
    assert details["performance_hint"] == "THROUGHPUT" and details["shared_by_instances"]
    assert details["num_streams"] == 2 and details["inference_num_threads"] == 2
    np.testing.assert_array_equal(first.infer(digits_batch), second.infer(digits_batch))
    first.close()
    key = second._shared_key
    assert key in ov_backend._shared  # still held by the second instance
    assert second.infer(digits_batch[:1]).shape[0] == 1
    second.close()
    assert key not in ov_backend._shared


def test_refusals(digits_dir: Path) -> None:
    base = read_model_config(digits_dir)
    with pytest.raises(ValueError, match="not fp16"):
        create_backend(base.variant("f", backend="openvino", precision="fp16")).load()
    with pytest.raises(ValueError, match="serves on the CPU"):
        create_backend(base.variant("g", backend="openvino", device="cuda:0")).load()
    no_int8 = base.variant("n", backend="openvino", precision="int8", files={"onnx": "model.onnx"})
    with pytest.raises(KeyError, match="onnx-int8"):
        create_backend(no_int8).load()
