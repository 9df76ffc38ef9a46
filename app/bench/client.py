"""The load generator: keep-alive HTTP/1.1 connections on asyncio, closed and open loop.

Cheap per request, so the client is not what a 2-core machine measures: each request is a
pre-built bytes object (one transport write), and responses go through httptools (the C parser
uvicorn uses) reading only the status and the end of the message; a body is kept only for the
first error of each status, to show what went wrong.

Closed loop: C workers, each with its own connection, send the next request when the previous
one is answered. Open loop: requests arrive as a Poisson process at R per second whatever the
server does, and each latency runs from the request's scheduled time, so a slow server cannot
hide its queueing by slowing the client down (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable

import httptools

from app.bench.progress import Progress
from app.bench.stats import Step


class Connection(asyncio.Protocol):
    """One keep-alive connection: send a whole request, await its status."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.status = 0
        self.body = bytearray()
        self.keep_alive = True
        self.lost = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.status = 0
        self.body.clear()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        if not 200 <= self.status < 300 and len(self.body) < 1024:
            self.body += data

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.status)

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # use
    @property
    def usable(self) -> bool:
        return not self.lost and self.keep_alive and self.transport is not None

    async def send(self, request: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

    def error_text(self) -> str:
        return bytes(self.body).decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionError, OSError)):
        return "connection"
    return type(exc).__name__


