"""A tiny HTTP/1.1 server for the load generator's own tests: it counts what arrives and answers
by a rule, so the client's accounting can be checked exactly (no model, no timing)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok":true}'
    chunked: bool = False
    close: bool = False  # answer "Connection: close" and hang up
    delay: float = 0.0


@dataclass
class StubServer:
    rule: Callable[[int, bytes, bytes], Reply]  # (request number, head, body) -> reply
    received: int = 0
    connections: int = 0
    bodies: Counter[bytes] = field(default_factory=Counter)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> StubServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                n = self.received
                self.received += 1
                self.bodies[body] += 1
                reply = self.rule(n, head, body)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                reason = b"OK" if reply.status == 200 else b"X"
                lines = [
                    b"HTTP/1.1 %d %s" % (reply.status, reason),
                    b"Content-Type: application/json",
                ]
                if reply.close:
                    lines.append(b"Connection: close")
                if reply.chunked:
                    lines.append(b"Transfer-Encoding: chunked")
                    half = len(reply.body) // 2
                    payload = (
                        b"".join(
                            b"%x\r\n%s\r\n" % (len(part), part)
                            for part in (reply.body[:half], reply.body[half:])
                            if part
                        )
                        + b"0\r\n\r\n"
                    )
                else:
                    lines.append(b"Content-Length: %d" % len(reply.body))
                    payload = reply.body
                writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + payload)
                await writer.drain()
                if reply.close:
                    return
        finally:
            writer.close()
