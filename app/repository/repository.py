"""The served models: load, warm up and start each one, report its state, reload or unload
one folder while the others serve, close them all.

A model that fails to load is kept, marked failed with its reason, and the server stays up
(not ready) instead of crash-looping without an explanation.

The repository is the one owner of readiness: a model is ready when it is loaded, its batcher
accepts work and has a healthy instance, and the server is not draining. `begin_drain()` (the
server calls it on SIGTERM) turns every model and the server not ready at once while requests
are still accepted; nothing turns a model ready again afterwards. The `model_ready` gauge is
set in one place, `ModelRepository.publish_ready()`, from that same state: the batcher only
says when its health changed.

Reload without downtime (`load(name)`, Triton's model repository extension): the new instances
are built and warmed beside the old ones, then every served model of the folder switches in
one step of the event loop (no await between): a request is bound to a batcher when it is
queued, so requests already queued finish on the old instances and every later one goes to the
new; the old batcher is then drained and its instances closed. A failed load changes nothing
and says why. `unload(name)` stops accepting (503), drains, closes, and the name answers 404.
The API adapters (HTTP and gRPC) only call `index()`, `load()` and `unload()`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.config import ModelConfig
from app.errors import ModelControlDisabled, ModelLoadFailed, ModelNotFound, ModelNotReady
from app.metrics import Metrics, ModelTelemetry
from app.model_folders import Folder, fingerprint, list_folders, read_folder, resolve_folder, scan
from app.repository.instances import InstanceBuilder, Instances, close_quietly, retire
from app.repository.state import IndexState, ModelState, ServedModel
from app.threads import usable_cores

log = logging.getLogger(__name__)

ModelControl = Literal["none", "explicit"]


@dataclass(frozen=True)
class IndexEntry:
    """One line of the repository index: a served model (with its version), or a folder that
    serves none (no version)."""

    name: str
    state: IndexState
    reason: str
    version: str | None = None


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


class ModelRepository:
    def __init__(
        self,
        configs: list[ModelConfig],
        metrics: Metrics,
        retry_after_s: float = 1.0,
        *,
        models_dir: Path | None = None,
        owners: dict[str, str] | None = None,
        extra_backends: list[str] | None = None,
        model_control: ModelControl = "none",
        workers: int = 1,
        decode_threads: int = 0,
        decode_source: str = "budget",
        cores: int | None = None,
    ) -> None:
        """`configs` are served at start; `owners` (served name -> folder) ties them to the
        folders of `models_dir` for the repository calls (see `from_directory`).
        `cores` (usable, default: read from the machine), `workers` and `decode_threads` (the
        process's decode pool, `decode_source` says where it came from) go to the builder: the
        thread budget every build of a model applies, at start and at each reload."""
        self.metrics = metrics
        self.models_dir = models_dir
        self.extra_backends = list(extra_backends or [])
        self.model_control = model_control
        self.workers = workers
        self.builder = InstanceBuilder(
            cores or usable_cores().usable, workers, retry_after_s, decode_threads, decode_source
        )
        self.draining = False
        self._telemetry: dict[str, ModelTelemetry] = {}  # name -> its gauges
        self._version_telemetry: dict[tuple[str, str], ModelTelemetry] = {}
        self.versions: dict[str, dict[str, ServedModel]] = {}  # name -> version -> model
        self.models: dict[str, ServedModel] = {}  # name -> its highest served version
        self.owner: dict[str, str] = dict(owners or {})  # served name -> folder
        self.load_errors: dict[str, str] = {}  # folder -> why its last load failed
        self._fingerprints: dict[str, tuple[tuple[str, int, int], ...]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._busy: dict[str, ModelState] = {}  # folder -> LOADING / UNLOADING while it runs
        for c in configs:
            model = ServedModel(
                c, self._telemetry_of(c.name, c.version), folder=self.owner.get(c.name)
            )
            self.versions.setdefault(c.name, {})[c.version] = model
        self._refresh_defaults(list(self.versions))

    @classmethod
    def from_directory(
        cls,
        models_dir: Path,
        metrics: Metrics,
        retry_after_s: float = 1.0,
        *,
        extra_backends: list[str] | None = None,
        model_control: ModelControl = "none",
        workers: int = 1,
        cores: int | None = None,
    ) -> ModelRepository:
        """Every folder of a model repository (raises on a bad config, as at every start)."""
        folders = scan(models_dir, extra_backends)
        configs = [c for cs in folders.values() for c in cs]
        owners = {c.name: folder for folder, cs in folders.items() for c in cs}
        repo = cls(
            configs,
            metrics,
            retry_after_s,
            models_dir=models_dir,
            owners=owners,
            extra_backends=extra_backends,
            model_control=model_control,
            workers=workers,
            cores=cores,
        )
        listed = list_folders(models_dir)
        for name in folders:
            repo._fingerprints[name] = fingerprint(listed[name])
        return repo

    # ------------------------------------------------------------------ lookups
    def _telemetry_of(self, name: str, version: str) -> ModelTelemetry:
        """One per (name, version), kept across reloads of that version: V2 statistics are
        per version, as Triton's; the Prometheus series are the name's (the name's first
        telemetry publishes its ready gauge as 0, later versions leave it alone)."""
        if name not in self._telemetry:
            self._telemetry[name] = self.metrics.for_model(name)
        key = (name, version)
        if key not in self._version_telemetry:
            self._version_telemetry[key] = self.metrics.for_model(name, reset_ready=False)
        return self._version_telemetry[key]

    def get(self, name: str, version: str | None = None) -> ServedModel:
        try:
            model = self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {name!r} (served: {known})") from None
        if version is None:
            return model
        served = self.versions.get(name, {})
        if version not in served:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} (served: {', '.join(served)})"
            )
        return served[version]

    def served_versions(self, name: str) -> list[str]:
        return list(self.versions.get(name, {}))

    def all_served(self) -> list[ServedModel]:
        """Every served (name, version)."""
        return [m for versions in self.versions.values() for m in versions.values()]

    def _refresh_defaults(self, names: list[str]) -> None:
        for name in names:
            served = self.versions.get(name)
            if not served:
                self.versions.pop(name, None)
                self.models.pop(name, None)
                continue
            ordered = dict(sorted(served.items(), key=lambda kv: _version_key(kv[0])))
            self.versions[name] = ordered
            self.models[name] = ordered[next(reversed(ordered))]

    # ------------------------------------------------------------------ readiness
    @property
    def ready(self) -> bool:
        return (
            not self.draining and bool(self.models) and all(m.ready for m in self.models.values())
        )

    def publish_ready(self, name: str) -> None:
        """The one place the model_ready gauge is set: it follows the name's served model."""
        telemetry = self._telemetry.get(name)
        if telemetry is not None:
            model = self.models.get(name)
            telemetry.ready.set(1 if model is not None and model.ready else 0)

    def mark_draining(self) -> None:
        """Not ready from now on: flags only, so a signal handler may call it (Prometheus's
        multiprocess values sit behind a lock that the interrupted code may hold)."""
        self.draining = True
        for model in self.all_served():
            model.draining = True

    def begin_drain(self) -> None:
        """Not ready from now on (requests are still accepted until close()); the ready gauges
        follow. Call it on the event loop, not from a signal handler (see mark_draining)."""
        self.mark_draining()
        for name in list(self._telemetry):
            self.publish_ready(name)

    # ------------------------------------------------------------------ start and stop
    async def load_all(self) -> None:
        for model in self.all_served():
            await self._start(model)

    async def _build(self, cfg: ModelConfig) -> Instances:
        """Load, warm up and start one model beside whatever serves now."""
        return await self.builder.build(
            cfg,
            self._telemetry_of(cfg.name, cfg.version),
            on_health_change=lambda: self.publish_ready(cfg.name),
        )

    async def _start(self, model: ServedModel) -> None:
        try:
            built = await self._build(model.config)
        except Exception as exc:
            model.state = ModelState.FAILED
            model.reason = f"load failed: {type(exc).__name__}: {exc}"
            log.error("model %s: %s", model.name, model.reason)
            return
        model.attach(built)
        model.telemetry.set_info(built.config.backend, built.info.device, built.info.precision)
        self.publish_ready(model.name)

    def stop_accepting(self) -> None:
        self.begin_drain()
        for model in self.all_served():
            if model.batcher is not None:
                model.batcher.stop_accepting()
                if model.state == ModelState.READY:
                    model.state = ModelState.STOPPING
        for name in list(self._telemetry):
            self.publish_ready(name)

    async def close(self) -> None:
        """Finish every accepted request, then release every model."""
        self.stop_accepting()
        for model in self.all_served():
            if model.batcher is not None:
                await model.batcher.close()
            for backend in model.backends:
                close_quietly(backend)
            model.backends.clear()
            if model.state != ModelState.FAILED:
                model.state = ModelState.STOPPED
        for name in list(self._telemetry):
            self.publish_ready(name)

    # ------------------------------------------------------------------ repository API
    def _check_control(self, action: str) -> None:
        if self.model_control != "explicit":
            raise ModelControlDisabled(
                f"{action} is disabled: model control mode is {self.model_control!r}; start the "
                "server with RESNET_SERVE_MODEL_CONTROL=explicit to allow load and unload"
            )
        if self.workers > 1:
            raise ModelControlDisabled(
                f"{action} is disabled with workers > 1: each worker process holds its own "
                "models and a call reaches only one of them; restart the workers instead"
            )

    def _folder(self, name: str) -> Folder:
        return resolve_folder(self.models_dir, name, self.owner)

    def _lock(self, folder: str) -> asyncio.Lock:
        return self._locks.setdefault(folder, asyncio.Lock())

    def _models_of(self, folder: str) -> list[ServedModel]:
        return [m for m in self.all_served() if m.folder == folder]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model folder of the repository with its served models: Triton's repository
        index (name, version, state READY / UNAVAILABLE / LOADING / UNLOADING, reason)."""
        folders = list(list_folders(self.models_dir)) if self.models_dir is not None else []
        folders += sorted({m.folder for m in self.all_served() if m.folder} - set(folders))
        entries: list[IndexEntry] = []
        for folder in folders:
            models = self._models_of(folder)
            busy = self._busy.get(folder)
            if not models:
                error = self.load_errors.get(folder)
                state = IndexState[busy.name] if busy else IndexState.UNAVAILABLE
                entries.append(IndexEntry(folder, state, error or ("" if busy else "unloaded")))
            for m in sorted(models, key=lambda m: (m.name, _version_key(m.config.version))):
                entries.append(self._entry(m, busy, self.load_errors.get(folder)))
        entries += [self._entry(m, None, None) for m in self.all_served() if m.folder is None]
        if ready_only:
            entries = [e for e in entries if e.state == IndexState.READY]
        return entries

    def _entry(self, m: ServedModel, busy: ModelState | None, error: str | None) -> IndexEntry:
        if m.state in (ModelState.UNLOADING, ModelState.STOPPING) or busy == ModelState.UNLOADING:
            state, reason = IndexState.UNLOADING, ""
        elif m.ready:
            state = IndexState.READY
            reason = f"serving the previous load; the last one failed: {error}" if error else ""
            if busy == ModelState.LOADING:
                reason = "serving; a new load is being built beside it"
        elif m.state == ModelState.LOADING:
            state, reason = IndexState.LOADING, ""
        else:
            state = IndexState.UNAVAILABLE
            reason = m.reason or ("draining" if m.draining else f"not ready ({m.state})")
        return IndexEntry(m.name, state, reason, m.config.version)

    async def load(self, name: str) -> list[IndexEntry]:
        """Load a folder of the repository (a folder name, or a model it serves), or reload it
        if its files changed: built and warmed beside what serves now, then switched at once.
        Returns the folder's index entries. Raises ModelControlDisabled, InvalidInput (not a
        plain name), ModelNotFound (no such folder), ModelLoadFailed (nothing changed)."""
        self._check_control("load")
        folder = self._folder(name)
        async with self._lock(folder.name):
            if self.draining:
                raise ModelNotReady("the server is shutting down: nothing is loaded")
            current = self._models_of(folder.name)
            mark = await asyncio.to_thread(fingerprint, folder)
            if (
                current
                and mark == self._fingerprints.get(folder.name)
                and all(m.ready for m in current)
            ):
                log.info("load %s: unchanged and serving; nothing to do", folder.name)
                return self._folder_index(folder.name)
            self._busy[folder.name] = ModelState.LOADING
            try:
                built = await self._build_folder(folder)
            except Exception as exc:
                reason = f"load failed: {exc}"
                self.load_errors[folder.name] = reason
                keeps = "; the previous one keeps serving" if current else ""
                log.error("load %s: %s%s", folder.name, reason, keeps)
                raise ModelLoadFailed(f"model {folder.name!r}: {reason}{keeps}") from None
            finally:
                self._busy.pop(folder.name, None)
            if self.draining:  # SIGTERM while it was being built
                await retire(built)  # type: ignore[unreachable]  # begin_drain() may run during the awaits above
                raise ModelNotReady("the server is shutting down: nothing is loaded")
            retired = self._switch(folder.name, built)
            self._fingerprints[folder.name] = mark
            self.load_errors.pop(folder.name, None)
            log.info(
                "load %s: now serving %s; draining the previous instances",
                folder.name,
                ", ".join(f"{b.config.name} v{b.config.version}" for b in built),
            )
            await retire(retired)
            return self._folder_index(folder.name)

    def _folder_index(self, folder: str) -> list[IndexEntry]:
        return [e for e in self.index() if self.owner.get(e.name, e.name) == folder]

    async def _build_folder(self, folder: Folder) -> list[Instances]:
        configs = await asyncio.to_thread(read_folder, folder, self.extra_backends)
        clash = sorted(
            c.name for c in configs if c.name in self.owner and self.owner[c.name] != folder.name
        )
        if clash:
            raise ValueError(f"model names already served from another folder: {clash}")
        built: list[Instances] = []
        try:
            for cfg in configs:
                cfg_name = f"{cfg.name} version {cfg.version}"
                try:
                    built.append(await self._build(cfg))
                except Exception as exc:
                    raise ValueError(f"{cfg_name}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            await retire(built)
            raise
        return built

    def _switch(self, folder: str, built: list[Instances]) -> list[Instances]:
        """Serve `built` for this folder from now on; no await in here: one step of the loop.
        Returns the instances that served until now (to drain and close)."""
        retired: list[Instances] = []
        keep = {(b.config.name, b.config.version) for b in built}
        touched = {m.name for m in self._models_of(folder)}
        for b in built:
            name, version = b.config.name, b.config.version
            model = self.versions.get(name, {}).get(version)
            if model is None:
                model = ServedModel(b.config, self._telemetry_of(name, version), folder=folder)
                model.draining = self.draining
                self.versions.setdefault(name, {})[version] = model
            old = model.attach(b)
            if old is not None:
                retired.append(old)
            model.telemetry.set_info(b.config.backend, b.info.device, b.info.precision)
            self.owner[name] = folder
            touched.add(name)
        gone = [m for m in self._models_of(folder) if (m.name, m.config.version) not in keep]
        for m in gone:
            self._stop_serving(m, "no longer served after a load of its folder", retired)
        self._refresh_defaults(sorted(touched))
        for m in gone:  # a request holding a version no longer served goes to its successor
            m.replaced_by = self.models.get(m.name)
            if m.name not in self.models:
                self.owner.pop(m.name, None)
        for name in touched:
            self.publish_ready(name)
        return retired

    def _stop_serving(self, m: ServedModel, reason: str, retired: list[Instances]) -> None:
        """Take one version out of the served set; its instances join `retired` (to drain
        and close)."""
        del self.versions[m.name][m.config.version]
        m.state, m.reason = ModelState.STOPPED, reason
        old = m.detach()
        if old is not None:
            retired.append(old)

    async def unload(self, name: str) -> list[IndexEntry]:
        """Stop accepting (503 meanwhile), finish every request accepted, release the
        instances; the names then answer 404. Unloading what is not loaded is a no-op."""
        self._check_control("unload")
        folder = self._unload_folder(name)
        async with self._lock(folder):
            models = self._models_of(folder)
            if not models:
                return self._folder_index(folder)
            self._busy[folder] = ModelState.UNLOADING
            try:
                for m in models:
                    m.state, m.reason = ModelState.UNLOADING, "being unloaded"
                    if m.batcher is not None:
                        m.batcher.stop_accepting()
                    self.publish_ready(m.name)
                await asyncio.gather(*(m.batcher.drain() for m in models if m.batcher))
                retired: list[Instances] = []
                for m in models:
                    self._stop_serving(m, "unloaded", retired)
                names = sorted({m.name for m in models})
                self._refresh_defaults(names)
                for n in names:
                    self.publish_ready(n)
                    if n not in self.models:  # free the name for another folder to serve
                        self.owner.pop(n, None)
                await retire(retired)
            finally:
                self._busy.pop(folder, None)
            self._fingerprints.pop(folder, None)
            self.load_errors.pop(folder, None)
            log.info("unload %s: %s unloaded", folder, ", ".join(names))
            return self._folder_index(folder)

    def _unload_folder(self, name: str) -> str:
        """A folder of the repository, or one that still serves after its files went away."""
        served = {m.folder for m in self.all_served() if m.folder}
        if name in served:
            return name
        if name in self.owner and self.owner[name] in served:
            return self.owner[name]
        return self._folder(name).name
