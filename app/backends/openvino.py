"""OpenVINO backend (CPU): the same exported ONNX files as ONNX Runtime, compiled by OpenVINO.

Precisions, each from the model's own files:

- fp32: model.onnx with INFERENCE_PRECISION_HINT f32 (true f32; OpenVINO's default on a CPU
  with bf16 instructions would be bf16);
- bf16: model.onnx executed in bf16 (INFERENCE_PRECISION_HINT bf16), only where the CPU has
  native bf16 (OPTIMIZATION_CAPABILITIES lists BF16: AVX-512 BF16 or AMX); refused elsewhere,
  since OpenVINO would silently run f32 instead;
- int8: model.int8.onnx (the QDQ export): OpenVINO fuses the Q/DQ pairs into int8 kernels; the
  layers left in floating point run in f32, as ONNX Runtime's do.

What runs is read back from the compiled model, never assumed: the inference precision in
force, and the precision each convolution really executes in (the runtime graph's
runtimePrecision), reported as `providers` and `details` in /v1/models, the V2 model
configuration and the metric resnet_serve_model_info.

Streams and requests (openvino.performance_hint): by default (THROUGHPUT) the instances of a
model share one compiled model with one stream per instance (NUM_STREAMS = instances, each of
the thread budget's threads per instance) and each instance owns one synchronous infer request,
since the batcher gives an instance one batch at a time: one copy of the weights for all. The
alternative, LATENCY, compiles one single-stream model per instance. Batch shapes: one compiled
model with a dynamic batch axis (default) or one per warmed batch size, padded up. Why
these defaults (A/B runs): docs/benchmarks.md, "Design choices of the OpenVINO backend".
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from app.backends.base import Backend, BackendInfo
from app.config import ModelConfig

log = logging.getLogger(__name__)

# config precision -> (file key, INFERENCE_PRECISION_HINT)
PRECISIONS: dict[str, tuple[str, str]] = {
    "fp32": ("onnx", "f32"),
    "bf16": ("onnx", "bf16"),
    "int8": ("onnx-int8", "f32"),
}
# OpenVINO element type names -> this project's precision names
TYPE_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}


def cpu_capabilities(core: Any) -> list[str]:
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def element_type_name(value: Any) -> str:
    """'f32', 'bf16', ... from an ov.Type or its string."""
    name = getattr(value, "get_type_name", None)
    return str(name() if callable(name) else value).lower()


def openvino_unavailable(precision: str, device: str) -> str | None:
    """Why the openvino backend cannot run `precision` on `device` here (None: it can)."""
    if device.startswith("cuda"):
        return "the openvino backend runs on the CPU (check --device cpu)"
    try:
        import openvino as ov
    except ImportError:
        return "openvino is not installed (pip install '.[openvino]')"
    if precision == "bf16":
        caps = cpu_capabilities(ov.Core())
        if "BF16" not in caps:
            return f"this CPU has no native bf16 (OpenVINO capabilities: {', '.join(caps)})"
    return None


class OpenVinoBackend(Backend):
    name = "openvino"
    thread_option = ("openvino", "threads")
    # Triton's OpenVINO backend: model config `backend: "openvino"`, metadata platform "openvino"
    platform = "openvino"
    supported_precisions = ("fp32", "bf16", "int8")

    @classmethod
    def file_key(cls, precision: str) -> str:
        """The ONNX exports: model.onnx for fp32 and bf16 (bf16 is an execution precision),
        model.int8.onnx (QDQ) for int8."""
        return PRECISIONS[precision][0] if precision in PRECISIONS else f"onnx-{precision}"

    @classmethod
    def unavailable(cls, precision: str, device: str) -> str | None:
        return openvino_unavailable(precision, device)

    @classmethod
    def wide_config(cls, config: ModelConfig, threads: int) -> ModelConfig | None:
        """Its own model compiled with the LATENCY hint: one stream of every core of the
        model (INFERENCE_NUM_THREADS), beside the instances' THROUGHPUT model."""
        if config.is_cuda:
            return None
        options = config.openvino.model_copy(
            update={"performance_hint": "LATENCY", "threads": threads}
        )
        return config.model_copy(update={"openvino": options})

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._compiled: dict[int, Any] = {}  # batch size (0: dynamic) -> compiled model
        self._requests: dict[int, Any] = {}  # batch size (0: dynamic) -> its infer request
        self._buckets: list[int] = []
        self._in_force: dict[str, Any] = {}
        self._shared_key: tuple[Any, ...] | None = None

    def load(self) -> None:
        import openvino as ov

        cfg = self.config
        opts = cfg.openvino
        if cfg.is_cuda:
            raise ValueError(
                f"backend 'openvino' serves on the CPU; device is {cfg.device!r} (set 'cpu')"
            )
        if cfg.precision not in PRECISIONS:
            raise ValueError(
                f"openvino serves fp32, bf16 or int8, not {cfg.precision} "
                "(fp16 is a GPU precision: use onnxruntime on a CUDA device)"
            )
        _, hint = PRECISIONS[cfg.precision]
        core = ov.Core()
        caps = cpu_capabilities(core)
        if cfg.precision == "bf16" and "BF16" not in caps:
            raise ValueError(
                "precision bf16 needs a CPU with native bf16 instructions (AVX-512 BF16 or "
                f"AMX); this CPU's OpenVINO capabilities are {', '.join(caps)}: serve fp32 or "
                "int8 instead"
            )
        path = cfg.path_of(self.file_key(cfg.precision))
        properties: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": opts.performance_hint,
            "ENABLE_CPU_PINNING": opts.cpu_pinning,
        }
        instances = max(1, cfg.batching.instances)
        if opts.performance_hint == "LATENCY":  # this instance's own model, one stream
            properties["NUM_STREAMS"] = 1
            if opts.threads:
                properties["INFERENCE_NUM_THREADS"] = opts.threads
        else:  # one model shared by the instances: a stream each, their threads together
            properties["NUM_STREAMS"] = instances
            if opts.threads:
                properties["INFERENCE_NUM_THREADS"] = opts.threads * instances
        if opts.batch_shapes == "buckets":
            self._buckets = cfg.batching.bucket_sizes()
        shapes = self._buckets or [0]
        if opts.performance_hint == "THROUGHPUT":
            # the file's identity too: a reload of a file rewritten in place (new weights) must
            # compile anew while the old instances still hold the old model
            st = os.stat(path)
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            key = (cfg.name, str(path), identity, repr(sorted(properties.items())), tuple(shapes))
            self._shared_key = key
            self._compiled = _acquire_shared(key, lambda: self._compile(core, path, properties))
        else:
            self._compiled = self._compile(core, path, properties)
        self._requests = {n: c.create_infer_request() for n, c in self._compiled.items()}
        self._in_force = self._read_back(next(iter(self._compiled.values())), caps)
        log.info(
            "model %s: openvino %s on CPU, inference precision %s, convolutions in %s, "
            "%s thread(s), hint %s, %s batch shapes",
            cfg.name,
            ov.__version__,
            self._in_force["inference_precision"],
            self._in_force["convolution_precisions"],
            self._in_force["inference_num_threads"],
            self._in_force["performance_hint"],
            opts.batch_shapes,
        )
        if cfg.precision == "int8" and "int8" not in self._in_force["convolution_precisions"]:
            log.warning("model %s: int8 asked for, but no convolution runs in int8", cfg.name)

    def _compile(self, core: Any, path: Any, properties: dict[str, Any]) -> dict[int, Any]:
        """Batch size (0: dynamic) -> compiled model."""
        model = core.read_model(str(path))
        inp = model.inputs[0]
        if element_type_name(inp.get_element_type()) != "u8":
            raise ValueError(
                f"{path} takes {inp.get_element_type()}; resnet-serve exports take uint8 NHWC"
            )
        h, w = self.input_shape()[:2]
        compiled: dict[int, Any] = {}
        for n in self._buckets or [0]:
            shaped = model.clone() if self._buckets else model
            shaped.reshape({shaped.inputs[0].get_any_name(): [n or -1, h, w, 3]})
            compiled[n] = core.compile_model(shaped, "CPU", properties)
        return compiled

    def _read_back(self, compiled: Any, caps: list[str]) -> dict[str, Any]:
        """What the compiled model really does (properties and the runtime graph)."""
        convs: Counter[str] = Counter()
        kernels: Counter[str] = Counter()
        for op in compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "layerType" in rt and rt["layerType"].astype(str) == "Convolution":
                precision = rt["runtimePrecision"].astype(str).lower()
                convs[TYPE_NAMES.get(precision, precision)] += 1
                kernels[rt["primitiveType"].astype(str)] += 1
        prop = compiled.get_property
        return {
            "inference_precision": TYPE_NAMES.get(
                element_type_name(prop("INFERENCE_PRECISION_HINT")), "?"
            ),
            "convolution_precisions": dict(sorted(convs.items())),
            "convolution_kernels": dict(sorted(kernels.items())),
            "performance_hint": str(prop("PERFORMANCE_HINT")).rsplit(".", 1)[-1],
            "num_streams": int(prop("NUM_STREAMS")),
            "inference_num_threads": int(prop("INFERENCE_NUM_THREADS")),
            "execution_devices": [str(d) for d in prop("EXECUTION_DEVICES")],
            "batch_shapes": self.config.openvino.batch_shapes,
            "shared_by_instances": self._shared_key is not None,
            "compiled_batch_sizes": self._buckets or "dynamic",
            "cpu_capabilities": caps,
        }

    def infer(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if not self._buckets:
            request = self._requests[0]
            request.infer({0: np.ascontiguousarray(batch)})
            out: np.ndarray = request.get_output_tensor(0).data.copy()
            return out
        size = next((b for b in self._buckets if b >= n), None)
        if size is None:  # more rows than max_batch_size: in chunks of the largest
            top = self._buckets[-1]
            return np.concatenate([self.infer(batch[i : i + top]) for i in range(0, n, top)])
        if size != n:
            padded = np.zeros((size, *batch.shape[1:]), np.uint8)
            padded[:n] = batch
            batch = padded
        request = self._requests[size]
        request.infer({0: np.ascontiguousarray(batch)})
        result: np.ndarray = request.get_output_tensor(0).data[:n].copy()
        return result

    def active_device(self) -> str:
        return "cpu"

    def active_providers(self) -> list[str]:
        """Like ONNX Runtime's providers: what executes, with the precision in force."""
        devices = self._in_force.get("execution_devices") or ["CPU"]
        return [f"OpenVINO:{d}:{self._precision_in_force()}" for d in devices]

    def _precision_in_force(self) -> str:
        if "int8" in self._in_force.get("convolution_precisions", {}):
            return "int8"
        return str(self._in_force.get("inference_precision", self.config.precision))

    def info(self) -> BackendInfo:
        return replace(super().info(), precision=self._precision_in_force())

    def details(self) -> dict[str, Any]:
        return dict(self._in_force)

    def close(self) -> None:
        self._requests.clear()
        self._compiled = {}
        key, self._shared_key = self._shared_key, None
        if key is not None:
            _release_shared(key)


# THROUGHPUT: one compiled model per served model, shared by its instances (each has its own
# infer request, so its own stream). Counted, so the last instance to close releases it.
_shared: dict[tuple[Any, ...], tuple[dict[int, Any], int]] = {}
_shared_lock = threading.Lock()


def _acquire_shared(key: tuple[Any, ...], compile_: Callable[[], dict[int, Any]]) -> dict[int, Any]:
    with _shared_lock:
        if key in _shared:
            compiled, users = _shared[key]
        else:
            compiled, users = compile_(), 0
        _shared[key] = (compiled, users + 1)
        return compiled


def _release_shared(key: tuple[Any, ...]) -> None:
    with _shared_lock:
        compiled, users = _shared.pop(key, ({}, 0))
        if users > 1:
            _shared[key] = (compiled, users - 1)
