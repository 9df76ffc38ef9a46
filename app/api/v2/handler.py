"""The KServe V2 protocol's operations, once for every transport: the inference request
sequence, server and model metadata, config, statistics and the repository extension.

HTTP (app/api/http/v2.py, app/api/http/repository.py) and gRPC (app/api/grpc/service.py) are
thin adapters over this: each turns its wire format into the structures of app.api.v2.codec
and back, and says what its transport adds (a `Transport`: how the request is read, its
deadline, how the answer is encoded, how a departed client is noticed); everything between is
here and goes through the same DataPlane (decode pool, batcher, deadline, cancellation) as /v1
classify. No web framework, no protobuf.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import numpy as np

from app import __version__
from app.api.inputs import b64decode
from app.api.recording import recorded
from app.api.v2 import codec, schema
from app.errors import DeadlineExceeded, InvalidInput
from app.observability.request import request_id
from app.postprocess import softmax
from app.preprocess import Batch
from app.repository import IndexEntry, ServedModel
from app.service import DataPlane, Disconnected

Answer = TypeVar("Answer")

# Triton's load may carry a config or model files to write; this server never writes into the
# repository for a client, so such a load is refused instead of silently ignored.
REFUSED_PARAMETERS = ("config",)


class Transport(abc.ABC, Generic[Answer]):
    """What one transport adds to an inference request: reading it, its deadline, encoding
    the answer, and noticing that the client left."""

    endpoint: str  # the `endpoint` label of the request metrics

    @abc.abstractmethod
    async def read(self) -> codec.InferRequest:
        """The request's tensors (raises InvalidInput, PayloadTooLarge, ...)."""

    def timeout_ms(self, req: codec.InferRequest) -> float | None:
        """The request's own deadline (DataPlane.deadline caps it by the server's)."""
        return req.timeout_us / 1000.0 if req.timeout_us is not None else None

    def disconnected(self) -> Disconnected | None:
        """Completes when the client hangs up (None: the transport cancels the task instead)."""
        return None

    def past_deadline(self) -> bool:
        """Whether a cancellation of the request means its deadline passed (rather than the
        client leaving): a transport that cancels the call at its deadline says so here."""
        return False

    @abc.abstractmethod
    def encode(
        self, model: ServedModel, req: codec.InferRequest, outputs: list[codec.OutputTensor]
    ) -> Answer:
        """The answer in the transport's format."""


class V2Handler:
    """The V2 protocol over one DataPlane (and its repository)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.repository = dataplane.repository
        self.settings = dataplane.settings

    # ------------------------------------------------------------------ server
    @staticmethod
    def server_metadata() -> dict[str, Any]:
        return {"name": "resnet-serve", "version": __version__, "extensions": schema.EXTENSIONS}

    @property
    def ready(self) -> bool:
        return self.repository.ready  # false while draining: the repository owns readiness

    # ------------------------------------------------------------------ models
    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model, or one served version of it (404 when not served)."""
        return self.repository.get(name, version)

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        metadata = schema.model_metadata(self.model(name, version))
        metadata["versions"] = self.repository.served_versions(name)  # every version served
        return metadata

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        return schema.model_config(
            self.model(name, version),
            self.settings.request_timeout_ms,
            self.repository.served_versions(name),
        )

    def statistics(self, name: str | None = None, version: str | None = None) -> list[Any]:
        """One model's (or version's) statistics; every served version's when no name."""
        models = [self.model(name, version)] if name else self.repository.all_served()
        return [schema.model_statistics(m) for m in models]

    # ------------------------------------------------------------------ inference
    async def infer(self, name: str, version: str | None, transport: Transport[Answer]) -> Answer:
        """One inference request, from its model's name to the transport's answer."""
        model = self.model(name, version)  # 404 before reading the request
        with recorded(model.telemetry, transport.endpoint):
            req = await transport.read()
            req.id = req.id or request_id()  # none in the request: its X-Request-ID
            deadline = self.dataplane.deadline(transport.timeout_ms(req))
            wanted = requested_outputs(req)
            # Early: a model that is not ready costs no decoding (DataPlane.infer checks again
            # when it binds the request to the instances serving then).
            model.require_ready()
            try:
                batch = await input_batch(self.dataplane, model, req)  # decodes image_bytes
                logits = await self.dataplane.infer(
                    model, batch, deadline, disconnected=transport.disconnected()
                )
            except asyncio.CancelledError:
                if not transport.past_deadline():
                    raise  # the client left: counted as 499
                model.telemetry.rejected("deadline")
                raise DeadlineExceeded(
                    "the call's deadline passed before its result was ready"
                ) from None
            return transport.encode(model, req, output_tensors(model, logits, wanted))

    # ------------------------------------------------------------------ repository extension
    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        return self.repository.index(ready_only=ready_only)

    async def load(self, name: str, parameters: Iterable[str] = ()) -> None:
        """Load or reload a folder; `parameters`: the names of the load's parameters."""
        refuse_load_parameters(parameters)
        await self.repository.load(name)

    async def unload(self, name: str) -> None:
        await self.repository.unload(name)


