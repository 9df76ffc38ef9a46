"""app.api.v2.codec: tensor decoding and encoding, without a server."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from app.api.inputs import parse_json
from app.api.v2 import codec
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


def request(inputs, outputs=None, binary=b"", **params):
    header = {"inputs": inputs}
    if outputs is not None:
        header["outputs"] = outputs
    if params:
        header["parameters"] = params
    return codec.parse_request(header, memoryview(binary))


def test_split_body_uses_the_header_length() -> None:
    header, binary = codec.split_body(b'{"a":1}XYZ', "7")
    assert header == b'{"a":1}' and bytes(binary) == b"XYZ"
    header, binary = codec.split_body(b'{"a":1}', None)
    assert header == b'{"a":1}' and len(binary) == 0


@pytest.mark.parametrize("value", ["x", "0", "-1", "11"])
def test_split_body_rejects_a_bad_header_length(value: str) -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        codec.split_body(b'{"a":1}XYZ', value)


def test_json_data_nested_or_flat_gives_the_same_tensor() -> None:
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    flat = request(
        [{"name": "x", "datatype": "UINT8", "shape": [2, 3, 4], "data": values.ravel().tolist()}]
    )
    nested = request(
        [{"name": "x", "datatype": "UINT8", "shape": [2, 3, 4], "data": values.tolist()}]
    )
    for req in (flat, nested):
        t = req.inputs[0]
        assert isinstance(t.data, np.ndarray) and t.data.dtype == np.uint8
        np.testing.assert_array_equal(t.data, values)
        assert not t.binary


def test_binary_data_is_little_endian_row_major() -> None:
    values = np.arange(6, dtype="<f4").reshape(2, 3) / 3
    blob = values.tobytes() + np.array([7, 8], "<i8").tobytes()
    req = request(
        [
            {
                "name": "a",
                "datatype": "FP32",
                "shape": [2, 3],
                "parameters": {"binary_data_size": 24},
            },
            {
                "name": "b",
                "datatype": "INT64",
                "shape": [2],
                "parameters": {"binary_data_size": 16},
            },
        ],
        binary=blob,
    )
    np.testing.assert_array_equal(req.inputs[0].data, values)
    np.testing.assert_array_equal(req.inputs[1].data, [7, 8])
    assert req.inputs[0].binary


def test_binary_bytes_elements_are_length_prefixed() -> None:
    elements = [b"\xff\xd8jpeg", b"", b"png"]
    blob = codec.encode_bytes(elements)
    assert blob[:4] == struct.pack("<I", 6)
    req = request(
        [
            {
                "name": "f",
                "datatype": "BYTES",
                "shape": [3, 1],
                "parameters": {"binary_data_size": len(blob)},
            }
        ],
        binary=blob,
    )
    assert req.inputs[0].data == elements


def test_request_parameters_and_outputs() -> None:
    req = request(
        [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [1]}],
        outputs=[
            {"name": "o", "parameters": {"classification": 3}},
            {"name": "p", "parameters": {"binary_data": False}},
        ],
        binary_data_output=True,
        timeout=2500,
    )
    assert req.timeout_us == 2500 and req.binary_output
    assert [(o.name, o.binary, o.classification) for o in req.outputs or []] == [
        ("o", True, 3),
        ("p", False, 0),
    ]


BAD = [
    ({"inputs": []}, "non-empty"),
    (
        {"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1], "data": [1]}]},
        "unknown datatype",
    ),
    (
        {"inputs": [{"name": "x", "datatype": "BF16", "shape": [1], "data": [1]}]},
        "unknown datatype",
    ),
    (
        {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [3], "data": [1, 2]}]},
        "holds 3 elements",
    ),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [-1], "data": [1]}]}, "non-negative"),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": "1", "data": [1]}]}, "shape"),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]}, "range"),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [1.5]}]}, "not UINT8"),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": ["a"]}]}, "not UINT8"),
    (
        {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [2], "data": [[1], [2, 3]]}]},
        "regular array",
    ),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [None]}]}, "not UINT8"),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1]}]}, "neither data"),
    ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}]}, "strings"),
    ({"inputs": [{"datatype": "UINT8", "shape": [1], "data": [1]}]}, "name"),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [1]}] * 2}, "twice"),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [1]}], "id": 5}, "id"),
    (
        {
            "inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [1]}],
            "parameters": {"timeout": -1},
        },
        "timeout",
    ),
    (
        {
            "inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [1]}],
            "outputs": [{"name": "o", "parameters": {"classification": 0}}],
        },
        "classification",
    ),
    (
        {
            "inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [1]}],
            "outputs": [{"name": "o", "parameters": {"binary_data": "yes"}}],
        },
        "binary_data",
    ),
    ([1, 2], "JSON object"),
    (
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "UINT8",
                    "shape": [1],
                    "parameters": {"shared_memory_region": "r"},
                }
            ]
        },
        "shared memory",
    ),
]


@pytest.mark.parametrize("header, message", BAD)
def test_malformed_requests_are_invalid_input(header: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codec.parse_request(header, memoryview(b""))


@pytest.mark.parametrize(
    "size, binary, message",
    [
        (4, b"\x00" * 5, "add up to 4"),  # bytes left over
        (6, b"\x00" * 4, "runs past the end"),
        (3, b"\x00" * 3, "needs 4 bytes"),  # size does not match the shape
    ],
)
def test_binary_sizes_must_add_up(size: int, binary: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        request(
            [
                {
                    "name": "x",
                    "datatype": "UINT8",
                    "shape": [4],
                    "parameters": {"binary_data_size": size},
                }
            ],
            binary=binary,
        )


@pytest.mark.parametrize(
    "blob, count, message",
    [
        (struct.pack("<I", 10) + b"abc", 1, "runs past"),
        (b"\x01\x00", 1, "truncated length"),
        (codec.encode_bytes([b"a", b"b"]), 1, "more than the 1"),
        (codec.encode_bytes([b"a"]), 2, "holds 1"),
    ],
)
def test_bad_bytes_elements(blob: bytes, count: int, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        request(
            [
                {
                    "name": "f",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            binary=blob,
        )


def test_parse_json_rejects_garbage_and_depth() -> None:
    with pytest.raises(InvalidInput, match="request header is not valid JSON"):
        parse_json(b"{nope", 64, "request header")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_json(b"[" * 100_000, 64)
    assert parse_json(b"[[[1]]]", 4) == [[[1]]]  # a scalar is one level
    with pytest.raises(InvalidInput, match="nested deeper than 3 levels"):
        parse_json(b"[[[1]]]", 3)


def test_encode_response_json_and_binary() -> None:
    values = np.array([[1.5, -2.0]], np.float32)
    body, length = codec.encode_response(
        "m", "1", "req-1", [codec.OutputTensor("logits", "FP32", values, [1, 2], False)]
    )
    assert length is None
    assert json.loads(body) == {
        "model_name": "m",
        "model_version": "1",
        "id": "req-1",
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 2], "data": [1.5, -2.0]}],
    }
    body, length = codec.encode_response(
        "m",
        "1",
        None,
        [
            codec.OutputTensor("logits", "FP32", values, [1, 2], True),
            codec.OutputTensor("cls", "BYTES", [b"1.5:0:cat"], [1, 1], True),
        ],
    )
    assert length is not None
    header = json.loads(body[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 13]
    rest = body[length:]
    np.testing.assert_array_equal(np.frombuffer(rest[:8], "<f4"), values.ravel())
    assert rest[8:] == struct.pack("<I", 9) + b"1.5:0:cat"


def test_classification_is_top_k_best_first_ties_to_lower_index() -> None:
    values = np.array([[0.1, 0.7, 0.1, 0.1], [3.0, 1.0, 3.0, 2.0]], np.float32)
    out = codec.classification(values, 2, ["a", "b", "c", "d"])
    assert [e.decode().split(":", 1)[1] for e in out] == ["1:b", "0:a", "0:a", "2:c"]
    assert float(out[0].decode().split(":")[0]) == pytest.approx(0.7)
    assert codec.classification(values[:1], 1, [])[0].decode().endswith(":1")  # no labels


def test_decompress_gzip_and_deflate_within_the_limit() -> None:
    body = b'{"inputs": []}' * 10
    assert codec.decompress(gzip.compress(body), "gzip", 1000) == body
    assert codec.decompress(zlib.compress(body), "deflate", 1000) == body
    assert codec.decompress(body, None, 1000) == body
    with pytest.raises(PayloadTooLarge):
        codec.decompress(gzip.compress(b"\0" * 10_000_000), "gzip", 1000)  # a zip bomb
    with pytest.raises(InvalidInput, match="not valid gzip"):
        codec.decompress(b"plain", "gzip", 1000)
    with pytest.raises(InvalidInput, match="truncated"):
        codec.decompress(gzip.compress(body)[:-12], "gzip", 1000)
    with pytest.raises(UnsupportedMediaType):
        codec.decompress(body, "br", 1000)


def test_review_regressions_are_400s_not_500s() -> None:
    """An integer timeout too large for a float, and a binary tensor with a huge dimension
    beside a zero one, once escaped as OverflowError / ValueError (500)."""
    import pytest as _pytest

    from app.api.v2 import codec as v2_codec
    from app.errors import InvalidInput

    with _pytest.raises(InvalidInput, match="timeout"):
        v2_codec.parse_request(
            {
                "inputs": [{"name": "images", "datatype": "UINT8", "shape": [1], "data": [1]}],
                "parameters": {"timeout": 10**400},
            },
            memoryview(b""),
        )
    with _pytest.raises(InvalidInput, match="dimension"):
        v2_codec.parse_request(
            {
                "inputs": [
                    {
                        "name": "images",
                        "datatype": "UINT8",
                        "shape": [0, 10**30],
                        "parameters": {"binary_data_size": 0},
                    }
                ]
            },
            memoryview(b""),
        )
