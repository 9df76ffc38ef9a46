"""KServe V2 / Open Inference Protocol tensors over HTTP: pure encode and decode, no web framework.

Request body: a JSON header, optionally followed by binary tensor data (Triton's binary tensor
data extension): `Inference-Header-Content-Length` says where the JSON ends; each binary input
names its `binary_data_size`, in order; the sizes must add up to the rest of the body.
Binary data is little-endian row-major; a BYTES element is a 4-byte little-endian length and
its bytes. Everything wrong with a request raises InvalidInput (400) here, before any model
sees it.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.postprocess import top_k_indices

HEADER_LENGTH = "Inference-Header-Content-Length"

# V2 datatype -> little-endian numpy dtype (BYTES is handled apart: a list of bytes objects).
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*DTYPES, "BYTES")
# Bodies with more tensors than this are refused before any is decoded.
MAX_TENSORS = 16
_LEN = struct.Struct("<I")


@dataclass
class Tensor:
    """One decoded input: `data` is a numpy array of `shape`, or a list of bytes for BYTES."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list[bytes]
    binary: bool  # came as binary tensor data (False: JSON `data`)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputRequest:
    name: str
    binary: bool
    classification: int = 0  # top-k of the classification extension; 0: the raw tensor


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[OutputRequest] | None  # None: every output, in the request-level format
    binary_output: bool
    timeout_us: float | None
    parameters: dict[str, Any]


# ---------------------------------------------------------------------------------- decoding
def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent with tritonclient's request_compression_algorithm (Content-Encoding
    gzip or deflate), inflated to at most `limit` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        return body
    if enc not in ("gzip", "deflate"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not accepted; use gzip or deflate"
        )
    inflater = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {enc} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"body inflates to more than the limit of {limit} bytes")
    if not inflater.eof:
        raise InvalidInput(f"{enc} body is truncated")
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary data) of a request body."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} {header_length!r} is not a number") from None
    if not 0 < n <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {n} but the body holds {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:n]), view[n:]


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{what} must be a positive integer, got {value!r}")
    return value


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false, got {value!r}")
    return value


MAX_DIMENSION = 2**31 - 1


def parse_shape(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in value
    ):
        raise InvalidInput(f"{what}: shape must be a list of non-negative integers, got {value!r}")
    if len(value) > 16:
        raise InvalidInput(f"{what}: shape has {len(value)} dimensions; at most 16 are accepted")
    if any(d > MAX_DIMENSION for d in value):
        raise InvalidInput(f"{what}: shape {value} has a dimension above {MAX_DIMENSION}")
    return value


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer too large for a float
        return False


def parse_request(header: Any, binary: memoryview) -> InferRequest:
    """The JSON header (parsed) and the binary data after it -> a validated InferRequest."""
    if not isinstance(header, dict):
        raise InvalidInput("request header must be a JSON object")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"id must be a string, got {request_id!r}")
    params = _object(header.get("parameters"), "parameters")
    binary_output = _flag(params.get("binary_data_output", False), "parameters.binary_data_output")
    timeout = params.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not timeout > 0
        or not _finite(timeout)
    ):
        raise InvalidInput(
            f"parameters.timeout must be a positive number of microseconds, got {timeout!r}"
        )

    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput('"inputs" must be a non-empty list of tensors')
    if len(raw_inputs) > MAX_TENSORS:
        raise InvalidInput(f"{len(raw_inputs)} inputs; at most {MAX_TENSORS} are accepted")
    inputs, offset = [], 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = parse_input(raw, i, binary, offset)
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(
            f"binary data after the JSON header is {len(binary)} bytes but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise InvalidInput(f"an input is named twice: {names}")

    outputs = None
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list) or len(raw_outputs) > MAX_TENSORS:
            raise InvalidInput(f'"outputs" must be a list of at most {MAX_TENSORS} outputs')
        outputs = [parse_output(o, i, binary_output) for i, o in enumerate(raw_outputs)]
        names = [o.name for o in outputs]
        if len(set(names)) != len(names):
            raise InvalidInput(f"an output is requested twice: {names}")
    return InferRequest(request_id, inputs, outputs, binary_output, timeout, params)


def parse_output(raw: Any, index: int, binary_default: bool) -> OutputRequest:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise InvalidInput(f"outputs[{index}] must be an object with a string name")
    params = _object(raw.get("parameters"), f"outputs[{index}].parameters")
    binary = binary_default
    if "binary_data" in params:
        binary = _flag(params["binary_data"], f"outputs[{index}].parameters.binary_data")
    k = 0
    if "classification" in params:
        k = _positive_int(params["classification"], f"outputs[{index}].parameters.classification")
    return OutputRequest(raw["name"], binary, k)


