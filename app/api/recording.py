"""Per-request telemetry shared by every inference route: in-flight gauge, status-labelled
counter and latency histogram, recorded whatever way the request ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.api.errors import CLIENT_CLOSED, status_of
from app.errors import ServeError
from app.metrics import ModelTelemetry
from app.observability.request import CURRENT
from app.service import ClientGone


@contextmanager
def recorded(telemetry: ModelTelemetry, endpoint: str) -> Iterator[None]:
    started = time.perf_counter()
    status = 200
    record = CURRENT.get()
    if record is not None:  # an inference request: traced, timed (app/observability)
        record.endpoint = endpoint
        record.model = record.model or telemetry.model
    telemetry.in_flight.inc()
    try:
        yield
    except ServeError as exc:
        status = status_of(exc)
        raise
    except (ClientGone, asyncio.CancelledError):  # the client left (a cancelled gRPC call)
        status = CLIENT_CLOSED
        raise
    except BaseException:
        status = 500
        raise
    finally:
        telemetry.in_flight.dec()
        telemetry.request_done(endpoint, status, time.perf_counter() - started)
