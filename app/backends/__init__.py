"""Backend registry: adding a backend is one file plus one line here.

Modules are imported only when a model asks for them, so a server that serves ONNX Runtime
alone never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from app.backends.base import Backend, BackendInfo, Candidate
from app.config import ModelConfig

# In this order `resnet-serve check` lists them (eager first: the reference), then plugins.
REGISTRY: dict[str, str] = {
    "eager": "app.backends.torch.eager:EagerBackend",
    "torchscript": "app.backends.torch.torchscript:TorchScriptBackend",
    "onnxruntime": "app.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "app.backends.openvino:OpenVinoBackend",
}


def register_plugins(plugins: dict[str, str]) -> None:
    """Add backends named in settings ('name' -> 'module:Class')."""
    for name, target in plugins.items():
        if ":" not in target:
            raise ValueError(f"backend plugin {name!r} must be 'module:Class', not {target!r}")
        REGISTRY[name] = target


def backend_class(name: str) -> type[Backend]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(REGISTRY)}") from None
    module, _, attr = target.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), attr)
    return cls


def known_backend(name: str) -> type[Backend] | None:
    """The backend's class, or None when it cannot be had (an unknown name, a plugin that does
    not import): callers that only ask a class-level fact (its platform, its thread option)
    then fall back, and a model that needs it fails to load and says why."""
    try:
        return backend_class(name)
    except Exception:
        return None


@contextmanager
def loaded_backend(config: ModelConfig) -> Iterator[Backend]:
    """A loaded backend for a one-off run (check, bench, tests), closed afterwards, even when
    loading fails half-way. The server's repository keeps its own, long-lived instances."""
    backend = create_backend(config)
    try:
        backend.load()
        yield backend
    finally:
        backend.close()


def create_backend(config: ModelConfig) -> Backend:
    cls = backend_class(config.backend)
    if config.input.decode == "gpu" and not cls.gpu_decode:
        raise ValueError(
            f"backend {config.backend!r} cannot decode images on the GPU (input.decode 'gpu'); "
            "use backend 'eager' or 'torchscript', or input.decode 'cpu'"
        )
    return cls(config)


__all__ = [
    "Backend",
    "BackendInfo",
    "Candidate",
    "REGISTRY",
    "backend_class",
    "create_backend",
    "known_backend",
    "loaded_backend",
    "register_plugins",
]
