"""The one table from domain error to status, shared by every adapter: HTTP answers the status
(app/api/http/errors.py), gRPC maps it to its own codes (app/api/grpc/service.py). No web
framework here."""

from __future__ import annotations

from app import errors

CLIENT_CLOSED = 499  # nginx's "client closed request"

STATUS: dict[type[errors.ServeError], int] = {
    errors.InvalidInput: 400,
    errors.ModelLoadFailed: 400,
    errors.Unauthorized: 401,
    errors.ModelControlDisabled: 403,
    errors.ModelNotFound: 404,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InferenceError: 500,
    errors.ModelNotReady: 503,
    errors.QueueFull: 503,
    errors.DeadlineExceeded: 504,
}


def status_of(exc: errors.ServeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500
