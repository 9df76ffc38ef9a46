"""The ONNX Runtime backend's GPU decisions, on a machine without a GPU.

The CUDA and TensorRT providers cannot run here, so `FakeOrt` stands in for onnxruntime-gpu
where a test needs them: it lists the GPU providers and behaves as onnxruntime does when
TensorRT cannot start (its own fallback: CUDA+CPU with default options, device 0). The real
(CPU) onnxruntime is used wherever it can answer: session options, the refusal without CUDA.
"""

from __future__ import annotations

import ctypes.util
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnxruntime
import pytest

from app.backends import create_backend
from app.backends import onnxruntime as ortb
from app.config import ModelConfig

CPU, CUDA, TRT = ortb.CPU, ortb.CUDA, ortb.TRT


class FakeSession:
    def __init__(self, ort: FakeOrt, providers: list[str], options: list[dict[str, Any]]):
        self.ort = ort
        if TRT in providers and ort.trt_fails == "raise":
            raise RuntimeError("TensorRT EP could not be created")
        if TRT in providers and ort.trt_fails == "fallback":
            # onnxruntime's own fallback: CUDA + CPU, provider options dropped
            providers, options = [CUDA, CPU], [{}, {}]
        self.providers = providers
        self.options = {
            p: {k: str(v) for k, v in {**FakeOrt.DEFAULTS.get(p, {}), **o}.items()}
            for p, o in zip(providers, options, strict=True)
        }

    def get_providers(self) -> list[str]:
        return list(self.providers)

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return self.options

    def get_inputs(self) -> list[Any]:
        return [SimpleNamespace(name="images", type="tensor(uint8)")]

    def get_outputs(self) -> list[Any]:
        return [SimpleNamespace(name="logits", type="tensor(float)")]


class FakeOrt:
    """onnxruntime-gpu as far as the backend's load() sees it."""

    DEFAULTS = {CUDA: {"device_id": 0, "prefer_nhwc": 0, "cudnn_conv_algo_search": "EXHAUSTIVE"}}
    SessionOptions = onnxruntime.SessionOptions
    GraphOptimizationLevel = onnxruntime.GraphOptimizationLevel

    def __init__(self, trt_fails: str | None = None) -> None:
        self.trt_fails = trt_fails
        self.sessions: list[FakeSession] = []
        self.attempts: list[list[str]] = []

    def get_available_providers(self) -> list[str]:
        return [TRT, CUDA, CPU]

    def InferenceSession(
        self, path: str, sess_options: Any, providers: list[str], provider_options: list[Any]
    ) -> FakeSession:
        self.attempts.append(list(providers))
        session = FakeSession(self, providers, provider_options)
        self.sessions.append(session)
        return session


def gpu_config(tmp_path: Path, **overrides: Any) -> ModelConfig:
    data: dict[str, Any] = {
        "name": "m",
        "backend": "onnxruntime",
        "device": "cuda:1",
        "files": {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"},
    }
    data.update(overrides)
    cfg = ModelConfig.model_validate(data)
    cfg.directory = tmp_path / "models" / "m"
    cfg.directory.mkdir(parents=True)
    return cfg


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.mark.parametrize("asked", [[], ["cuda"], ["tensorrt"]])
def test_a_cuda_device_without_the_cuda_provider_refuses_to_load(
    asked: list[str], tmp_path: Path
) -> None:
    if CUDA in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    cfg = gpu_config(tmp_path, device="cuda:0", onnxruntime={"providers": asked})
    with pytest.raises(RuntimeError, match="needs onnxruntime's CUDAExecutionProvider"):
        create_backend(cfg).load()


def test_tensorrt_is_not_offered_without_its_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_home: Path
) -> None:
    fake = FakeOrt()
    monkeypatch.setattr(ortb, "_import_ort", lambda: fake)
    monkeypatch.setattr(ortb, "find_tensorrt", lambda: None)
    backend = create_backend(gpu_config(tmp_path, onnxruntime={"providers": ["tensorrt"]}))
    backend.load()
    assert fake.attempts == [[CUDA, CPU]]
    assert backend.info().providers == [CUDA, CPU] and backend.info().device == "cuda:1"
    assert not cache_home.exists(), "no TensorRT cache is made when TensorRT cannot run"


@pytest.mark.parametrize("how", ["fallback", "raise"])
def test_when_tensorrt_cannot_start_cuda_keeps_its_options(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_home: Path
) -> None:
    fake = FakeOrt(trt_fails=how)
    monkeypatch.setattr(ortb, "_import_ort", lambda: fake)
    monkeypatch.setattr(ortb, "find_tensorrt", lambda: "libnvinfer.so.10")
    cfg = gpu_config(tmp_path, onnxruntime={"providers": ["tensorrt"]})
    # type-ignore reason: directory is Optional; set, since the config was read from a folder
    cfg.directory.chmod(0o555)  # type: ignore[union-attr]
    backend = create_backend(cfg)
    backend.load()
    assert fake.attempts == [[TRT, CUDA, CPU], [CUDA, CPU]]
    options = fake.sessions[-1].get_provider_options()[CUDA]
    assert options["device_id"] == "1" and options["prefer_nhwc"] == "1"
    assert options["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert backend.info().providers == [CUDA, CPU]
    # the engine cache went to the writable cache, not the (read-only) model directory
    trt_options = ortb.provider_options(cfg, "tensorrt")
    assert trt_options["trt_engine_cache_path"] == str(cache_home / "resnet-serve" / "trt" / "m")


def test_tensorrt_running_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_home: Path
) -> None:
    fake = FakeOrt()
    monkeypatch.setattr(ortb, "_import_ort", lambda: fake)
    monkeypatch.setattr(ortb, "find_tensorrt", lambda: "libnvinfer.so.10")
    backend = create_backend(
        gpu_config(tmp_path, precision="int8", onnxruntime={"providers": ["tensorrt"]})
    )
    backend.load()
    assert fake.attempts == [[TRT, CUDA, CPU]] and backend.info().providers[0] == TRT


