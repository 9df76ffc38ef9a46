"""Errors over HTTP: the JSON error body, and the exception handlers that answer it.

Every error answers {"error": "<what went wrong and what to do>"}: the V2 protocol's shape, so
one client-side branch handles both APIs. The status comes from the shared table
(app/api/errors.py).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import errors
from app.api.errors import CLIENT_CLOSED, status_of
from app.service import ClientGone

log = logging.getLogger(__name__)


def error_response(exc: errors.ServeError) -> JSONResponse:
    status = status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.QueueFull):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    elif isinstance(exc, errors.ModelNotReady):
        headers["Retry-After"] = "5"
    elif isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": exc.message}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ServeError)
    async def _serve_error(request: Request, exc: errors.ServeError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED)  # nobody is there to read it

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}; see the server log"}, status_code=500
        )
