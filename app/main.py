"""create_app(settings) and its lifespan: load and warm up every model, start the batchers;
on shutdown, finish every accepted request, then release the models."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__, api, threads
from app.api.security import BearerAuth, BodyLimit
from app.backends import register_plugins
from app.config import ModelConfig, Settings, load_model_configs
from app.metrics import Metrics
from app.repository import ModelRepository
from app.service import DataPlane

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    configs: list[ModelConfig] | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """Build the app. `configs` default to the models in settings.models_dir; `metrics` to a
    fresh registry (tests pass their own to read them)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        register_plugins(settings.backend_plugins)
        model_configs = (
            configs
            if configs is not None
            else load_model_configs(settings.models_dir, list(settings.backends))
        )
        if not model_configs:
            log.warning("no model found in %s: the server will never be ready", settings.models_dir)
        model_configs, budgets, decode_threads = threads.resolve(
            model_configs, settings.decode_threads, settings.workers
        )
        repository = ModelRepository(
            model_configs, app.state.metrics, settings.retry_after_s, budgets=budgets
        )
        decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        app.state.repository = repository
        app.state.dataplane = DataPlane(settings, repository, decode_pool)
        app.state.draining = False
        await repository.load_all()
        log.info(
            "ready: %s", ", ".join(f"{m.name} ({m.state})" for m in repository.models.values())
        )
        try:
            yield
        finally:
            app.state.draining = True
            await repository.close()
            decode_pool.shutdown(wait=True)
            log.info("all models closed")

    app = FastAPI(
        title="resnet-serve",
        version=__version__,
        description="Image classification with dynamic batching over pluggable ResNet backends.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics if metrics is not None else Metrics()
    api.install(app)
    # outermost last: auth answers before a byte of an unauthorised body is read
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.auth_token:
        app.add_middleware(
            BearerAuth, token=settings.auth_token, protect_metrics=settings.protect_metrics
        )
    return app


def app_from_environment() -> FastAPI:
    """Factory for worker processes: settings from RESNET_SERVE_SETTINGS_JSON (set by the
    supervisor) or the RESNET_SERVE_* environment."""
    from app.server import settings_from_environment

    settings = settings_from_environment()
    logging.getLogger().setLevel(settings.log_level.upper())
    return create_app(settings)
