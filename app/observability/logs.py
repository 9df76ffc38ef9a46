"""The service's log: text (the default on a terminal) or one JSON object a line
(RESNET_SERVE_LOG_FORMAT), every line written while a request is handled carrying its
request ID, and the access log: one line per request (RESNET_SERVE_ACCESS_LOG, on by default
with JSON), which replaces uvicorn's own.

Nothing a client sent is written as is but the request ID (already checked: visible ASCII,
at most 128 characters) and the route's parameters (cleaned); never a header, a body or an
image. The bearer token, should it reach a message anyway, is written as [redacted].
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from app.config import Settings
from app.observability.request import CURRENT

ACCESS_LOGGER = "resnet_serve.access"
REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def resolved_format(settings: Settings) -> str:
    """'json' or 'text'; 'auto' is text on a terminal, JSON otherwise (a container's log)."""
    if settings.log_format != "auto":
        return settings.log_format
    try:
        return "text" if sys.stderr.isatty() else "json"
    except (AttributeError, ValueError):  # no stderr, or closed
        return "json"


def access_log_enabled(settings: Settings) -> bool:
    if settings.access_log != "auto":
        return settings.access_log == "on"
    return resolved_format(settings) == "json"


def clean(value: str | None, limit: int = 128) -> str | None:
    """A client-supplied string fit for a log line: visible ASCII and spaces, at most `limit`
    characters; anything else becomes '?'."""
    if value is None:
        return None
    value = value[:limit]
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else "?" for c in value)


class RequestIdFilter(logging.Filter):
    """Adds the request ID of the request being handled (in this task) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            current = CURRENT.get()
            record.request_id = current.request_id if current is not None else None
        return True


class _Redacting:
    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class JsonFormatter(_Redacting, logging.Formatter):
    """One JSON object a line: time (UTC, ms), level, logger, message, request_id when the
    line is about a request, an access line's fields, the exception's traceback."""

    def __init__(self, secrets: Sequence[str] = (), worker: int | None = None) -> None:
        _Redacting.__init__(self, secrets)
        logging.Formatter.__init__(self)
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        if self.worker is not None:
            out["worker"] = self.worker
        request_id = getattr(record, "request_id", None)
        if request_id:
            out["request_id"] = self.redact(request_id)
        access = getattr(record, "access", None)
        if access:
            for key, value in access.items():
                out[key] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exception"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(out, default=str)


class TextFormatter(_Redacting, logging.Formatter):
    """The familiar text line, with ` request_id=...` when it is about a request."""

    def __init__(self, secrets: Sequence[str] = (), worker: int | None = None) -> None:
        _Redacting.__init__(self, secrets)
        fmt = TEXT_FORMAT
        if worker is not None:
            fmt = fmt.replace(" %(name)s", f" worker{worker} %(name)s")
        logging.Formatter.__init__(self, fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        if request_id:
            line = f"{line} request_id={request_id}"
        return line

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def configure_logging(settings: Settings, worker: int | None = None) -> str:
    """Replace the root logger's handlers with one on stderr in the chosen format; returns
    the format ('text' or 'json'). `worker`: the worker process's index (several workers)."""
    fmt = resolved_format(settings)
    secrets = [settings.auth_token] if settings.auth_token else []
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    formatter: logging.Formatter = (
        JsonFormatter(secrets, worker) if fmt == "json" else TextFormatter(secrets, worker)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    access = logging.getLogger(ACCESS_LOGGER)
    # its own level: asked for, the access log is written at any log level
    access.setLevel(logging.INFO if access_log_enabled(settings) else logging.WARNING)
    return fmt


def uvicorn_log_config(settings: Settings) -> dict[str, Any] | None:
    """uvicorn's logging set-up: its own (text) unless the log is JSON, where its loggers go
    through the root handler like every other (None: uvicorn configures nothing)."""
    if resolved_format(settings) == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