def test_dropped_cuda_options_are_caught() -> None:
    session = SimpleNamespace(
        get_provider_options=lambda: {CUDA: {"device_id": "0", "prefer_nhwc": "1"}}
    )
    expected = {"device_id": 1, "prefer_nhwc": 1, "cudnn_conv_algo_search": "EXHAUSTIVE"}
    with pytest.raises(RuntimeError, match="device_id='0', not 1"):
        ortb.check_cuda_options(session, expected)


def test_int8_on_cuda_needs_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    available = {TRT, CUDA, CPU}
    int8 = gpu_config(tmp_path, precision="int8")
    with pytest.raises(ValueError, match="int8 on a CUDA device needs the TensorRT provider"):
        ortb.plan_providers(int8, available, tensorrt_lib="libnvinfer.so.10")  # cuda only
    trt = int8.variant("t", onnxruntime={"providers": ["tensorrt"]})
    with pytest.raises(ValueError, match="int8 on a CUDA device"):
        ortb.plan_providers(trt, available, tensorrt_lib=None)  # TensorRT not installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    planned = ortb.plan_providers(trt, available, tensorrt_lib="libnvinfer.so.10")
    assert [p for p, _ in planned] == [TRT, CUDA, CPU]
    # int8 on the CPU is fine
    cpu = int8.variant("c", device="cpu")
    assert [p for p, _ in ortb.plan_providers(cpu, {CPU}, None)] == [CPU]


def test_gpu_sessions_use_one_intra_op_thread(tmp_path: Path) -> None:
    gpu = ortb.session_options(onnxruntime, gpu_config(tmp_path))
    assert gpu.intra_op_num_threads == 1
    cpu = ortb.session_options(onnxruntime, gpu_config(tmp_path / "x", device="cpu"))
    assert cpu.intra_op_num_threads == 0  # onnxruntime decides
    chosen = gpu_config(tmp_path / "y", onnxruntime={"intra_op_threads": 3})
    assert ortb.session_options(onnxruntime, chosen).intra_op_num_threads == 3


def test_engine_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = gpu_config(tmp_path)
    assert ortb.engine_cache_dir(cfg) == tmp_path / "xdg" / "resnet-serve" / "trt" / "m"
    # configured, relative: under the model directory
    mine = cfg.variant("m", onnxruntime={"tensorrt": {"engine_cache_dir": "trt-cache"}})
    # type-ignore reason: directory is Optional; set, since the config was read from a folder
    assert ortb.engine_cache_dir(mine) == cfg.directory / "trt-cache"  # type: ignore[operator]
    # configured but not writable (a file stands in its way; root ignores modes): the cache
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = cfg.variant("m", onnxruntime={"tensorrt": {"engine_cache_dir": str(blocker / "t")}})
    assert ortb.engine_cache_dir(bad) == tmp_path / "xdg" / "resnet-serve" / "trt" / "m"
    # no XDG_CACHE_HOME and a HOME that cannot be written (the container's /nonexistent)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(blocker))
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path / "tmp"))
    assert ortb.engine_cache_dir(cfg) == tmp_path / "tmp" / "resnet-serve" / "trt" / "m"


def test_find_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ortb, "NVINFER_SONAMES", ("libnvinfer-not-here.so.10",))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert ortb.find_tensorrt() is None
    # a loadable library found under that name is taken (a real shared library stands in)
    capi = Path(onnxruntime.__file__).parent / "capi"
    stand_in = next(iter(sorted(capi.glob("libonnxruntime_providers_shared.so*"))), None)
    if stand_in is None:
        pytest.skip("no shared library to stand in for libnvinfer")
    fake_lib = tmp_path / "libnvinfer.so.10"
    shutil.copy(stand_in, fake_lib)
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: str(fake_lib) if name == "nvinfer" else None
    )
    assert ortb.find_tensorrt() == str(fake_lib)


def test_tensorrt_engines_are_keyed_by_the_file_not_only_the_graph(tmp_path: Path) -> None:
    """TensorRT's engine id hashes the graph, not the weights: a file rewritten in place (a
    reload with new weights) gets another engine prefix, so the old engine is never reused."""
    cfg = gpu_config(tmp_path)
    path = cfg.path_of("onnx")
    path.write_bytes(b"an onnx graph")
    before = ortb.provider_options(cfg, "tensorrt")["trt_engine_cache_prefix"]
    assert before == ortb.provider_options(cfg, "tensorrt")["trt_engine_cache_prefix"]
    path.write_bytes(path.read_bytes() + b"\0")  # new contents, same name
    assert ortb.provider_options(cfg, "tensorrt")["trt_engine_cache_prefix"] != before
