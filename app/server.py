"""Run the app under uvicorn with Kubernetes-friendly shutdown.

On SIGTERM (or SIGINT): readiness turns 503 at once, so load balancers stop routing here;
requests are still accepted for `shutdown_grace_s` (the time a load balancer needs to notice);
then the listening socket closes, every accepted request is finished, the batchers drain,
the models are released, and the process exits 0. A second signal skips the grace period.
"""

from __future__ import annotations

import logging
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.config import Settings

log = logging.getLogger(__name__)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self.fastapi_app = app
        self.grace_s = grace_s
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._timer is not None:  # second signal: stop now
            log.warning("second signal %d: closing without waiting out the grace period", sig)
            self._timer.cancel()
            self.should_exit = True
            return
        self.fastapi_app.state.draining = True
        repository = getattr(self.fastapi_app.state, "repository", None)
        if repository is not None:
            for model in repository.models.values():
                model.telemetry.ready.set(0)
        log.info(
            "signal %d: not ready; accepting requests for %.1f s more, then draining",
            sig, self.grace_s,
        )
        self._timer = threading.Timer(self.grace_s, self._stop_listening)
        self._timer.daemon = True
        self._timer.start()

    def _stop_listening(self) -> None:
        log.info("grace period over: no new connections; finishing accepted requests")
        self.should_exit = True


def uvicorn_config(app: FastAPI | str, settings: Settings, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        access_log=False,  # one line per request costs more than a batch of ResNet-18
        timeout_graceful_shutdown=None,  # finish every accepted request, however long
        timeout_keep_alive=30,
        **extra,  # type: ignore[arg-type]
    )


def serve(app: FastAPI, settings: Settings) -> None:
    GracefulServer(uvicorn_config(app, settings), app, settings.shutdown_grace_s).run()