def refuse_load_parameters(names: Iterable[str]) -> None:
    """A load that asks the server to write a config or files is refused."""
    refused = [k for k in names if k in REFUSED_PARAMETERS or k.startswith("file:")]
    if refused:
        raise InvalidInput(
            f"load parameters {refused} are not supported: the server loads only what is in "
            "its model repository; write the files there, then load"
        )


def requested_outputs(req: codec.InferRequest) -> list[codec.OutputRequest]:
    if not req.outputs:  # absent or empty: every output
        return [codec.OutputRequest(name, req.binary_output) for name in schema.OUTPUTS]
    for out in req.outputs:
        if out.name not in schema.OUTPUTS:
            raise InvalidInput(
                f"unknown output {out.name!r}; the model has {', '.join(schema.OUTPUTS)}"
            )
    return req.outputs


def _accepted(model: ServedModel) -> str:
    crop = model.config.input.crop
    return (
        f"model {model.name!r} takes exactly one input: {schema.INPUT_PIXELS!r} (UINT8, shape "
        f"[N, {crop}, {crop}, 3], RGB pixels, NHWC) or {schema.INPUT_FILES!r} (BYTES, shape [N] "
        "or [N, 1], encoded JPEG/PNG/WebP files)"
    )


async def input_batch(dataplane: DataPlane, model: ServedModel, req: codec.InferRequest) -> Batch:
    """The request's one input -> uint8 (N, crop, crop, 3), the batch every backend takes."""
    if len(req.inputs) != 1 or req.inputs[0].name not in (schema.INPUT_PIXELS, schema.INPUT_FILES):
        names = ", ".join(repr(t.name) for t in req.inputs)
        raise InvalidInput(f"inputs {names} not accepted: {_accepted(model)}")
    tensor = req.inputs[0]
    crop = model.config.input.crop
    if tensor.name == schema.INPUT_PIXELS:
        if tensor.datatype != "UINT8":
            raise InvalidInput(
                f"input {schema.INPUT_PIXELS!r} is UINT8 pixels 0-255, not {tensor.datatype} "
                f"(the server never guesses a float scale); send encoded images as "
                f"{schema.INPUT_FILES!r} instead"
            )
        shape = tensor.shape
        if len(shape) != 4 or shape[1:] != [crop, crop, 3]:
            hint = " (that looks like NCHW; the model takes NHWC)" if shape[1:2] == [3] else ""
            raise InvalidInput(
                f"input {schema.INPUT_PIXELS!r} has shape {shape}; the model takes "
                f"[N, {crop}, {crop}, 3]{hint}"
            )
        assert isinstance(tensor.data, np.ndarray)  # its image count: DataPlane.infer checks it
        return tensor.data
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {schema.INPUT_FILES!r} must be BYTES, not {tensor.datatype}")
    if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
        raise InvalidInput(
            f"input {schema.INPUT_FILES!r} has shape {tensor.shape}; it takes [N] or [N, 1], "
            "one encoded image per row"
        )
    assert isinstance(tensor.data, list)
    files = tensor.data if tensor.binary else [_base64(e, i) for i, e in enumerate(tensor.data)]
    return await dataplane.decode_images(model, files)


def _base64(element: bytes, index: int) -> bytes:
    """JSON cannot carry raw image bytes: JSON `image_bytes` elements are base64 strings."""
    data = b64decode(element)
    if data is None:
        raise InvalidInput(
            f"input {schema.INPUT_FILES!r} element {index}: JSON elements must be base64; "
            "or send the raw files as binary tensor data"
        )
    return data


def output_tensors(
    model: ServedModel, logits: np.ndarray, wanted: list[codec.OutputRequest]
) -> list[codec.OutputTensor]:
    probs: np.ndarray | None = None  # float64: classification scores equal /v1 classify's
    out = []
    for req in wanted:
        if req.name == schema.OUTPUT_LOGITS:
            values = logits
        else:
            if probs is None:
                probs = softmax(logits)
            values = probs
        if req.classification:
            k = min(req.classification, values.shape[1])
            data = codec.classification(values, k, model.config.labels)
            out.append(
                codec.OutputTensor(req.name, "BYTES", data, [values.shape[0], k], req.binary)
            )
        else:
            out.append(
                codec.OutputTensor(
                    req.name,
                    "FP32",
                    values.astype(np.float32, copy=False),
                    list(values.shape),
                    req.binary,
                )
            )
    return out
