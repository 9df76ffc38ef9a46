"""app.api.grpc.codec: protobuf messages <-> the V2 codec's structures, and its errors,
without a server."""

from __future__ import annotations

import numpy as np
import pytest

from app.api.grpc import codec as grpc_codec
from app.api.grpc.gen import grpc_service_pb2 as pb
from app.api.v2 import codec
from app.errors import InvalidInput


def request(**kw: object) -> pb.ModelInferRequest:
    # type-ignore reason: protobuf's stubs type each keyword; the tests pass them as **object
    return pb.ModelInferRequest(model_name="m", **kw)  # type: ignore[arg-type]


def test_raw_and_typed_contents_decode_alike() -> None:
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    raw = request(raw_input_contents=[pixels.tobytes()])
    raw.inputs.add(name="images", datatype="UINT8", shape=[2, 4, 4, 3])
    typed = request()
    t = typed.inputs.add(name="images", datatype="UINT8", shape=[2, 4, 4, 3])
    t.contents.uint_contents.extend(pixels.ravel().tolist())
    for msg in (raw, typed):
        req = grpc_codec.parse_request(msg)
        (tensor,) = req.inputs
        assert isinstance(tensor.data, np.ndarray) and tensor.data.dtype == np.uint8
        np.testing.assert_array_equal(tensor.data, pixels)
        assert req.outputs is None and req.timeout_us is None


def test_bytes_parameters_and_outputs() -> None:
    files = [b"\xff\xd8one", b"\x89PNGtwo"]
    msg = request(id="r1", raw_input_contents=[codec.encode_bytes(files)])
    msg.inputs.add(name="image_bytes", datatype="BYTES", shape=[2, 1])
    msg.parameters["timeout"].int64_param = 5000
    out = msg.outputs.add(name="probabilities")
    out.parameters["classification"].int64_param = 3
    req = grpc_codec.parse_request(msg)
    assert req.id == "r1" and req.timeout_us == 5000
    assert req.inputs[0].data == files and req.inputs[0].binary  # raw bytes, never base64
    assert req.outputs == [codec.OutputRequest("probabilities", True, 3)]
    typed = request()
    typed.inputs.add(
        name="image_bytes", datatype="BYTES", shape=[2]
    ).contents.bytes_contents.extend(files)
    assert grpc_codec.parse_request(typed).inputs[0].data == files


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: None, "no input"),
        (
            lambda m: m.inputs.add(name="images", datatype="FP16", shape=[1]),
            "raw_input_contents only",
        ),
        (lambda m: m.inputs.add(name="images", datatype="NOPE", shape=[1]), "unknown datatype"),
        (
            lambda m: m.inputs.add(name="image_bytes", datatype="BYTES", shape=[3]),
            "holds 3 elements",
        ),
        (lambda m: m.inputs.add(name="images", datatype="UINT8", shape=[-1]), "non-negative"),
    ],
)
def test_bad_requests_are_invalid_argument(build, message: str) -> None:
    msg = request()
    build(msg)
    with pytest.raises(InvalidInput, match=message):
        grpc_codec.parse_request(msg)


def test_raw_contents_must_match_the_inputs() -> None:
    msg = request(raw_input_contents=[b"\x00", b"\x01"])
    msg.inputs.add(name="images", datatype="UINT8", shape=[1])
    with pytest.raises(InvalidInput, match="2 blobs for 1 inputs"):
        grpc_codec.parse_request(msg)
    msg = request(raw_input_contents=[b"\x00\x01"])
    msg.inputs.add(name="images", datatype="UINT8", shape=[1])
    # said in gRPC's terms too: no HTTP-only binary_data_size in the message
    with pytest.raises(InvalidInput, match="needs 1 bytes, its data holds 2$"):
        grpc_codec.parse_request(msg)
    msg = request(raw_input_contents=[b"\x00"])
    msg.inputs.add(name="images", datatype="UINT8", shape=[1]).contents.uint_contents.append(0)
    with pytest.raises(InvalidInput, match="both contents and raw"):
        grpc_codec.parse_request(msg)
    msg = request()
    msg.inputs.add(name="images", datatype="UINT8", shape=[1]).contents.uint_contents.append(300)
    with pytest.raises(InvalidInput, match="outside the range"):
        grpc_codec.parse_request(msg)


def test_response_carries_raw_outputs() -> None:
    logits = np.array([[1.5, -2.0]], np.float32)
    outputs = [
        codec.OutputTensor("logits", "FP32", logits, [1, 2], True),
        codec.OutputTensor("probabilities", "BYTES", [b"0.9:0:cat"], [1, 1], True),
    ]
    res = grpc_codec.encode_response("m", "1", "x", outputs)
    assert (res.model_name, res.model_version, res.id) == ("m", "1", "x")
    assert [o.name for o in res.outputs] == ["logits", "probabilities"]
    np.testing.assert_array_equal(np.frombuffer(res.raw_output_contents[0], "<f4"), logits.ravel())
    assert res.raw_output_contents[1] == codec.encode_bytes([b"0.9:0:cat"])
