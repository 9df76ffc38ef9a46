"""Typed dependencies: the routes get the objects the lifespan built, never globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.v2.handler import V2Handler
from app.config import Settings
from app.metrics import Metrics
from app.repository import ModelRepository
from app.service import DataPlane


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings  # set by create_app
    return settings


async def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository  # set by create_app
    return repository


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane  # set by create_app
    return dataplane


async def get_v2(request: Request) -> V2Handler:
    v2: V2Handler = request.app.state.v2  # set by create_app
    return v2


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics  # set by create_app
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
V2Dep = Annotated[V2Handler, Depends(get_v2)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
