"""The request record: IDs and traceparent checked, phases that tile the request, the
Server-Timing header of the contract with the web UI (issue 21), the batcher's marks."""

from __future__ import annotations

import asyncio
import re

import pytest

from app.observability.request import (
    MAX_REQUEST_ID,
    RequestRecord,
    batch_ended,
    batch_started,
    parse_traceparent,
    request_ids,
    valid_request_id,
)

# the contract: these five names, in this order, ms with up to 3 decimals
CONTRACT = re.compile(
    r"decode;dur=\d+(\.\d{1,3})?, queue;dur=\d+(\.\d{1,3})?, infer;dur=\d+(\.\d{1,3})?, "
    r"post;dur=\d+(\.\d{1,3})?, total;dur=\d+(\.\d{1,3})?"
)
MS = 1_000_000


@pytest.mark.parametrize(
    "value",
    ["abc-123", "0af7651916cd43dd8448eb211c80319c", "x" * MAX_REQUEST_ID, "a/b:c=d+e@f~g_h.i"],
)
def test_a_well_formed_request_id_is_kept(value: str) -> None:
    assert valid_request_id(value) == value
    assert valid_request_id(value.encode()) == value
    assert RequestRecord(value).request_id == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * (MAX_REQUEST_ID + 1),  # too long
        "evil\nINFO forged log line",  # control characters
        "bell\x07",
        "tab\tid",
        "with space",
        "caf\u00e9",  # not ASCII
        b"caf\xc3\xa9",
        "\x7f",
    ],
)
def test_a_hostile_request_id_is_replaced(value: str | bytes) -> None:
    assert valid_request_id(value) is None
    made = RequestRecord(value).request_id
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert RequestRecord(value).request_id != made  # a new one each time


def test_traceparent() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert parse_traceparent(tp) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        1,
    )
    assert parse_traceparent(tp.encode()) == parse_traceparent(tp)
    # a later version may add fields; version 00 may not
    assert parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-x")
    for bad in (
        tp + "-extra",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",  # short
        "garbage",
        "",
    ):
        assert parse_traceparent(bad) is None, bad
    record = RequestRecord(None, tp, "vendor=x")
    assert record.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert record.tracestate == "vendor=x"
    assert RequestRecord(None, "garbage", "vendor=x").tracestate is None


def _record(**marks: int) -> RequestRecord:
    record = RequestRecord("r", start_ns=0)
    for name, ms in marks.items():
        setattr(record, name, ms * MS)
    return record


def test_phases_tile_the_request() -> None:
    record = _record(
        decode_start_ns=2, decode_end_ns=5, submit_ns=6, batch_start_ns=9, batch_end_ns=19
    )
    record.status, record.respond_ns = 200, 21 * MS
    phases = record.phases_ns()
    assert phases == {
        "read": 2 * MS,
        "decode": 3 * MS,
        "queue": 4 * MS,  # from the end of decoding: the checks before submit count as queue
        "infer": 10 * MS,
        "post": 2 * MS,
        "total": 21 * MS,
    }
    assert sum(v for k, v in phases.items() if k != "total") == phases["total"]
    assert record.server_timing() == (
        "decode;dur=3.000, queue;dur=4.000, infer;dur=10.000, post;dur=2.000, total;dur=21.000"
    )
    assert CONTRACT.fullmatch(record.server_timing())


def test_pixels_need_no_decode_and_the_header_keeps_its_five_names() -> None:
    record = _record(submit_ns=3, batch_start_ns=4, batch_end_ns=8)
    record.status, record.respond_ns = 200, 9 * MS
    assert record.phases_ns()["decode"] == 0 and record.phases_ns()["read"] == 3 * MS
    assert CONTRACT.fullmatch(record.server_timing())
    assert record.server_timing().startswith("decode;dur=0.000, queue;dur=1.000")


def test_an_error_carries_the_phases_it_reached_and_total() -> None:
    bad_image = _record(decode_start_ns=1, decode_end_ns=3)
    bad_image.status, bad_image.respond_ns = 400, 4 * MS
    assert bad_image.server_timing() == "decode;dur=2.000, total;dur=4.000"
    queue_full = _record(decode_start_ns=1, decode_end_ns=3, submit_ns=3)
    queue_full.status, queue_full.respond_ns = 503, 4 * MS
    assert queue_full.server_timing() == "decode;dur=2.000, queue;dur=0.000, total;dur=4.000"
    early = _record()
    early.status, early.respond_ns = 404, 1 * MS
    assert early.server_timing() == "total;dur=1.000"


def test_a_batch_that_outlives_its_request_is_clamped() -> None:
    """A stuck batch fails its requests at the timeout and ends later: the phases still tile
    the answered request, none negative."""
    record = _record(submit_ns=1, batch_start_ns=2, batch_end_ns=50)
    record.status, record.respond_ns = 500, 10 * MS
    phases = record.phases_ns()
    assert min(phases.values()) >= 0
    assert phases["infer"] == 8 * MS and phases["post"] == 0 and phases["total"] == 10 * MS


class Item:
    def __init__(self, record: RequestRecord | None, size: int) -> None:
        self.request = record
        self.size = size
        self.future: asyncio.Future[object] = asyncio.get_running_loop().create_future()


async def test_batch_marks_first_start_last_end_and_largest_batch() -> None:
    a, b = RequestRecord("a"), RequestRecord("b")
    # a is split over two chunks in two batches; b rides in the second
    first = [Item(a, 8)]
    start1 = batch_started(first)
    batch_ended("m", first, start1)
    end1 = a.batch_end_ns
    second = [Item(a, 2), Item(b, 3), Item(None, 1)]  # None: submitted outside a request
    start2 = batch_started(second)
    batch_ended("m", second, start2)
    assert a.batch_start_ns == start1 < start2 == b.batch_start_ns
    assert a.batch_end_ns == b.batch_end_ns > end1
    assert a.batch_size == 8 and b.batch_size == 6
    assert a.batch_spans is None  # tracing off: no span, nothing kept
    assert request_ids(second) == "a, b"
    assert (
        request_ids([Item(RequestRecord(str(i)), 1) for i in range(20)], 3) == "0, 1, 2 and 17 more"
    )
