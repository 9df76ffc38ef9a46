"""One served model (name, version) and its state: what it serves now, whether it is ready, and
how it describes itself.

A model is ready when it is loaded, its batcher accepts work and has a healthy instance, and
the server is not draining (`draining`, set by ModelRepository.begin_drain(), is never
cleared). The object a request holds stays the same across a reload: only its instances change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from app.backends import Backend, BackendInfo
from app.batching import DynamicBatcher
from app.config import ModelConfig
from app.errors import ModelNotReady
from app.metrics import ModelTelemetry
from app.repository.instances import Instances
from app.threads import ThreadBudget


class ModelState(StrEnum):
    """Where a served model is in its life: the one vocabulary of the repository, /v1/models
    and the logs."""

    LOADING = "loading"  # being built (at start, or a folder's load)
    READY = "ready"  # serving (ready too unless draining or every instance is stuck)
    FAILED = "failed"  # its load failed; `reason` says why
    STOPPING = "stopping"  # the server shuts down: finishing what it accepted
    STOPPED = "stopped"  # released (server closed, or no longer served)
    UNLOADING = "unloading"  # its folder is being unloaded: draining


class IndexState(StrEnum):
    """Triton's repository index words for a folder or a served model (the index's wire
    vocabulary); ModelRepository.index() derives them from ModelState, in one place."""

    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass
class ServedModel:
    """One served (name, version). The object a request holds stays the same across a reload:
    only its instances change (see the module's docstring)."""

    config: ModelConfig
    telemetry: ModelTelemetry
    state: ModelState = ModelState.LOADING
    reason: str | None = None
    backends: list[Backend] = field(default_factory=list)
    batcher: DynamicBatcher | None = None
    info: BackendInfo | None = None
    load_seconds: float | None = None
    draining: bool = False  # set by ModelRepository.begin_drain(), never cleared
    folder: str | None = None  # the repository folder it came from (None: configs given)
    replaced_by: ServedModel | None = None  # a version no longer served: its successor
    budget: ThreadBudget | None = None  # the thread budget in force (app/threads.py)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def serving(self) -> bool:
        """Takes requests now (also in the grace period of a drain, when it is not ready)."""
        return (
            self.state == ModelState.READY
            and self.batcher is not None
            and self.batcher.accepting
            and self.batcher.healthy
        )

    @property
    def ready(self) -> bool:
        """What health checks, /v1/models, V2 and the model_ready gauge report."""
        return self.serving and not self.draining

    def successor(self) -> ServedModel:
        """The model that runs this one's requests now: itself, or the version that replaced it."""
        return self.replaced_by.successor() if self.replaced_by is not None else self

    def require_ready(self) -> DynamicBatcher:
        """The batcher to queue a request on now (call submit() before any await)."""
        if self.replaced_by is not None:
            return self.replaced_by.require_ready()
        if not self.serving or self.batcher is None:
            why = f": {self.reason}" if self.reason else ""
            stuck = self.batcher is not None and not self.batcher.healthy
            if self.state == ModelState.READY and stuck:
                why = ": every instance is busy with a batch that outlived infer_timeout_s"
            raise ModelNotReady(f"model {self.name!r} is {self.state}{why}")
        return self.batcher

    def attach(self, built: Instances) -> Instances | None:
        """Serve `built` from now on; returns the instances it served until now."""
        old = self.detach()
        self.config, self.backends, self.batcher = built.config, built.backends, built.batcher
        self.info, self.load_seconds = built.info, built.load_seconds
        self.budget = built.budget
        self.state, self.reason = ModelState.READY, None
        return old

    def detach(self) -> Instances | None:
        old = None
        if self.batcher is not None and self.info is not None:
            old = Instances(
                self.config,
                self.backends,
                self.batcher,
                self.info,
                self.load_seconds or 0.0,
                self.budget,
            )
        self.backends, self.batcher = [], None
        return old
