"""Run the app under uvicorn: one process, or several sharing one listening socket.

On SIGTERM (or SIGINT): readiness turns 503 at once, so load balancers stop routing here;
requests are still accepted for `shutdown_grace_s` (the time a load balancer needs to notice);
then the listening socket closes, every accepted request is finished, the batchers drain,
the models are released, and the process exits 0. A second signal skips the grace period.

With `workers` > 1 a small supervisor binds the socket, starts that many worker processes
(each loads its own model instances and parses its own requests: one Python process cannot
parse more than a few thousand requests a second), forwards signals, restarts a worker that
dies, and exits when they have all drained. Prometheus metrics are then aggregated across
workers through prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from app.config import Settings
from app.connections import guarded_protocol, raise_fd_limit
from app.observability.logs import configure_logging, uvicorn_log_config

log = logging.getLogger(__name__)

SETTINGS_ENV = "RESNET_SERVE_SETTINGS_JSON"


def _fastapi_app(app: Any) -> FastAPI | None:
    """The FastAPI app under uvicorn's wrappers (proxy headers, message logger)."""
    for _ in range(10):
        if isinstance(app, FastAPI):
            return app
        app = getattr(app, "app", None)
    return None


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            if self.should_exit:  # third signal: stop without finishing requests
                log.warning("signal %d again: exiting without finishing requests", sig)
                self.force_exit = True
            else:
                log.warning("second signal %d: closing without waiting out the grace period", sig)
                self.should_exit = True
            return
        app = _fastapi_app(getattr(self.config, "loaded_app", None))
        repository = getattr(app.state, "repository", None) if app is not None else None
        if repository is not None:  # the repository owns readiness
            repository.mark_draining()  # flags at once; the gauges from the loop, not here
            try:
                asyncio.get_running_loop().call_soon_threadsafe(repository.begin_drain)
            except RuntimeError:  # no loop running in this thread (not under uvicorn's loop)
                repository.begin_drain()
        log.info(
            "signal %d: not ready; accepting requests for %.1f s more, then draining",
            sig,
            self.grace_s,
        )
        self._timer = threading.Timer(self.grace_s, self._stop_listening)
        self._timer.daemon = True
        self._timer.start()

    def _stop_listening(self) -> None:
        log.info("grace period over: no new connections; finishing accepted requests")
        self.should_exit = True


def uvicorn_config(app: FastAPI | str, settings: Settings, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop="auto",  # uvloop when installed
        http=guarded_protocol(settings),  # httptools + timeouts, cap, lingering close
        # uvicorn's access log stays off: RESNET_SERVE_ACCESS_LOG writes our own line per
        # request (ID, model, status, phases), app/observability/logs.py
        access_log=False,
        log_config=uvicorn_log_config(settings),  # JSON logs: uvicorn's lines as JSON too
        timeout_graceful_shutdown=None,  # finish every accepted request, however long
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
        # (uvicorn annotates int; it only passes the value to loop.call_later)
        **extra,
    )


def serve(app: FastAPI, settings: Settings) -> None:
    """One process."""
    raise_fd_limit()
    GracefulServer(uvicorn_config(app, settings), settings.shutdown_grace_s).run()


# ---------------------------------------------------------------- several worker processes
def _worker_main(settings_json: str, sock: socket.socket, index: int) -> None:
    os.environ[SETTINGS_ENV] = settings_json
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings, worker=index)
    raise_fd_limit()
    config = uvicorn_config("app.main:app_from_environment", settings, factory=True)
    GracefulServer(config, settings.shutdown_grace_s).run(sockets=[sock])


def serve_workers(settings: Settings) -> int:
    """Several processes on one socket; returns the exit status."""
    raise_fd_limit()  # the workers inherit it
    metrics_dir = tempfile.mkdtemp(prefix="resnet-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the spawned workers
    settings_json = settings.model_dump_json()
    config = uvicorn_config("app.main:app_from_environment", settings, factory=True)
    sock = config.bind_socket()
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    received: list[int] = []

    def start(index: int) -> multiprocessing.process.BaseProcess:
        proc = context.Process(
            target=_worker_main,
            args=(settings_json, sock, index),
            name=f"resnet-serve-worker{index}",
        )
        proc.start()
        return proc

    def on_signal(sig: int, frame: FrameType | None) -> None:
        received.append(sig)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    workers = [start(i) for i in range(settings.workers)]
    log.info(
        "supervisor %d: %d workers on %s:%d",
        os.getpid(),
        len(workers),
        settings.host,
        settings.port,
    )
    forwarded = 0
    restarts: list[float] = []
    try:
        while True:
            if stopping.is_set() and forwarded < len(received):
                for proc in workers:  # first signal: graceful; a second one skips the grace
                    if proc.is_alive() and proc.pid is not None:
                        os.kill(proc.pid, received[forwarded])
                forwarded += 1
            if stopping.is_set() and not any(p.is_alive() for p in workers):
                break
            if not stopping.is_set():
                for i, proc in enumerate(workers):
                    if not proc.is_alive():
                        _mark_dead(proc.pid)
                        now = time.monotonic()
                        restarts = [t for t in restarts if now - t < 60] + [now]
                        if len(restarts) > 5:
                            log.error(
                                "workers keep dying (%d restarts in 60 s): giving up",
                                len(restarts) - 1,
                            )
                            stopping.set()
                            received.append(signal.SIGTERM)
                            break
                        log.error(
                            "worker %d (pid %s) exited with %s: restarting it in %d s",
                            i,
                            proc.pid,
                            proc.exitcode,
                            len(restarts),
                        )
                        time.sleep(len(restarts))  # back off: 1 s, 2 s, ...
                        workers[i] = start(i)
            time.sleep(0.1)
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    codes = [p.exitcode for p in workers]
    log.info("supervisor: workers exited with %s", codes)
    return 0 if all(c == 0 for c in codes) else 1


def _mark_dead(pid: int | None) -> None:
    if pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def settings_from_environment() -> Settings:
    raw = os.environ.get(SETTINGS_ENV)
    return Settings.model_validate_json(raw) if raw else Settings()
