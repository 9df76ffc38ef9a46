"""ONNX Runtime backend: CPU, CUDA (IOBinding) and TensorRT execution providers.

The exported graph takes uint8 NHWC and normalises inside, on whichever provider runs it.
Which providers are really active is read back from the session, never assumed:

- a CUDA device needs the CUDA provider active: a CPU-only onnxruntime, or CUDA libraries it
  cannot load, make the model fail to load (never a silent CPU fallback);
- TensorRT is offered only when its library (libnvinfer) loads; when it still cannot start,
  the CUDA+CPU session is built here with the same provider options (ONNX Runtime's own
  fallback would drop them: device 0, no NHWC, default cuDNN search), and the options the
  session really runs with are checked;
- int8 (QDQ) on a CUDA device needs TensorRT: the CUDA provider would run float convolutions
  plus quantise steps, some on the CPU;
- its engine cache lives in a writable cache directory, never inside a (read-only) model
  directory unless configured so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from app.backends.base import Backend, Candidate
from app.config import ModelConfig

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
CPU, CUDA, TRT = (PROVIDER_NAMES[k] for k in ("cpu", "cuda", "tensorrt"))
# TensorRT 10 is what onnxruntime-gpu 1.2x/1.3x links against; later majors are tried too.
NVINFER_SONAMES = ("libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so")


def wanted_providers(config: ModelConfig) -> list[str]:
    """Providers asked for, with the fallbacks each implies, CPU always last."""
    wanted: list[str] = list(config.onnxruntime.providers) or (
        ["cuda"] if config.is_cuda else ["cpu"]
    )
    if "tensorrt" in wanted and "cuda" not in wanted:
        wanted.insert(wanted.index("tensorrt") + 1, "cuda")
    if "cpu" not in wanted:
        wanted.append("cpu")
    return wanted


def find_tensorrt() -> str | None:
    """The TensorRT library (libnvinfer) this process can load, or None. onnxruntime-gpu always
    lists the TensorRT provider, whether or not TensorRT is installed."""
    candidates: list[str] = []
    found = ctypes.util.find_library("nvinfer")
    if found:
        candidates.append(found)
    spec = importlib.util.find_spec("tensorrt_libs")  # NVIDIA's TensorRT wheels put it here
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(glob.glob(os.path.join(folder, "libnvinfer.so.*")))
    candidates += NVINFER_SONAMES
    for name in candidates:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def engine_cache_dir(config: ModelConfig) -> Path:
    """Where TensorRT keeps its engines and timing cache for this model.

    `onnxruntime.tensorrt.engine_cache_dir` when set (relative: to the model directory) and
    writable; otherwise <$XDG_CACHE_HOME or ~/.cache>/resnet-serve/trt/<model>, else the same
    under the temp directory. A read-only model directory never fails the load."""
    leaf = Path("resnet-serve", "trt", config.name)
    candidates: list[Path] = []
    configured = config.onnxruntime.tensorrt.engine_cache_dir
    if configured:
        path = Path(configured).expanduser()
        if not path.is_absolute() and config.directory is not None:
            path = config.directory / path
        candidates.append(path)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        candidates.append(Path(xdg) / leaf)
    candidates.append(Path.home() / ".cache" / leaf)
    candidates.append(Path(tempfile.gettempdir()) / leaf)
    for path in candidates:
        if _writable_dir(path):
            if configured and path != candidates[0]:
                log.warning(
                    "model %s: TensorRT cache %s is not writable; using %s",
                    config.name,
                    candidates[0],
                    path,
                )
            return path
    raise RuntimeError(f"no writable directory for TensorRT's cache among {candidates}")


def device_id(config: ModelConfig) -> int:
    return int(config.device.split(":")[1]) if config.is_cuda else 0


def engine_prefix(config: ModelConfig) -> str:
    """The served file's identity (size and modification time) as TensorRT's engine prefix."""
    key = OnnxRuntimeBackend.file_key(config.precision)
    if key not in config.files:
        return "resnet_serve"
    path = config.path_of(key)
    try:
        st = path.stat()
    except OSError:  # no file yet: load() says so
        return "resnet_serve"
    return f"resnet_serve_{st.st_size:x}_{st.st_mtime_ns:x}"


def provider_options(config: ModelConfig, short: str) -> dict[str, Any]:
    if short == "cuda":
        cuda = config.onnxruntime.cuda
        return {
            "device_id": device_id(config),
            "cudnn_conv_algo_search": cuda.cudnn_conv_algo_search,
            "prefer_nhwc": int(cuda.prefer_nhwc),
            "do_copy_in_default_stream": 1,
        }
    if short == "tensorrt":
        trt = config.onnxruntime.tensorrt
        cache = str(engine_cache_dir(config))
        return {
            "device_id": device_id(config),
            "trt_fp16_enable": trt.fp16,
            "trt_int8_enable": trt.int8,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            # TensorRT's engine id hashes the graph, not the weights: a file rewritten in place
            # (a reload with new weights) must not find the old engine
            "trt_engine_cache_prefix": engine_prefix(config),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            "trt_max_workspace_size": trt.workspace_size,
        }
    return {}


def plan_providers(
    config: ModelConfig, available: set[str], tensorrt_lib: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """(provider, options) to ask the session for, in order. Refuses what cannot run as
    configured: a CUDA device without the CUDA provider, int8 on CUDA without TensorRT."""
    wanted = wanted_providers(config)
    gpu_asked = set(config.onnxruntime.providers) & {"cuda", "tensorrt"}
    if gpu_asked and not config.is_cuda:
        raise ValueError(
            f"providers {sorted(gpu_asked)} need a CUDA device; set device to 'cuda:N'"
        )
    if config.is_cuda and CUDA not in available:
        raise RuntimeError(
            f"device {config.device!r} needs onnxruntime's CUDAExecutionProvider, but this "
            f"onnxruntime has only {', '.join(sorted(available))}: install onnxruntime-gpu "
            f"(not beside onnxruntime), or set device to 'cpu'"
        )
    if config.is_cuda and "cuda" not in wanted[:2]:
        raise ValueError(f"device {config.device!r} with providers {wanted}: list cuda")
    providers: list[tuple[str, dict[str, Any]]] = []
    for short in wanted:
        full = PROVIDER_NAMES[short]
        if short == "tensorrt" and (full not in available or tensorrt_lib is None):
            why = (
                "this onnxruntime has no TensorRT provider"
                if full not in available
                else "its library (libnvinfer) is not found on this machine"
            )
            log.warning("model %s: TensorRT asked for, but %s; running on CUDA", config.name, why)
            continue
        if full in available:
            providers.append((full, provider_options(config, short)))
    if config.precision == "int8" and config.is_cuda and providers[0][0] != TRT:
        raise ValueError(
            "int8 on a CUDA device needs the TensorRT provider (asked for and its library "
            "installed): onnxruntime's CUDA provider runs int8 QDQ models as float convolutions "
            "plus quantise steps, some on the CPU; serve fp16 on CUDA instead"
        )
    return providers


def session_options(ort: Any, config: ModelConfig) -> Any:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = config.onnxruntime.intra_op_threads
    if not threads and config.is_cuda:
        threads = 1  # the GPU runs the graph; a pool of spinning CPU threads per instance is waste
    if threads:
        opts.intra_op_num_threads = threads
    if config.onnxruntime.inter_op_threads:
        opts.inter_op_num_threads = config.onnxruntime.inter_op_threads
    opts.log_severity_level = 3
    if not config.onnxruntime.allow_spinning or config.is_cuda:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if config.onnxruntime.stop_spinning_after_run:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


def check_cuda_options(session: Any, expected: dict[str, Any]) -> None:
    """The CUDA provider runs with the options asked for (ONNX Runtime may drop them)."""
    actual = session.get_provider_options().get(CUDA, {})
    for key in ("device_id", "prefer_nhwc", "cudnn_conv_algo_search"):
        if str(actual.get(key)) != str(expected[key]):
            raise RuntimeError(
                f"onnxruntime's CUDA provider runs with {key}={actual.get(key)!r}, "
                f"not {expected[key]!r} as asked"
            )


def create_session(
    ort: Any, path: str, opts: Any, providers: list[tuple[str, dict[str, Any]]], model: str
) -> Any:
    """The session; if TensorRT was asked for and cannot start, CUDA+CPU with the same options."""

    def build(chosen: list[tuple[str, dict[str, Any]]]) -> Any:
        return ort.InferenceSession(
            path,
            sess_options=opts,
            providers=[p for p, _ in chosen],
            provider_options=[o for _, o in chosen],
        )

    if providers[0][0] != TRT:
        return build(providers)
    try:
        session = build(providers)
    except Exception as exc:  # ONNX Runtime's own fallback may also be off
        log.warning("model %s: TensorRT could not start (%s); building CUDA+CPU", model, exc)
        return build(providers[1:])
    if session.get_providers()[:1] == [TRT]:
        return session
    log.warning(
        "model %s: TensorRT could not start (session runs %s); rebuilding CUDA+CPU with the "
        "configured options",
        model,
        session.get_providers(),
    )
    del session
    return build(providers[1:])


def _import_ort() -> Any:
    import onnxruntime

    return onnxruntime


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    thread_option = ("onnxruntime", "intra_op_threads")
    platform = "onnxruntime_onnx"
    supported_precisions = ("fp32", "int8", "fp16")

    @classmethod
    def file_key(cls, precision: str) -> str:
        """onnx, onnx-fp16 or onnx-int8."""
        return "onnx" if precision in ("fp32", "bf16") else f"onnx-{precision}"

    @classmethod
    def check_candidates(cls, config: ModelConfig, device: str) -> list[Candidate]:
        """Each precision on the device's provider, and on TensorRT too where it is built in."""
        import onnxruntime as ort

        cuda = device.startswith("cuda")
        providers = [["cuda"]] if cuda else [["cpu"]]
        if cuda and TRT in ort.get_available_providers() and find_tensorrt() is not None:
            providers.append(["tensorrt"])
        options = config.onnxruntime.model_dump()
        return [
            Candidate(
                precision,
                overrides={"onnxruntime": {**options, "providers": asked}},
                asked="" if asked == ["cpu"] else f"asked {asked[0]}",
                skip=(
                    "int8 on the CUDA provider runs float convolutions and quantise steps, "
                    "some on the CPU: served only through TensorRT"
                    if precision == "int8" and asked == ["cuda"]
                    else None
                ),
            )
            for precision in cls.precisions(config.files)
            for asked in providers
        ]

    @classmethod
    def wide_config(cls, config: ModelConfig, threads: int) -> ModelConfig | None:
        """On the CPU: a second session whose intra-op pool has every core of the model. Its
        threads spin between the operators of a batch and stop the moment it ends
        (stop_spinning_after_run), so they never take a core from the instances, which may
        start right after it. Measured in turn on ResNet-50 int8, 2 cores (busy machine,
        ratios only): two instances started right after a wide batch took 123-128 ms (p50)
        when its threads spun on, 85-99 when they stopped; the wide batch itself was as
        quick as with spinning (fastest 31.0 / 32.5 ms against 29.2 / 32.0) and quicker than
        with no spinning at all (32.7 / 38.6). On a GPU: none (the device runs the batch)."""
        if config.is_cuda or set(config.onnxruntime.providers) - {"cpu"}:
            return None
        options = config.onnxruntime.model_copy(
            update={"intra_op_threads": threads, "stop_spinning_after_run": True}
        )
        return config.model_copy(update={"onnxruntime": options})

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._session: Any = None
        self._providers: list[str] = []
        self._io_binding = False
        self._input = "images"
        self._output = "logits"

    def load(self) -> None:
        ort = _import_ort()
        cfg = self.config
        if cfg.precision == "bf16":
            raise ValueError("onnxruntime serves fp32, fp16 or int8 models, not bf16")
        path = cfg.path_of(self.file_key(cfg.precision))
        if cfg.is_cuda and hasattr(ort, "preload_dlls"):
            try:  # onnxruntime-gpu finds CUDA and cuDNN in torch's wheels this way
                ort.preload_dlls()
            except Exception as exc:
                log.debug("onnxruntime.preload_dlls() failed: %s", exc)
        available = set(ort.get_available_providers())
        trt_lib = find_tensorrt() if cfg.is_cuda and TRT in available else None
        providers = plan_providers(cfg, available, trt_lib)
        self._session = create_session(
            ort, str(path), session_options(ort, cfg), providers, cfg.name
        )
        self._providers = list(self._session.get_providers())
        if cfg.is_cuda:
            if self._providers[0] not in (TRT, CUDA):
                raise RuntimeError(
                    f"device {cfg.device!r}: onnxruntime could not start the CUDA provider "
                    f"(session runs {self._providers}); is the CUDA/cuDNN runtime it needs "
                    f"installed? (onnxruntime.preload_dlls() loads torch's)"
                )
            if cfg.precision == "int8" and self._providers[0] != TRT:
                raise RuntimeError("int8 on CUDA needs TensorRT, which could not start")
            check_cuda_options(self._session, provider_options(cfg, "cuda"))
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        self._input, self._output = inputs[0].name, outputs[0].name
        if inputs[0].type != "tensor(uint8)":
            raise ValueError(f"{path} takes {inputs[0].type}; resnet-serve exports take uint8 NHWC")
        self._io_binding = self._providers[0] != CPU and cfg.onnxruntime.cuda.use_io_binding
        log.info("model %s: onnxruntime providers active: %s", cfg.name, self._providers)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._io_binding:
            binding = self._session.io_binding()
            binding.bind_cpu_input(self._input, np.ascontiguousarray(batch))
            binding.bind_output(self._output, "cuda", device_id(self.config))
            self._session.run_with_iobinding(binding)
            out: np.ndarray = binding.copy_outputs_to_cpu()[0]
            return out
        result: np.ndarray = self._session.run([self._output], {self._input: batch})[0]
        return result

    def active_device(self) -> str:
        return "cpu" if self._providers[:1] == [CPU] else self.config.device

    def active_providers(self) -> list[str]:
        return list(self._providers)

    def details(self) -> dict[str, Any]:
        return {"io_binding": self._io_binding}

    def close(self) -> None:
        self._session = None
