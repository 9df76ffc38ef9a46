"""Every backend loads the same resnet18 export and returns the same logits; providers are
reported as they really are (GPU provider decisions: test_onnxruntime_gpu.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from app.backends import REGISTRY, backend_class, create_backend
from app.backends.onnxruntime import provider_options, wanted_providers
from app.config import read_model_config
from app.offline.agreement import relative_error

BACKENDS = ["onnxruntime", "torchscript", "eager"]
if importlib.util.find_spec("openvino") is not None:  # the openvino extra (make install has it)
    BACKENDS.append("openvino")


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def eager_logits(resnet18_dir: Path, batch: np.ndarray) -> np.ndarray:
    backend = create_backend(read_model_config(resnet18_dir).variant("e", backend="eager"))
    backend.load()
    return backend.infer(batch)


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_agrees_with_eager_fp32(
    name: str, resnet18_dir: Path, batch: np.ndarray, eager_logits: np.ndarray
) -> None:
    cfg = read_model_config(resnet18_dir).variant(f"r18-{name}", backend=name)
    backend = create_backend(cfg)
    backend.load()
    backend.warmup([1, 2])
    out = backend.infer(batch)
    assert out.shape == (3, 1000) and out.dtype == np.float32
    assert relative_error(eager_logits, out) < 1e-4
    # one image alone gives the same row as inside a batch
    assert relative_error(eager_logits[1:2], backend.infer(batch[1:2])) < 1e-4
    info = backend.info()
    assert info.name == name and info.device == "cpu" and info.input_shape == (224, 224, 3)
    assert info.providers, "a backend must say what runs it"
    backend.close()


def test_onnxruntime_reports_active_providers(resnet18_dir: Path) -> None:
    backend = create_backend(read_model_config(resnet18_dir))
    backend.load()
    assert backend.info().providers == ["CPUExecutionProvider"]


def test_provider_configuration(
    resnet18_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = read_model_config(resnet18_dir).variant(
        "trt",
        device="cuda:1",
        onnxruntime={
            "providers": ["tensorrt"],
            "tensorrt": {"int8": True, "workspace_size": 1 << 30},
        },
    )
    assert wanted_providers(cfg) == ["tensorrt", "cuda", "cpu"]
    trt = provider_options(cfg, "tensorrt")
    assert trt["device_id"] == 1 and trt["trt_int8_enable"] and trt["trt_fp16_enable"]
    assert trt["trt_engine_cache_enable"] and trt["trt_max_workspace_size"] == 1 << 30
    assert trt["trt_engine_cache_path"] == str(tmp_path / "resnet-serve" / "trt" / "trt")
    cuda = provider_options(cfg, "cuda")
    assert cuda == {
        "device_id": 1,
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "prefer_nhwc": 1,
        "do_copy_in_default_stream": 1,
    }
    assert wanted_providers(read_model_config(resnet18_dir)) == ["cpu"]


def test_registry_and_errors(resnet18_dir: Path) -> None:
    assert set(BACKENDS) <= set(REGISTRY)
    with pytest.raises(ValueError, match="unknown backend"):
        backend_class("nope")
    bad = read_model_config(resnet18_dir).variant("fp16-cpu", backend="eager", precision="fp16")
    with pytest.raises(ValueError, match="CUDA"):
        create_backend(bad).load()
    missing = read_model_config(resnet18_dir).variant("int8", precision="int8")
    with pytest.raises(KeyError, match="onnx-int8"):
        create_backend(missing).load()


def test_serving_core_does_not_import_torch_or_openvino() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import app.main, app.backends, app.backends.onnxruntime, app.cli, "
        "app.backends.openvino, app.threads; "
        "from app.backends import backend_class; backend_class('openvino'); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'openvino' not in sys.modules, 'openvino imported'; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", ["onnxruntime", "torchscript", "eager", "openvino"])
def test_each_backend_says_where_its_threads_are(name: str) -> None:
    """Backend.thread_option names a real field of ModelConfig (the thread budget sets it)."""
    from app.config import ModelConfig

    option = backend_class(name).thread_option
    assert option is not None, f"{name} has an inference-thread option"
    section, field = option
    section_type = ModelConfig.model_fields[section].annotation
    assert isinstance(section_type, type) and field in section_type.model_fields


def test_default_providers_name_the_backend_not_torch() -> None:
    from app.backends.base import Backend
    from tests.fakes import fake_config

    class Bare(Backend):
        name = "bare"

        def load(self) -> None: ...

        def infer(self, batch: np.ndarray) -> np.ndarray:
            return batch

    assert Bare(fake_config("m")).active_providers() == ["bare-cpu"]
    torchscript = create_backend(fake_config("m").variant("t", backend="torchscript"))
    assert torchscript.active_providers() == ["torch-cpu"]