class LoadGenerator:
    """Drives one target with pre-built requests; each call runs one step and returns it."""

    def __init__(
        self,
        host: str,
        port: int,
        requests: list[bytes],
        images_per_request: int = 1,
        timeout: float = 60.0,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not requests:
            raise ValueError("no request to send")
        self.host, self.port = host, port
        self.requests = requests
        self.images_per_request = images_per_request
        self.timeout = timeout
        self.progress = progress or Progress(force=False)
        self.clock = clock
        self._next = itertools.count()

    async def check(self) -> None:
        """Fail clearly, before any step, if nothing listens at the target."""
        conn = await Connection.open(self.host, self.port)
        conn.close()

    def _request(self) -> bytes:
        return self.requests[next(self._next) % len(self.requests)]

    async def _exchange(
        self, conn: Connection | None, request: bytes
    ) -> tuple[Connection | None, int | str, str]:
        """Send one request (opening a connection if needed). Returns the connection to reuse
        (None if it is closed), the status or failure kind, and an error body sample."""
        try:
            if conn is None or not conn.usable:
                if conn is not None:
                    conn.close()
                conn = await Connection.open(self.host, self.port)
            async with asyncio.timeout(self.timeout):
                status = await conn.send(request)
        except (OSError, TimeoutError) as exc:
            if conn is not None:
                conn.close()
            return None, failure_kind(exc), str(exc)
        sample = conn.error_text() if not 200 <= status < 300 else ""
        if not conn.usable:
            conn.close()
            conn = None
        return conn, status, sample

    @staticmethod
    def _record(step: Step, status: int | str, latency: float, sample: str) -> None:
        if isinstance(status, int) and 200 <= status < 300:
            step.record_ok(latency)
        else:
            step.record_error(str(status), sample)

    async def _with_progress(self, step: Step, state: dict, body: asyncio.Future) -> None:
        bar = asyncio.create_task(self.progress.run(step, state))
        try:
            await body
        finally:
            bar.cancel()
            await asyncio.gather(bar, return_exceptions=True)

    async def closed_loop(
        self,
        concurrency: int,
        duration: float | None = None,
        count: int | None = None,
        warmup: float = 0.0,
    ) -> Step:
        """`concurrency` workers, one request outstanding each, after `warmup` seconds.

        Duration mode: every answer that arrives within the `duration` window counts, whenever
        its request was sent (as wrk counts): counting only requests both sent and answered in
        the window would lose about one latency's worth of answers per worker, which is all of
        them when the latency nears the window. Requests still open at the end are waited for,
        uncounted. Count mode: the first `count` requests sent after the warm-up count."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if duration is None and count is None:
            raise ValueError("give a duration or a request count")
        step = Step("closed", concurrency=concurrency, images_per_request=self.images_per_request)
        start = self.clock()
        measure_start = start + warmup
        end = measure_start + duration if duration is not None else float("inf")
        state: dict[str, float | str | None] = {"phase": "warmup", "start": start, "total": warmup}
        issued = 0
        last_done = measure_start

        async def worker() -> None:
            nonlocal issued, last_done
            conn: Connection | None = None
            try:
                while True:
                    t0 = self.clock()
                    if t0 >= end:
                        return
                    if t0 >= measure_start and state["phase"] == "warmup":
                        state.update(phase="measure", start=measure_start, total=duration)
                    counted = False
                    if count is not None and t0 >= measure_start:
                        if issued >= count:
                            return
                        issued += 1
                        counted = True
                    conn, status, sample = await self._exchange(conn, self._request())
                    done = self.clock()
                    in_window = measure_start <= done <= end
                    if counted if count is not None else in_window:
                        self._record(step, status, done - t0, sample)
                        last_done = max(last_done, done)
                    if conn is None and isinstance(status, str):
                        await asyncio.sleep(0.05)  # the server is gone: do not spin
            finally:
                if conn is not None:
                    conn.close()

        async def run_all() -> None:
            tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
            try:
                # Requests still open at the end are answered (not counted) rather than cut
                # off: a hang-up would leave the server working on them into the next step.
                await asyncio.wait(
                    tasks,
                    timeout=None
                    if duration is None
                    else max(0.0, end - self.clock()) + self.timeout + 1.0,
                )
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        await self._with_progress(step, state, asyncio.ensure_future(run_all()))
        step.elapsed = duration if duration is not None else last_done - measure_start
        return step

    async def open_loop(
        self,
        rate: float,
        duration: float | None = None,
        count: int | None = None,
        warmup: float = 0.0,
        max_connections: int = 512,
        seed: int = 0,
    ) -> Step:
        """Poisson arrivals at `rate` requests/s for `duration` seconds (or `count` arrivals),
        after `warmup` seconds at the same rate whose results are dropped. Every request sent is
        waited for; latency runs from its scheduled arrival, including any wait for one of the
        `max_connections` connections."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        if duration is None and count is None:
            raise ValueError("give a duration or a request count")
        step = Step("open", rate=rate, images_per_request=self.images_per_request)
        rng = random.Random(f"{seed}:{rate}")  # steps at different rates draw independent times
        slots = asyncio.Semaphore(max_connections)
        idle: list[Connection] = []
        in_flight: set[asyncio.Task[None]] = set()
        start = self.clock()
        measure_start = start + warmup
        end = measure_start + duration if duration is not None else float("inf")
        state: dict[str, float | str | None] = {"phase": "warmup", "start": start, "total": warmup}
        last_done = measure_start

        async def one(scheduled: float, measuring: bool) -> None:
            nonlocal last_done
            async with slots:
                conn = idle.pop() if idle else None
                conn, status, sample = await self._exchange(conn, self._request())
                if conn is not None:
                    idle.append(conn)
            done = self.clock()
            if measuring:
                self._record(step, status, done - scheduled, sample)
                last_done = max(last_done, done)

        async def arrivals() -> None:
            arrived = 0
            t_next = start
            while True:
                t_next += rng.expovariate(rate)
                if t_next >= end:
                    break
                measuring = t_next >= measure_start
                if measuring:
                    if count is not None and arrived >= count:
                        break
                    arrived += 1
                    if state["phase"] == "warmup":
                        state.update(phase="measure", start=measure_start, total=duration)
                delay = t_next - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif measuring:
                    step.late_s = max(step.late_s, -delay)
                task = asyncio.create_task(one(t_next, measuring))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            state.update(phase="drain")
            if in_flight:
                await asyncio.gather(*list(in_flight), return_exceptions=True)

        try:
            await self._with_progress(step, state, asyncio.ensure_future(arrivals()))
        finally:
            for task in list(in_flight):
                task.cancel()
            for conn in idle:
                conn.close()
        window = duration if duration is not None else 0.0
        step.elapsed = max(window, last_done - measure_start)
        return step
