"""The served models: the repository (load, reload, unload, readiness), each served model's
state, and the building of its instances."""

from __future__ import annotations

from app.repository.repository import IndexEntry, ModelControl, ModelRepository
from app.repository.state import IndexState, ModelState, ServedModel

__all__ = [
    "IndexEntry",
    "IndexState",
    "ModelControl",
    "ModelRepository",
    "ModelState",
    "ServedModel",
]
