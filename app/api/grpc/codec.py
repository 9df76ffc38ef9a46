"""KServe V2 tensors over gRPC: protobuf messages <-> the V2 codec's structures, pure functions.

A ModelInferRequest becomes the same InferRequest (app.api.v2.codec) the HTTP route builds, so
the checks (names, datatypes, shapes, sizes, BYTES framing) and everything after them are
shared. Tensor data comes either in `raw_input_contents` (one little-endian row-major blob per
input, BYTES elements 4-byte-length-prefixed: the framing of HTTP's binary tensor data, so the
V2 codec decodes it) or in each input's typed `contents`. Outputs always go back in
`raw_output_contents`, as Triton answers. Errors raise InvalidInput, before any model sees
the request.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from app.api.grpc.gen import grpc_service_pb2 as pb
from app.api.grpc.gen import model_config_pb2 as config_pb
from app.api.v2 import codec
from app.errors import InvalidInput

# datatype -> the InferTensorContents field that carries it (FP16 has none: raw only)
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter(p: pb.InferParameter) -> Any:
    """The value of an InferParameter, whichever of its fields is set (None: unset)."""
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def parameters(params: Any) -> dict[str, Any]:
    return {key: parameter(value) for key, value in params.items()}


def parse_request(msg: pb.ModelInferRequest) -> codec.InferRequest:
    params = parameters(msg.parameters)
    timeout = params.get("timeout")
    if timeout is not None and (
        isinstance(timeout, (bool, str)) or not timeout > 0 or not math.isfinite(timeout)
    ):
        raise InvalidInput(
            f"parameters.timeout must be a positive number of microseconds, got {timeout!r}"
        )
    if not msg.inputs:
        raise InvalidInput("the request has no input tensor")
    if len(msg.inputs) > codec.MAX_TENSORS or len(msg.outputs) > codec.MAX_TENSORS:
        raise InvalidInput(f"at most {codec.MAX_TENSORS} inputs and outputs are accepted")
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise InvalidInput(
            f"raw_input_contents holds {len(raw)} blobs for {len(msg.inputs)} inputs: "
            "send one per input, in the order of the inputs"
        )
    inputs = [parse_input(t, i, raw[i] if raw else None) for i, t in enumerate(msg.inputs)]
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise InvalidInput(f"an input is named twice: {names}")
    outputs = None
    if msg.outputs:
        outputs = [parse_output(o, i) for i, o in enumerate(msg.outputs)]
        names = [o.name for o in outputs]
        if len(set(names)) != len(names):
            raise InvalidInput(f"an output is requested twice: {names}")
    return codec.InferRequest(msg.id or None, inputs, outputs, True, timeout, params)


def parse_output(out: pb.ModelInferRequest.InferRequestedOutputTensor, index: int) -> Any:
    if not out.name:
        raise InvalidInput(f"outputs[{index}] has no name")
    k = parameters(out.parameters).get("classification", 0) or 0
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidInput(
            f"outputs[{index}].parameters.classification must be a positive integer, got {k!r}"
        )
    return codec.OutputRequest(out.name, True, k)


def parse_input(
    t: pb.ModelInferRequest.InferInputTensor, index: int, raw: bytes | None
) -> codec.Tensor:
    what = f"input {t.name!r}"
    if not t.name:
        raise InvalidInput(f"inputs[{index}] has no name")
    params = parameters(t.parameters)
    if "shared_memory_region" in params:
        raise InvalidInput(f"{what}: the shared memory extensions are not supported; send the data")
    shape = list(t.shape)
    header: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": shape}
    if raw is not None:
        if t.HasField("contents"):
            raise InvalidInput(f"{what} has both contents and raw_input_contents")
        header["parameters"] = {"binary_data_size": len(raw)}
        tensor, _ = codec.parse_input(header, index, memoryview(raw), 0)
        return tensor
    if t.datatype not in CONTENTS:
        if t.datatype in codec.DATATYPES:
            raise InvalidInput(f"{what}: {t.datatype} travels in raw_input_contents only")
        raise InvalidInput(
            f"{what}: unknown datatype {t.datatype!r}; one of {', '.join(codec.DATATYPES)}"
        )
    values = getattr(t.contents, CONTENTS[t.datatype])
    if t.datatype == "BYTES":
        count = math.prod(codec.parse_shape(shape, what))
        if len(values) != count:
            raise InvalidInput(f"{what}: shape {shape} holds {count} elements, data {len(values)}")
        return codec.Tensor(t.name, "BYTES", shape, list(values), True, params)
    header["data"] = np.asarray(values).tolist() if len(values) else []
    tensor, _ = codec.parse_input(header, index, memoryview(b""), 0)
    return tensor


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: list[codec.OutputTensor]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    for out in outputs:
        response.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        if isinstance(out.data, list):
            blob = codec.encode_bytes(out.data)
        else:
            blob = np.ascontiguousarray(out.data, dtype=codec.DTYPES[out.datatype]).tobytes()
        response.raw_output_contents.append(blob)
    return response


def from_dict(data: dict[str, Any], message: Message) -> Message:
    """A V2 schema dict (app.api.v2.schema) -> its protobuf twin. Keys the message lacks (an
    extension the HTTP JSON carries, such as metadata's `parameters`) are left out."""
    return json_format.ParseDict(data, message, ignore_unknown_fields=True)


def model_metadata(data: dict[str, Any]) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse()
    from_dict(data, response)
    return response


def model_config(data: dict[str, Any]) -> pb.ModelConfigResponse:
    config = config_pb.ModelConfig()
    from_dict(data, config)
    return pb.ModelConfigResponse(config=config)


def model_statistics(stats: list[dict[str, Any]]) -> pb.ModelStatisticsResponse:
    response = pb.ModelStatisticsResponse()
    from_dict({"model_stats": stats}, response)
    return response
