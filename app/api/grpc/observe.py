"""Every gRPC call observed, as every HTTP request is (app/api/http/observe.py): its request ID
(metadata `x-request-id` when well formed, else a new one) sent back in the trailing metadata
of every answer, errors included; the caller's `traceparent` metadata continues its trace;
the trace and the access line once answered (app/observability)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from app.observability.observer import Observer
from app.observability.request import (
    CURRENT,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    RequestRecord,
)

Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Context], Awaitable[Message]]

SERVICE = "inference.GRPCInferenceService"
CLIENT_CLOSED = 499
# gRPC status -> its HTTP twin (the inverse of service.CODES), for the access line
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: CLIENT_CLOSED,
}


def _metadata(context: Context) -> tuple[Any, Any, Any]:
    request_id = traceparent = tracestate = None
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            request_id = value
        elif key == TRACEPARENT_HEADER:
            traceparent = value
        elif key == TRACESTATE_HEADER:
            tracestate = value
    return request_id, traceparent, tracestate


def observed(name: str, method: Handler, observer: Observer) -> Handler:
    """The RPC `name` with its request's record around it (outside auth and the error table,
    so refused and failed calls are seen too)."""
    route = f"{SERVICE}/{name}"

    async def call(request: Any, context: Context) -> Message:
        record = observer.begin(*_metadata(context))
        context.set_trailing_metadata(((REQUEST_ID_HEADER, record.request_id),))
        token = CURRENT.set(record)
        response: Message | None = None
        try:
            response = await method(request, context)
            return response
        except asyncio.CancelledError:
            record.error = "cancelled"
            raise
        except Exception as exc:
            record.error = type(exc).__name__
            raise
        finally:
            CURRENT.reset(token)
            _finish(observer, record, name, route, request, response, context)

    return call


def _finish(
    observer: Observer,
    record: RequestRecord,
    name: str,
    route: str,
    request: Any,
    response: Message | None,
    context: Context,
) -> None:
    code = grpc.StatusCode.OK if response is not None else _code(context, record)
    record.responded(HTTP_STATUS.get(code, 500))
    record.end_ns = record.respond_ns  # grpc sends the answer after the handler returns
    if code is not grpc.StatusCode.OK and record.status >= 500:
        record.error = record.error or code.name
    elif code is grpc.StatusCode.OK or record.status < 500:
        record.error = None  # a client's error is not the server's (OpenTelemetry's rule)
    if record.model is None:
        model = getattr(request, "model_name", None) or getattr(request, "name", None)
        record.model = model if isinstance(model, str) and model else None
    if record.version is None:
        version = getattr(request, "model_version", None) or getattr(request, "version", None)
        record.version = version if isinstance(version, str) and version else None
    extra: dict[str, Any] = {"grpc_status": code.name}
    if observer.access is not None:
        record.bytes_in = request.ByteSize() if isinstance(request, Message) else 0
        record.bytes_out = response.ByteSize() if response is not None else 0
    attributes = {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": name,
        "rpc.grpc.status_code": code.value[0],
    }
    observer.finish(record, "grpc", name, route, route, attributes, extra)


def _code(context: Context, record: RequestRecord) -> grpc.StatusCode:
    """The status the call ended with: what abort() set, else CANCELLED or INTERNAL."""
    try:
        code = context.code()
    except Exception:  # not every grpc version tracks it
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if record.error == "cancelled":
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL
