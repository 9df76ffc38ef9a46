"""The load generator over KServe V2 gRPC: the closed and open loops of LoadGenerator, with each
exchange a ModelInfer call on grpc.aio instead of an HTTP/1.1 request.

As on HTTP, the client is kept cheap so the server is what is measured: each request is a
ModelInferRequest serialized once before the load (payload.grpc_pixels_body) and sent as bytes
(no per-call serialization), the answer is not decoded, only its status read. Each worker (or
open-loop connection slot) has its own channel on its own TCP connection, as each HTTP worker
has its own keep-alive connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from app.bench.client import LoadGenerator, failure_kind

METHOD = "/inference.GRPCInferenceService/ModelInfer"
# One TCP connection per channel (grpc would otherwise share a subchannel between channels to
# the same target), no message size limit on the client side.
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


class GrpcConnection:
    """One channel; `close()` is synchronous, as LoadGenerator's workers call it."""

    def __init__(self, target: str, closing: set[asyncio.Task[None]]) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.call: Any = self.channel.unary_unary(METHOD)  # bytes in, bytes out
        self._closing = closing

    def close(self) -> None:
        task = asyncio.get_running_loop().create_task(self.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class GrpcLoadGenerator(LoadGenerator):
    def __init__(
        self,
        host: str,
        port: int,
        requests: list[bytes],
        metadata: list[tuple[str, str]],
        **kw: Any,
    ) -> None:
        super().__init__(host, port, requests, **kw)
        self.target = f"{host}:{port}"
        self.metadata = tuple((k.lower(), v) for k, v in metadata)
        self._closing: set[asyncio.Task[None]] = set()

    async def check(self) -> None:
        """Fail clearly, before any step, if no gRPC server answers at the target."""
        conn = GrpcConnection(self.target, self._closing)
        try:
            async with asyncio.timeout(min(self.timeout, 10.0)):
                await conn.channel.channel_ready()
        except TimeoutError:
            raise ConnectionRefusedError(f"no gRPC server at {self.target}") from None
        finally:
            await conn.channel.close()

    async def _exchange(  # type: ignore[override]  # a channel where the base has a socket
        self, conn: GrpcConnection | None, request: bytes
    ) -> tuple[GrpcConnection | None, int | str, str]:
        if conn is None:
            conn = GrpcConnection(self.target, self._closing)
        try:
            await conn.call(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
                conn.close()
                return None, "connection", exc.details() or ""
            return conn, code.name, exc.details() or ""
        except OSError as exc:
            conn.close()
            return None, failure_kind(exc), str(exc)
        return conn, 200, ""

    async def aclose(self) -> None:
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
