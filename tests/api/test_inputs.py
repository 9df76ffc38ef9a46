"""app.api.inputs: the input readers /v1 and V2 share."""

from __future__ import annotations

import base64

import pytest

from app.api.inputs import b64decode, declared_length
from app.errors import InvalidInput, PayloadTooLarge
from app.service import check_image_count


def test_declared_length() -> None:
    declared_length(None, 10)  # chunked: checked while reading
    declared_length("10", 10)
    with pytest.raises(PayloadTooLarge, match="body of 11 bytes; the limit is 10"):
        declared_length("11", 10)
    with pytest.raises(InvalidInput, match="not a number"):
        declared_length("ten", 10)


@pytest.mark.parametrize("kind", [str, bytes])
def test_b64decode_takes_plain_base64_and_data_urls(kind: type) -> None:
    raw = b"\x89PNG any bytes \x00\xff"
    text = base64.b64encode(raw).decode()
    for given in (text, "data:image/png;base64," + text):
        value = given if kind is str else given.encode()
        assert b64decode(value) == raw
    for bad in ("%%%", "abc", "data:image/png;base64,%%"):
        assert b64decode(bad if kind is str else bad.encode()) is None


def test_image_count_rule() -> None:
    check_image_count(1, 4)
    check_image_count(4, 4)
    with pytest.raises(InvalidInput, match="no image"):
        check_image_count(0, 4)
    with pytest.raises(PayloadTooLarge, match="5 images in one request; the limit is 4"):
        check_image_count(5, 4)
