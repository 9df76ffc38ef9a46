"""Settings: the server's (environment, prefix RESNET_SERVE_) and each model's (config.json).

Nothing here is read at import time: `Settings()` is built by the CLI or by a test and passed
down; the model repository on disk is read by app.model_folders (which builds on this module;
nothing here imports it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Backends are looked up in app.backends.REGISTRY when a model loads (tests add fakes there).
BackendName = str
Precision = Literal["fp32", "fp16", "bf16", "int8"]

CONFIG_FILE = "config.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Settings(BaseSettings):
    """Server-wide settings. Every field can be set as RESNET_SERVE_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="RESNET_SERVE_", extra="ignore")

    models_dir: Path = Field(Path("models"), description="Model repository: one folder per model.")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    log_level: str = Field("info", description="Python log level of the service.")
    # ---- seeing one request (app/observability, docs/observability.md)
    log_format: Literal["auto", "text", "json"] = Field(
        "auto",
        description="Log lines as text or as one JSON object a line (time, level, logger, "
        "message, request_id). auto: text on a terminal, JSON otherwise.",
    )
    access_log: Literal["auto", "on", "off"] = Field(
        "auto",
        description="One line per request (ID, route, model, status, bytes, images, the time "
        "of each phase), replacing uvicorn's. auto: on when the log is JSON.",
    )
    server_timing: bool = Field(
        True,
        description="Send a Server-Timing header (decode, queue, infer, post, total in ms) "
        "with /v1 classify and V2 infer answers; off for users who must not reveal timings.",
    )
    backends: Annotated[list[BackendName], NoDecode] = Field(
        default_factory=list,
        description="Serve every model once per backend listed (besides its own), named "
        "<model>-<backend>, to compare backends side by side.",
    )
    decode_threads: int = Field(
        0,
        ge=0,
        description="Threads that decode and resize images, off the event loop. 0: from the "
        "thread budget (app/threads.py: a quarter of the cores when a model infers on the CPU).",
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1, description="Largest request body (413).")
    max_images_per_request: int = Field(64, ge=1, description="Most images in one request (413).")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest width*height of one image, checked before decoding."
    )
    max_top_k: int = Field(100, ge=1, description="Largest top_k a client may ask for.")
    max_multipart_parts: int = Field(64, ge=1, description="Most parts in a multipart body.")
    max_json_depth: int = Field(64, ge=1, description="Deepest nesting of a JSON body.")
    request_timeout_ms: float = Field(
        30_000, gt=0, description="Deadline of a request; a client may ask for less, not more."
    )
    retry_after_s: int = Field(
        1, ge=1, description="Retry-After sent with 503 when a queue is full."
    )
    shutdown_grace_s: float = Field(
        5.0,
        ge=0,
        description="On SIGTERM: not ready at once, keep accepting this long, then drain.",
    )
    auth_token: str | None = Field(
        None, description="If set, inference and admin endpoints require 'Authorization: Bearer'."
    )
    protect_metrics: bool = Field(False, description="Also require the token for /metrics.")
    workers: int = Field(1, ge=1, description="Server processes sharing the port.")
    # KServe V2 over gRPC (app/api/grpc/service.py), on the same host, in every worker.
    grpc_port: int = Field(8001, ge=0, le=65535, description="V2 gRPC port; 0 turns gRPC off.")
    grpc_max_message_bytes: int | None = Field(
        None, ge=1, description="Largest gRPC message (RESOURCE_EXHAUSTED); default max_body_bytes."
    )
    # ---- hostile clients (app/connections.py, docs/hostile-clients.md)
    keep_alive_timeout_s: float = Field(
        15.0, gt=0, description="Close a kept-alive connection idle this long between requests."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Answer 408 and close when a request's headers are not complete this long "
        "after the connection opened (or the next request's first byte).",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Answer 408 and close when a request body sends nothing for this long.",
    )
    max_connections: int = Field(
        0,
        ge=0,
        description="Open connections per process; past it, new ones get 503 + Retry-After. "
        "0: what the descriptor limit allows (raised to the hard limit at start, minus 64).",
    )
    linger_bytes: int = Field(
        0,
        ge=0,
        description="After an early answer (413, ...) read and discard at most this much of the "
        "unread body before closing, so the client reads the answer. 0: twice max_body_bytes.",
    )
    linger_timeout_s: float = Field(
        10.0, ge=0, description="...and for at most this long (lingering close)."
    )
    # ---- costly images (app/decode_limits.py, docs/hostile-clients.md)
    max_full_decode_pixels: int = Field(
        16_777_216,
        ge=1,
        description="Largest width*height of a PNG, WebP, GIF or BMP: formats decoded at full "
        "size (JPEGs are decoded at reduced size and have max_image_pixels).",
    )
    max_jpeg_scans: int = Field(
        32, ge=1, description="Most scans in a progressive JPEG (each is a pass over the image)."
    )
    max_png_chunks: int = Field(
        8192, ge=3, description="Most chunks in a PNG (each costs a loop turn in the decoder)."
    )
    max_exif_bytes: int = Field(
        1 << 20, ge=0, description="Largest EXIF block; only its orientation is read."
    )
    max_exif_entries: int = Field(
        512, ge=0, description="Most entries in an EXIF block's first directory."
    )
    decode_queue_size: int = Field(
        256,
        ge=0,
        description="Images waiting for a decode thread beyond those decoding; more get 503.",
    )
    decode_costly_cost: float = Field(
        40.0,
        gt=0,
        description="An image whose estimated decode cost (megapixels x format factor, in "
        "baseline-JPEG megapixels) is above this is costly: costly images take at most half "
        "the decode threads, so cheap ones always find one.",
    )
    decode_costly_queue: int = Field(
        4, ge=0, description="Costly images waiting for a costly slot; more get 503 at once."
    )
    model_control: Literal["none", "explicit"] = Field(
        "none",
        description="Model repository API (Triton's --model-control-mode): 'none' serves what "
        "is in the repository at start and refuses load/unload (403); 'explicit' allows "
        "POST /v2/repository/models/{name}/load and /unload (reload without downtime).",
    )
    ui: bool = Field(
        True,
        description="Serve the web page (GET / and /status: classify dropped images, live "
        "server figures) and its statistics (GET /v1/status). false: the API only.",
    )
    backend_plugins: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Extra backends, 'name=module:Class,...': a backend is one file plus this.",
    )

    @field_validator("backend_plugins", mode="before")
    @classmethod
    def _split_plugins(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("backend_plugins must look like 'name=module:Class,...'")
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    @field_validator("access_log", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        """true/false (1/0, yes/no) as on/off, as for the boolean settings."""
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {
                "true": "on",
                "1": "on",
                "yes": "on",
                "false": "off",
                "0": "off",
                "no": "off",
            }.get(lowered, lowered)
        return value

    @field_validator("backends", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


class BatchingConfig(BaseModel):
    """Dynamic batching of one model (Triton's names where Triton has one)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(8, ge=1, le=1024)
    max_queue_delay_ms: float = Field(
        0.0,
        ge=0,
        description="Extra wait for a fuller batch. 0: run what is queued as soon as an "
        "instance is free, so no instance idles while requests wait (batches still form "
        "while instances are busy).",
    )
    max_queue_size: int = Field(
        256,
        ge=1,
        description="Requests waiting; more get 503 (a request of more than max_batch_size "
        "images takes one place per chunk). 256: a burst of 200 single-image requests after "
        "idle queues about 165 at its peak on 2 cores (decoding runs ahead of inference), "
        "which 128 refused 37 of (issue 19's burst test).",
    )
    instances: int = Field(
        0,
        ge=0,
        le=64,
        description="Workers pulling from the one queue. 0: from the thread budget "
        "(app/threads.py: 2 on a CPU of up to 16 cores, 1 on a GPU).",
    )
    infer_timeout_s: float = Field(
        30.0,
        ge=0,
        description="A batch the backend has not finished in this time fails (500); that "
        "instance takes no more work until the call returns. 0: no limit.",
    )
    pad_to_bucket: bool | None = Field(
        None,
        description="Pad each batch to the next warmed-up size (powers of two): no shape is "
        "ever seen cold. Default: on for CUDA devices, off on CPU.",
    )
    scheduler: Literal["adaptive", "static"] = Field(
        "adaptive",
        description="adaptive: besides the per-core instances, one 'wide' runner holds all of "
        "the model's cores; a batch that is all there is runs on it (latency), queued work "
        "runs side by side on the instances (throughput), batch sizes follow the queue and "
        "the per-batch times measured at warm-up (app/scheduling.py). Only where the backend "
        "has such a runner (ONNX Runtime and OpenVINO on the CPU); elsewhere, and with "
        "'static', a free instance runs whatever is queued up to max_batch_size.",
    )

    wide_max_batch: int = Field(
        0,
        ge=0,
        le=1024,
        description="adaptive scheduler: the largest batch the wide runner takes (at most "
        "max_batch_size). 0: one image fewer than the model has instances, at least 1: the "
        "wide runner takes only what would leave an instance idle, and a queue that gives "
        "every instance an image runs side by side on them (app/scheduling.py, wide_batch_limit).",
    )

    def bucket_sizes(self) -> list[int]:
        """The batch sizes every instance is warmed up at (and padded to, with pad_to_bucket):
        powers of two up to max_batch_size, and max_batch_size itself."""
        sizes, n = [], 1
        while n < self.max_batch_size:
            sizes.append(n)
            n *= 2
        return sizes + [self.max_batch_size]

    def bucket_for(self, n: int) -> int:
        """The smallest bucket that holds `n` images."""
        return next(b for b in self.bucket_sizes() if b >= n)


class PreprocessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resize: int = Field(256, ge=1, description="Shorter side after resizing.")
    crop: int = Field(224, ge=1, description="Centre crop, square.")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    use_draft: bool = Field(
        True,
        description="Fast decoding, within a grey level of torchvision's Resize + CenterCrop: "
        "reduced-size JPEG decoding (DCT scaling) for large images, and resizing only the "
        "pixels of the centre crop. false: exactly Resize, then CenterCrop.",
    )
    decode: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="Where images are decoded and resized. cpu: Pillow, per request, before "
        "batching. gpu: the header is checked on the CPU, then baseline JPEGs travel encoded "
        "to the backend, which batch-decodes them with nvJPEG, resizes and crops on its own "
        "CUDA device and stream; other images are decoded on the CPU. Needs a CUDA device "
        "and a torch backend (eager, torchscript). See docs/gpu.md.",
    )

    @model_validator(mode="after")
    def _crop_fits(self) -> PreprocessConfig:
        if self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}")
        return self


class OrtCudaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"
    prefer_nhwc: bool = True
    use_io_binding: bool = True


class OrtTensorrtOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fp16: bool = True
    int8: bool = False
    engine_cache_dir: str = Field(
        "",
        description="TensorRT engine and timing cache; relative paths are under the model "
        "directory. Empty (default), or not writable: <$XDG_CACHE_HOME or ~/.cache, else the "
        "temp directory>/resnet-serve/trt/<model>, so a read-only /models never fails a load.",
    )
    workspace_size: int = Field(2 << 30, ge=1 << 20)


class OrtOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[Literal["cpu", "cuda", "tensorrt"]] = Field(
        default_factory=list,
        description="Execution providers wanted, in order. Empty: from the device "
        "(cuda:N -> cuda then cpu; cpu -> cpu). tensorrt falls back to cuda then cpu.",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="Per instance. 0: from the thread budget (app/threads.py); 1 on CUDA."
    )
    inter_op_threads: int = Field(0, ge=0)
    allow_spinning: bool = Field(
        True,
        description="Let idle ONNX Runtime threads spin for work. Off frees the cores for "
        "image decoding between batches when CPU inference and decoding share few cores.",
    )
    stop_spinning_after_run: bool = Field(
        False,
        description="Threads that spin stop the moment a batch ends (ONNX Runtime's "
        "session.force_spinning_stop) instead of spinning on for a while: they spin between "
        "the operators of a batch, never between batches. The adaptive scheduler's wide "
        "runner sets it: after its batch the instances may start on every core at once.",
    )
    cuda: OrtCudaOptions = Field(default_factory=OrtCudaOptions)
    tensorrt: OrtTensorrtOptions = Field(default_factory=OrtTensorrtOptions)


class TorchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels_last: bool = True
    threads: int = Field(
        0, ge=0, description="torch.set_num_threads; 0: from the thread budget (app/threads.py)."
    )
    compile: bool = Field(False, description="torch.compile the eager model (GPU mostly).")
    compile_mode: str = "default"


class OpenVinoOptions(BaseModel):
    """The OpenVINO backend (app/backends/openvino.py); defaults chosen from measurements."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(
        0, ge=0, description="INFERENCE_NUM_THREADS per instance; 0: from the thread budget."
    )
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = Field(
        "THROUGHPUT",
        description="THROUGHPUT: one compiled model shared by the instances, one stream and "
        "one infer request per instance (one copy of the weights in the caches). LATENCY: "
        "each instance compiles its own one-stream model.",
    )
    batch_shapes: Literal["dynamic", "buckets"] = Field(
        "dynamic",
        description="dynamic: one compiled model for every batch size. buckets: one compiled "
        "model per warmed batch size (powers of two), batches padded up to the next.",
    )
    cpu_pinning: bool = Field(
        False, description="ENABLE_CPU_PINNING: off, so several instances never share a core."
    )


class ModelConfig(BaseModel):
    """One served model: what `export` writes to config.json and `serve` reads back."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    arch: str = "resnet50"
    backend: BackendName = "onnxruntime"
    device: str = "cpu"
    devices: list[str] | Literal["all"] = Field(
        default_factory=list,
        description="Place the batching.instances round-robin over these CUDA devices "
        "('cuda:N' each), or 'all' for every visible GPU. Empty: every instance on `device`.",
    )
    precision: Precision = "fp32"
    version: str = "1"
    files: dict[str, str] = Field(
        default_factory=dict,
        description="Format -> file in the model directory: eager (state_dict), torchscript, "
        "onnx, and precision variants such as onnx-int8 or onnx-fp16.",
    )
    num_classes: int = Field(1000, ge=1)
    labels: list[str] = Field(default_factory=list)
    weights: str = Field("random", description="Where the weights came from, said plainly.")
    weights_fallback: bool = Field(
        False, description="True when ImageNet weights were asked for but random ones are used."
    )
    input: PreprocessConfig = Field(default_factory=PreprocessConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    onnxruntime: OrtOptions = Field(default_factory=OrtOptions)
    torch: TorchOptions = Field(default_factory=TorchOptions)
    openvino: OpenVinoOptions = Field(default_factory=OpenVinoOptions)
    export_check: dict[str, float] = Field(
        default_factory=dict, description="Max relative error of each format against eager fp32."
    )
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Extra served models from the same files: name -> overrides of these fields.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend-specific options (plugin backends)."
    )
    directory: Path | None = Field(None, exclude=True)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return _normal_device(value)

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str):
            return value
        devices = [_normal_device(d) for d in value]
        if any(not d.startswith("cuda") for d in devices):
            raise ValueError(f"devices lists CUDA devices ('cuda:N'), not {value!r}")
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices lists a device twice: {value!r}")
        return devices

    @model_validator(mode="after")
    def _check_gpu_options(self) -> ModelConfig:
        if self.devices and not self.is_cuda:
            raise ValueError(
                f"devices {self.devices!r} places instances on GPUs, but device is "
                f"{self.device!r}; set device to 'cuda'"
            )
        if self.input.decode == "gpu" and isinstance(self.devices, list) and len(self.devices) > 1:
            raise ValueError(
                "input.decode 'gpu' keeps a model on one GPU per process (torchvision has one "
                "nvJPEG decoder per process): list one device, or run one server per GPU"
            )
        if self.input.decode == "gpu" and not self.is_cuda:
            raise ValueError(
                f"input.decode 'gpu' decodes on the model's CUDA device, but device is "
                f"{self.device!r}; set device to 'cuda' or input.decode to 'cpu'"
            )
        return self

    @model_validator(mode="after")
    def _check_labels(self) -> ModelConfig:
        if self.labels and len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {self.num_classes} classes")
        return self

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def pads_to_bucket(self) -> bool:
        pad = self.batching.pad_to_bucket
        return self.is_cuda if pad is None else pad

    def label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)

    def path_of(self, fmt: str) -> Path:
        if fmt not in self.files:
            raise KeyError(
                f"model {self.name!r} has no {fmt!r} file (has: {', '.join(self.files) or 'none'})"
            )
        assert self.directory is not None
        return self.directory / self.files[fmt]

    def variant(self, name: str, **overrides: Any) -> ModelConfig:
        data = self.model_dump(exclude={"variants", "directory"})
        data.update(overrides, name=name)
        cfg = ModelConfig.model_validate(data)
        cfg.directory = self.directory
        return cfg

    def write(self, directory: Path) -> Path:
        path = directory / CONFIG_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path


def _normal_device(value: str) -> str:
    if value == "cpu" or value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        return "cuda:0" if value == "cuda" else value
    raise ValueError(f"device must be 'cpu' or 'cuda:N', not {value!r}")


def read_model_config(directory: Path) -> ModelConfig:
    cfg = ModelConfig.model_validate_json((directory / CONFIG_FILE).read_text())
    cfg.directory = directory
    return cfg
