"""ONNX Runtime backend: CPU, CUDA (IOBinding) and TensorRT execution providers.

The exported graph takes uint8 NHWC and normalises inside, on whichever provider runs it.
Which providers are really active is read back from the session, never assumed.
"""

from __future__ import annotations

import logging
import os
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


def provider_options(config: ModelConfig, short: str) -> dict[str, Any]:
    device_id = int(config.device.split(":")[1]) if config.is_cuda else 0
    if short == "cuda":
        cuda = config.onnxruntime.cuda
        return {
            "device_id": device_id,
            "cudnn_conv_algo_search": cuda.cudnn_conv_algo_search,
            "prefer_nhwc": int(cuda.prefer_nhwc),
            "do_copy_in_default_stream": 1,
        }
    if short == "tensorrt":
        trt = config.onnxruntime.tensorrt
        cache = trt.engine_cache_dir
        if config.directory is not None and not os.path.isabs(cache):
            cache = str(config.directory / cache)
        return {
            "device_id": device_id,
            "trt_fp16_enable": trt.fp16,
            "trt_int8_enable": trt.int8,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            "trt_max_workspace_size": trt.workspace_size,
        }
    return {}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
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
        if cuda and "TensorrtExecutionProvider" in ort.get_available_providers():
            providers.append(["tensorrt"])
        options = config.onnxruntime.model_dump()
        return [
            Candidate(
                precision,
                overrides={"onnxruntime": {**options, "providers": asked}},
                asked="" if asked == ["cpu"] else f"asked {asked[0]}",
            )
            for precision in cls.precisions(config.files)
            for asked in providers
        ]

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._session: Any = None
        self._providers: list[str] = []
        self._io_binding = False
        self._input = "images"
        self._output = "logits"

    def load(self) -> None:
        import onnxruntime as ort

        if self.config.precision == "bf16":
            raise ValueError("onnxruntime serves fp32, fp16 or int8 models, not bf16")
        gpu_asked = set(self.config.onnxruntime.providers) & {"cuda", "tensorrt"}
        if gpu_asked and not self.config.is_cuda:
            raise ValueError(
                f"providers {sorted(gpu_asked)} need a CUDA device; set device to 'cuda:N'"
            )
        path = self.config.path_of(self.file_key(self.config.precision))
        if self.config.is_cuda and hasattr(ort, "preload_dlls"):
            try:  # onnxruntime-gpu finds CUDA and cuDNN in torch's wheels this way
                ort.preload_dlls()
            except Exception as exc:
                log.debug("onnxruntime.preload_dlls() failed: %s", exc)

        available = set(ort.get_available_providers())
        providers: list[tuple[str, dict[str, Any]]] = []
        for short in wanted_providers(self.config):
            full = PROVIDER_NAMES[short]
            if full in available:
                providers.append((full, provider_options(self.config, short)))
            else:
                log.warning(
                    "model %s: %s asked for but not in this onnxruntime build (%s); falling back",
                    self.config.name,
                    full,
                    ", ".join(sorted(available)),
                )
        if providers and providers[0][0] == "TensorrtExecutionProvider":
            os.makedirs(providers[0][1]["trt_engine_cache_path"], exist_ok=True)

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.config.onnxruntime.intra_op_threads:
            opts.intra_op_num_threads = self.config.onnxruntime.intra_op_threads
        if self.config.onnxruntime.inter_op_threads:
            opts.inter_op_num_threads = self.config.onnxruntime.inter_op_threads
        opts.log_severity_level = 3
        if not self.config.onnxruntime.allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(path),
            sess_options=opts,
            providers=[p for p, _ in providers],
            provider_options=[o for _, o in providers],
        )
        self._providers = self._session.get_providers()
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        self._input, self._output = inputs[0].name, outputs[0].name
        if inputs[0].type != "tensor(uint8)":
            raise ValueError(f"{path} takes {inputs[0].type}; resnet-serve exports take uint8 NHWC")
        self._io_binding = (
            self._providers[0] != "CPUExecutionProvider"
            and self.config.onnxruntime.cuda.use_io_binding
        )
        asked = [PROVIDER_NAMES[s] for s in wanted_providers(self.config)]
        if self._providers[0] != asked[0]:
            log.warning(
                "model %s: asked for %s, running on %s", self.config.name, asked, self._providers
            )
        log.info("model %s: onnxruntime providers active: %s", self.config.name, self._providers)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._io_binding:
            binding = self._session.io_binding()
            binding.bind_cpu_input(self._input, np.ascontiguousarray(batch))
            binding.bind_output(self._output, "cuda", int(self.config.device.split(":")[1]))
            self._session.run_with_iobinding(binding)
            out: np.ndarray = binding.copy_outputs_to_cpu()[0]
            return out
        result: np.ndarray = self._session.run([self._output], {self._input: batch})[0]
        return result

    def active_device(self) -> str:
        return "cpu" if self._providers[:1] == ["CPUExecutionProvider"] else self.config.device

    def active_providers(self) -> list[str]:
        return list(self._providers)

    def details(self) -> dict[str, Any]:
        return {"io_binding": self._io_binding}

    def close(self) -> None:
        self._session = None
