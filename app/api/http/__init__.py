"""The HTTP adapter (FastAPI routers and middleware) over the data plane. Nothing outside
app/api imports from here but main.py."""

from __future__ import annotations

from fastapi import FastAPI

from app.api.http import classify, docs, errors, health, metrics, models, repository, trace, v2


def install(app: FastAPI) -> None:
    errors.install(app)
    docs.install(app)
    for module in (health, models, classify, metrics, v2, repository, trace):
        app.include_router(module.router)
