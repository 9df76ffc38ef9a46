"""Log lines: JSON or text, the request ID of the request being handled, the token redacted."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from app.config import Settings
from app.observability import logs
from app.observability.request import CURRENT, RequestRecord

TOKEN = "planted-token-8f3a1c"


def emit(formatter: logging.Formatter, message: str, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.observability.emit")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.warning(message, *args, extra=extra or None)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().strip()


def test_json_lines_carry_the_request_id_of_the_request_being_handled() -> None:
    formatter = logs.JsonFormatter(worker=2)
    line = json.loads(emit(formatter, "outside %s", "any request"))
    assert line["message"] == "outside any request" and "request_id" not in line
    assert line["level"] == "WARNING" and line["logger"] == "tests.observability.emit"
    assert line["worker"] == 2 and line["time"].endswith("Z")
    token = CURRENT.set(RequestRecord("req-42"))
    try:
        line = json.loads(emit(formatter, "inside"))
    finally:
        CURRENT.reset(token)
    assert line["request_id"] == "req-42"


def test_text_lines_too() -> None:
    token = CURRENT.set(RequestRecord("req-43"))
    try:
        line = emit(logs.TextFormatter(), "inside")
    finally:
        CURRENT.reset(token)
    assert line.endswith("WARNING tests.observability.emit: inside request_id=req-43")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_the_token_never_reaches_a_line(fmt: str) -> None:
    formatter = (logs.JsonFormatter if fmt == "json" else logs.TextFormatter)([TOKEN])
    try:
        raise ValueError(f"Bearer {TOKEN} refused")
    except ValueError:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "%s", (TOKEN,), None)
        record.exc_info = sys.exc_info()
        record.request_id = TOKEN
        record.access = {"route": f"/{TOKEN}", "status": 200}
        handler.emit(record)
    text = stream.getvalue()
    assert TOKEN not in text and text.count(logs.REDACTED) >= 3
    if fmt == "json":
        parsed = json.loads(text)
        assert parsed["route"] == f"/{logs.REDACTED}" and parsed["status"] == 200


def test_clean() -> None:
    assert logs.clean("/v2/models/a b/infer") == "/v2/models/a b/infer"
    assert logs.clean("evil\nINFO forged\x1b[31m") == "evil?INFO forged?[31m"
    assert logs.clean("x" * 500, 10) == "x" * 10
    assert logs.clean(None) is None


def test_format_and_access_log_defaults(monkeypatch) -> None:
    assert logs.resolved_format(Settings(log_format="json")) == "json"
    assert logs.resolved_format(Settings(log_format="text")) == "text"
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert logs.resolved_format(Settings()) == "json"
    assert logs.access_log_enabled(Settings())  # on with JSON
    assert not logs.access_log_enabled(Settings(access_log="off"))
    assert not logs.access_log_enabled(Settings(log_format="text"))
    assert logs.access_log_enabled(Settings(log_format="text", access_log=True))
    assert logs.uvicorn_log_config(Settings()) is None  # uvicorn's lines through ours
    assert logs.uvicorn_log_config(Settings(log_format="text")) is not None


def test_configure_logging_replaces_the_handlers(monkeypatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    try:
        fmt = logs.configure_logging(
            Settings(log_format="json", log_level="warning", auth_token=TOKEN)
        )
        assert fmt == "json" and len(root.handlers) == 1
        logging.getLogger("tests.x").info("hidden at warning")
        logging.getLogger(logs.ACCESS_LOGGER).info("GET / 200", extra={"access": {"a": 1}})
        logging.getLogger("tests.x").warning("token %s", TOKEN)
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["GET / 200", f"token {logs.REDACTED}"]
    assert lines[0]["a"] == 1  # the access log is written at any level