def parse_input(raw: Any, index: int, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    """One input of the header -> (Tensor, bytes of binary data it used)."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"inputs[{index}] has no string name")
    what = f"input {name!r}"
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInput(f"{what}: unknown datatype {datatype!r}; one of {', '.join(DATATYPES)}")
    shape = parse_shape(raw.get("shape"), what)
    count = math.prod(shape)
    params = _object(raw.get("parameters"), f"{what} parameters")
    if "shared_memory_region" in params:
        raise InvalidInput(f"{what}: the shared memory extensions are not supported; send the data")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{what}: binary_data_size must be a non-negative integer")
        if "data" in raw:
            raise InvalidInput(f"{what} has both binary_data_size and JSON data")
        if offset + size > len(binary):
            raise InvalidInput(
                f"{what}: binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} bytes left after the JSON header)"
            )
        chunk = binary[offset : offset + size]
        data = _from_binary(chunk, datatype, shape, count, what)
        return Tensor(name, datatype, shape, data, True, params), size
    if "data" not in raw:
        raise InvalidInput(f"{what} has neither data nor parameters.binary_data_size")
    data = _from_json(raw["data"], datatype, shape, count, what)
    return Tensor(name, datatype, shape, data, False, params), 0


def _from_binary(
    chunk: memoryview, datatype: str, shape: list[int], count: int, what: str
) -> np.ndarray | list[bytes]:
    if datatype == "BYTES":
        return _split_bytes(chunk, count, what)
    dtype = DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise InvalidInput(
            f"{what}: {datatype} shape {shape} needs {expected} bytes, "
            f"its data holds {len(chunk)}"  # binary_data_size (HTTP) or a raw blob (gRPC)
        )
    try:
        return np.frombuffer(chunk, dtype=dtype).reshape(shape)
    except ValueError as exc:
        raise InvalidInput(f"{what}: {len(chunk)} bytes do not form shape {shape}: {exc}") from None


def _split_bytes(chunk: memoryview, count: int, what: str) -> list[bytes]:
    """Length-prefixed BYTES elements; they must fill the chunk exactly."""
    out: list[bytes] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if len(out) == count:
            raise InvalidInput(
                f"{what}: binary data holds more than the {count} BYTES elements of its shape"
            )
        if pos + 4 > end:
            raise InvalidInput(f"{what}: BYTES element {len(out)} has a truncated length prefix")
        (n,) = _LEN.unpack_from(chunk, pos)
        pos += 4
        if pos + n > end:
            raise InvalidInput(f"{what}: BYTES element {len(out)} of {n} bytes runs past its data")
        out.append(bytes(chunk[pos : pos + n]))
        pos += n
    if len(out) != count:
        raise InvalidInput(
            f"{what}: shape holds {count} BYTES elements, binary data holds {len(out)}"
        )
    return out


def _from_json(
    data: Any, datatype: str, shape: list[int], count: int, what: str
) -> np.ndarray | list[bytes]:
    if not isinstance(data, list):
        raise InvalidInput(f"{what}: data must be a (flat or nested) JSON list")
    if datatype == "BYTES":
        flat = _flatten(data, what)
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"{what}: BYTES data must hold strings")
        if len(flat) != count:
            raise InvalidInput(
                f"{what}: shape {shape} holds {count} elements, data holds {len(flat)}"
            )
        return [v.encode("utf-8") for v in flat]
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{what}: data is not a regular array of numbers: {exc}") from None
    dtype = DTYPES[datatype]
    kinds = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}[dtype.kind]
    if arr.size and arr.dtype.kind not in kinds:
        raise InvalidInput(
            f"{what}: data holds values that are not {datatype} ({arr.dtype.kind!r} values)"
        )
    if arr.size != count:
        raise InvalidInput(f"{what}: shape {shape} holds {count} elements, data holds {arr.size}")
    if dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise InvalidInput(f"{what}: values outside the range of {datatype}")
    try:
        return arr.astype(dtype, copy=False).reshape(shape)
    except (ValueError, TypeError, OverflowError) as exc:  # pragma: no cover - checked above
        raise InvalidInput(f"{what}: {exc}") from None


def _flatten(data: list[Any], what: str) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 16:
                    raise InvalidInput(f"{what}: data nested deeper than 16 levels")
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


# ---------------------------------------------------------------------------------- encoding
@dataclass
class OutputTensor:
    name: str
    datatype: str
    data: np.ndarray | list[bytes]  # numeric array, or BYTES elements of `shape`
    shape: list[int]
    binary: bool


def encode_bytes(elements: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(e)) + e for e in elements)


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when no output is binary)."""
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    entries, blobs = [], []
    for out in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.binary:
            if isinstance(out.data, list):
                blob = encode_bytes(out.data)
            else:
                blob = np.ascontiguousarray(out.data, dtype=DTYPES[out.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif isinstance(out.data, list):
            entry["data"] = [e.decode("utf-8", "replace") for e in out.data]
        else:
            entry["data"] = out.data.reshape(-1).tolist()
        entries.append(entry)
    header["outputs"] = entries
    raw = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return raw, None
    return b"".join([raw, *blobs]), len(raw)


def classification(values: np.ndarray, k: int, labels: list[str]) -> list[bytes]:
    """Triton's classification extension: top-k per row as "score:index[:label]", best first,
    ties to the lower index. (N, C) -> N*k elements, row-major."""
    order = top_k_indices(values, k)
    scores = np.take_along_axis(values, order, axis=-1)
    out = []
    for row_i, row_s in zip(order.tolist(), scores.tolist(), strict=True):
        for i, s in zip(row_i, row_s, strict=True):
            label = f":{labels[i]}" if i < len(labels) else ""
            out.append(f"{s!r}:{i}{label}".encode())
    return out
