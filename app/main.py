"""create_app(settings) and its lifespan: load and warm up every model, start the batchers;
on shutdown, finish every accepted request, then release the models."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__, threads
from app.api import http as http_api
from app.api.grpc import service as grpc_service
from app.api.http import ui
from app.api.http.observe import ObservedFastAPI
from app.api.http.security import BearerAuth, BodyLimit
from app.api.v2.handler import V2Handler
from app.backends import register_plugins
from app.config import ModelConfig, Settings
from app.metrics import Metrics
from app.observability.observer import Observer
from app.repository import ModelRepository
from app.service import DataPlane

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    configs: list[ModelConfig] | None = None,
    metrics: Metrics | None = None,
    max_cores: int | None = None,
) -> FastAPI:
    """Build the app. `configs` default to the models in settings.models_dir; `metrics` to a
    fresh registry (tests pass their own to read them); `max_cores` caps the cores the thread
    budget plans for (a Ray Serve replica's num_cpus, on a node it shares)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        register_plugins(settings.backend_plugins)
        cores = threads.usable_cores()
        if max_cores is not None:
            cores = dataclasses.replace(cores, usable=max(1, min(cores.usable, max_cores)))
        if configs is not None:
            repository = ModelRepository(
                configs,
                app.state.metrics,
                settings.retry_after_s,
                workers=settings.workers,
                cores=cores.usable,
            )
        else:
            repository = ModelRepository.from_directory(
                settings.models_dir,
                app.state.metrics,
                settings.retry_after_s,
                extra_backends=list(settings.backends),
                model_control=settings.model_control,
                workers=settings.workers,
                cores=cores.usable,
            )
        if not repository.models:
            log.warning("no model found in %s: the server will never be ready", settings.models_dir)
        # The decode pool beside the models' instances: each build of a model plans its
        # instances and inference threads around it (app/threads.py).
        decode_threads = threads.log_process_budget(
            cores,
            settings.decode_threads,
            [m.config for m in repository.all_served()],
            settings.workers,
        )
        repository.builder.decode_threads = decode_threads
        repository.builder.decode_source = "config" if settings.decode_threads else "budget"
        app.state.repository = repository
        dataplane = DataPlane(settings, repository, decode_threads)
        repository.builder.decoding = dataplane.decode_gate.decoding
        v2 = V2Handler(dataplane)  # the V2 protocol, for the HTTP routes and gRPC
        app.state.dataplane, app.state.v2 = dataplane, v2
        app.state.observer.start()  # the trace exporter, when tracing is configured
        await repository.load_all()
        stats = app.state.stats if settings.ui else None  # the status page's figures
        if stats is not None:
            stats.start()
        grpc_server = None
        try:
            grpc_server = await grpc_service.start(  # same loop, DataPlane
                settings, v2, app.state.observer
            )
            # warning level, so it shows at every log level: one line per process and start,
            # which is how a supervisor (or benchmarks/gpu_check.sh) counts the ready workers
            log.warning(
                "ready (pid %d): %s",
                os.getpid(),
                ", ".join(f"{m.name} ({m.state})" for m in repository.models.values()),
            )
            yield
        finally:
            if stats is not None:
                await stats.stop()
            repository.begin_drain()  # not ready from here; gRPC answers its accepted calls
            await grpc_service.stop(grpc_server, settings)
            await repository.close()
            dataplane.close()
            app.state.observer.stop()  # sends the spans still buffered
            log.info("all models closed")

    app = ObservedFastAPI(  # request IDs, Server-Timing, access log, traces: around everything
        title="resnet-serve",
        version=__version__,
        description="Image classification with dynamic batching over pluggable ResNet backends.",
        lifespan=lifespan,
        docs_url=None,  # app/api/http/docs.py serves /docs and /redoc with their assets, offline
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics if metrics is not None else Metrics()
    app.state.observer = Observer(settings)
    http_api.install(app)
    if settings.ui:
        ui.install(app)  # the web page at / and /status, and /v1/status
    # outermost last: auth answers before a byte of an unauthorised body is read
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.auth_token:
        app.add_middleware(
            BearerAuth,
            token=settings.auth_token,
            protect_metrics=settings.protect_metrics,
            # the page holds no data; each call it makes sends the token
            public=ui.PUBLIC_PATHS if settings.ui else (),
            public_prefixes=ui.PUBLIC_PREFIXES if settings.ui else (),
        )
    return app


def app_from_environment() -> FastAPI:
    """Factory for worker processes: settings from RESNET_SERVE_SETTINGS_JSON (set by the
    supervisor) or the RESNET_SERVE_* environment."""
    from app.server import settings_from_environment

    settings = settings_from_environment()
    logging.getLogger().setLevel(settings.log_level.upper())
    return create_app(settings)
