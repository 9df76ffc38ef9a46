"""What the V2 protocol says about a served model: metadata, Triton-style config and statistics.
Pure functions of a ServedModel, no web framework.

The model takes what every backend takes, uint8 NHWC pixels, as the input `images`; or encoded
image files (JPEG, PNG, ...) as the BYTES input `image_bytes`, which the server decodes, resizes
and crops exactly as /v1 classify does. A request sends exactly one of the two. Metadata and
config declare `images` alone as the model's input, with `image_bytes` under `parameters`:
Triton's tools (perf_analyzer) send every input declared, even those marked optional, and the
V2 protocol has no way to say "one of". Outputs: raw `logits` and their softmax,
`probabilities` (the classification extension on `probabilities` gives the scores /v1 classify
reports).
"""

from __future__ import annotations

from typing import Any

from app.backends import Backend, known_backend
from app.config import ModelConfig
from app.metrics import ModelStats
from app.repository import ServedModel

INPUT_PIXELS = "images"
INPUT_FILES = "image_bytes"
OUTPUT_LOGITS = "logits"
OUTPUT_PROBS = "probabilities"
OUTPUTS = (OUTPUT_LOGITS, OUTPUT_PROBS)
FILES_DESCRIPTION = (
    f"instead of {INPUT_PIXELS!r}: one encoded image file (JPEG, PNG, WebP, ...) per row, "
    "decoded, resized and centre-cropped by the server as /v1 classify does"
)

EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "statistics",
    "model_configuration",
    "model_repository",
    "trace",  # app/api/http/trace.py: the sampler of the OpenTelemetry traces
]


def backend_of(cfg: ModelConfig) -> type[Backend] | None:
    """The class of the model's backend, which knows its platform name and its files; None
    when it cannot be had: such a model failed to load and says why, and its metadata still
    answers."""
    return known_backend(cfg.backend)


def platform(cfg: ModelConfig) -> str:
    cls = backend_of(cfg)
    return cls.platform if cls is not None else cfg.backend


def model_file(cfg: ModelConfig) -> str:
    cls = backend_of(cfg)
    return cls.model_file(cfg) if cls is not None else ""


def model_metadata(model: ServedModel) -> dict[str, Any]:
    cfg = model.config
    crop, classes = cfg.input.crop, cfg.num_classes
    return {
        "name": cfg.name,
        "versions": [cfg.version],
        "platform": platform(cfg),
        "inputs": [{"name": INPUT_PIXELS, "datatype": "UINT8", "shape": [-1, crop, crop, 3]}],
        "outputs": [
            {"name": OUTPUT_LOGITS, "datatype": "FP32", "shape": [-1, classes]},
            {"name": OUTPUT_PROBS, "datatype": "FP32", "shape": [-1, classes]},
        ],
        "parameters": {
            "alternative_inputs": [
                {
                    "name": INPUT_FILES,
                    "datatype": "BYTES",
                    "shape": [-1, 1],
                    "description": FILES_DESCRIPTION,
                }
            ],
            **execution(model),
        },
    }


def execution(model: ServedModel) -> dict[str, Any]:
    """What really runs the model, read back from the loaded backend (as /v1/models reports):
    the execution providers and the precision in force."""
    info = model.info
    if info is None:
        return {}
    return {"providers": list(info.providers), "execution_precision": info.precision}


def version_policy(served_versions: list[str]) -> dict[str, Any]:
    if len(served_versions) > 1:  # version folders: numbered
        return {"specific": {"versions": sorted(int(v) for v in served_versions)}}
    return {"latest": {"num_versions": 1}}


def model_config(
    model: ServedModel, request_timeout_ms: float, served_versions: list[str] | None = None
) -> dict[str, Any]:
    """Triton's ModelConfig as its HTTP API prints it: what perf_analyzer and Triton's clients
    read to shape their requests (max_batch_size, and dims without the batch axis).
    `served_versions`: every version of the name served now; several (only version folders,
    numbered) are reported as the `specific` versions served, one as `latest` 1."""
    cfg = model.config
    crop, classes, b = cfg.input.crop, cfg.num_classes, cfg.batching

    def tensor(name: str, dtype: str, dims: list[int], fmt: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "data_type": dtype, "dims": dims}
        if fmt is not None:
            entry.update(
                format=fmt, is_shape_tensor=False, allow_ragged_batch=False, optional=False
            )
        else:
            entry.update(label_filename="", is_shape_tensor=False)
        return entry

    gpus = [int(cfg.device.split(":")[1])] if cfg.is_cuda else []
    return {
        "name": cfg.name,
        "platform": platform(cfg),
        "backend": cfg.backend,
        "version_policy": version_policy(served_versions or [cfg.version]),
        "max_batch_size": b.max_batch_size,
        "input": [tensor(INPUT_PIXELS, "TYPE_UINT8", [crop, crop, 3], "FORMAT_NHWC")],
        "output": [
            tensor(OUTPUT_LOGITS, "TYPE_FP32", [classes]),
            tensor(OUTPUT_PROBS, "TYPE_FP32", [classes]),
        ],
        "batch_input": [],
        "batch_output": [],
        "dynamic_batching": {
            "preferred_batch_size": b.bucket_sizes() if cfg.pads_to_bucket else [],
            "max_queue_delay_microseconds": int(b.max_queue_delay_ms * 1000),
            "preserve_ordering": False,
            "priority_levels": 0,
            "default_priority_level": 0,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": int(request_timeout_ms * 1000),
                "allow_timeout_override": True,
                "max_queue_size": b.max_queue_size,
            },
            "priority_queue_policy": {},
        },
        "instance_group": [
            {
                "name": f"{cfg.name}_0",
                "kind": "KIND_GPU" if cfg.is_cuda else "KIND_CPU",
                "count": b.instances,
                "gpus": gpus,
                "secondary_devices": [],
                "profile": [],
                "passive": False,
                "host_policy": "",
            }
        ],
        "default_model_filename": model_file(cfg),
        "cc_model_filenames": {},
        "metric_tags": {},
        "parameters": {
            "precision": {"string_value": cfg.precision},
            "device": {"string_value": cfg.device},
            **{
                k: {"string_value": ", ".join(v) if isinstance(v, list) else v}
                for k, v in execution(model).items()
            },
            "alternative_input": {
                "string_value": f"{INPUT_FILES} TYPE_STRING [1]: {FILES_DESCRIPTION}"
            },
        },
        "model_warmup": [],
    }


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def model_statistics(model: ServedModel) -> dict[str, Any]:
    """One entry of Triton's `model_stats`, from the same measurements as /metrics."""
    s: ModelStats = model.telemetry.snapshot()
    return {
        "name": model.name,
        "version": model.config.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success_count, s.success_ns),
            "fail": _duration(s.fail_count, s.fail_ns),
            "queue": _duration(s.queue_count, s.queue_ns),
            "compute_input": _duration(s.compute_count, s.compute_input_ns),
            "compute_infer": _duration(s.compute_count, s.compute_infer_ns),
            "compute_output": _duration(s.compute_count, s.compute_output_ns),
            "cache_hit": _duration(0, 0),
            "cache_miss": _duration(0, 0),
        },
        "response_stats": {},
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(n, input_ns),
                "compute_infer": _duration(n, infer_ns),
                "compute_output": _duration(n, output_ns),
            }
            for size, (n, input_ns, infer_ns, output_ns) in sorted(s.batches.items())
        ],
        "memory_usage": [],
    }
