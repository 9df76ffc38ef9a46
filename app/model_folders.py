"""The model repository on disk: which folders it holds, and what one folder serves.

A model folder holds either one model (`config.json` and its files), or numbered version
sub-folders, Triton-style (`1/`, `2/`, each with its `config.json` and files) and optionally a
top-level `config.json` holding only Triton's `version_policy`:

    {"version_policy": {"latest": {"num_versions": 2}}}      the highest N (default N = 1)
    {"version_policy": {"all": {}}}                          every version folder
    {"version_policy": {"specific": {"versions": [1, 3]}}}   exactly these

Every served version keeps the name in its config.json; its `version` is the folder's number.
Each version's config may declare `variants`, and `--backends` adds <model>-<backend> copies:
all of them belong to the folder, and load/unload of the folder acts on all of them.

Clients never name a path: `resolve_folder()` only picks among the folders listed here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.config import CONFIG_FILE, ModelConfig, read_model_config
from app.errors import InvalidInput, ModelNotFound

MAX_FINGERPRINT_FILES = 10_000


class _Latest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_versions: int = Field(1, ge=1)


class _Specific(BaseModel):
    model_config = ConfigDict(extra="forbid")
    versions: list[int] = Field(min_length=1)


class VersionPolicy(BaseModel):
    """Triton's version_policy: exactly one of latest, all, specific (default latest 1)."""

    model_config = ConfigDict(extra="forbid")
    latest: _Latest | None = None
    all: dict[str, object] | None = None
    specific: _Specific | None = None

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        chosen = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"version_policy sets {' and '.join(chosen)}; set one")
        return self

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.all is not None:
            return ordered
        if self.specific is not None:
            missing = sorted(set(self.specific.versions) - set(ordered))
            if missing:
                raise ValueError(
                    f"version_policy asks for versions {missing}, which have no folder "
                    f"(found: {ordered})"
                )
            return sorted(set(self.specific.versions))
        n = self.latest.num_versions if self.latest is not None else 1
        return ordered[-n:]


class FolderConfig(BaseModel):
    """The top-level config.json of a folder with version sub-folders."""

    model_config = ConfigDict(extra="forbid")
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)


@dataclass(frozen=True)
class Folder:
    name: str
    path: Path


def _version_dirs(path: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for child in path.iterdir():
        if child.is_dir() and child.name.isdigit() and (child / CONFIG_FILE).is_file():
            found[int(child.name)] = child
    return found


def list_folders(models_dir: Path) -> dict[str, Folder]:
    """Every model folder of the repository: a config.json, or numbered version folders."""
    if not models_dir.is_dir():
        raise FileNotFoundError(f"model repository {models_dir} does not exist")
    out: dict[str, Folder] = {}
    for child in sorted(models_dir.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if (child / CONFIG_FILE).is_file() or _version_dirs(child):
            out[child.name] = Folder(child.name, child)
    return out


def check_name(name: str) -> None:
    """A client-given model name: a plain name, never a path."""
    if (
        not name
        or len(name) > 128
        or any(c in name for c in "/\\\0")
        or name in (".", "..")
        or ".." in name
        or name.startswith(".")
    ):
        raise InvalidInput(f"{name!r} is not a model name (a folder name of the repository)")


def resolve_folder(models_dir: Path | None, name: str, owner: dict[str, str]) -> Folder:
    """The folder a client means by `name`: a folder of the repository, or a served model
    (a variant, a version, a <model>-<backend> copy) that came from one (`owner`)."""
    check_name(name)
    if models_dir is None:
        raise ModelNotFound(f"no model folder named {name!r}: the server has no model repository")
    folders = list_folders(models_dir)
    folder = folders.get(name) or folders.get(owner.get(name, ""))
    if folder is None:
        known = ", ".join(folders) or "none"
        raise ModelNotFound(f"no model folder named {name!r} in the repository (folders: {known})")
    return folder


def read_folder(folder: Folder, extra_backends: list[str] | None = None) -> list[ModelConfig]:
    """Every model one folder serves: each selected version, its variants, and one copy per
    extra backend. Raises ValueError (with the file at fault) when anything is wrong."""
    versions = _version_dirs(folder.path)
    top = folder.path / CONFIG_FILE
    try:
        if not versions:
            bases = [read_model_config(folder.path)]
        else:
            policy = VersionPolicy()
            if top.is_file():
                policy = FolderConfig.model_validate_json(top.read_text()).version_policy
            bases = []
            for v in policy.select(list(versions)):
                cfg = read_model_config(versions[v])
                cfg.version = str(v)
                bases.append(cfg)
    except (ValidationError, ValueError, OSError) as exc:
        raise ValueError(f"{folder.name}: {_short(exc)}") from None
    configs: list[ModelConfig] = []
    for base in bases:
        configs.append(base)
        for name, overrides in base.variants.items():
            configs.append(_keep_version(base.variant(name, **overrides), base))
        for backend in extra_backends or []:
            if backend != base.backend:
                copy = base.variant(f"{base.name}-{backend}", backend=backend)
                configs.append(_keep_version(copy, base))
    return configs


def _keep_version(cfg: ModelConfig, base: ModelConfig) -> ModelConfig:
    cfg.version = base.version
    return cfg


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"invalid {CONFIG_FILE}: {where}: {first.get('msg')}{more}"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid {CONFIG_FILE}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def scan(models_dir: Path, extra_backends: list[str] | None = None) -> dict[str, list[ModelConfig]]:
    """Folder name -> the models it serves, for the whole repository (at start-up)."""
    out = {name: read_folder(f, extra_backends) for name, f in list_folders(models_dir).items()}
    # a name may repeat within its own folder (its versions); never across two folders
    names = [n for configs in out.values() for n in {c.name for c in configs}]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"model names served twice: {', '.join(duplicates)}")
    return out


def fingerprint(folder: Folder) -> tuple[tuple[str, int, int], ...]:
    """What the folder holds now (relative path, size, mtime of every file): a load of an
    unchanged folder that serves well is a no-op."""
    entries: list[tuple[str, int, int]] = []
    for root, dirs, files in os.walk(folder.path):
        # hidden folders and caches the backends write (TensorRT engines) are not the export
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith("cache"))
        for f in sorted(files):
            p = Path(root) / f
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((str(p.relative_to(folder.path)), st.st_size, st.st_mtime_ns))
            if len(entries) >= MAX_FINGERPRINT_FILES:
                return tuple(entries)
    return tuple(entries)


def load_model_configs(
    models_dir: Path, extra_backends: list[str] | None = None
) -> list[ModelConfig]:
    """Every model to serve from a repository: each folder's config (or its served version
    folders), its variants, and one copy per extra backend asked for (named <model>-<backend>)."""
    return [c for configs in scan(models_dir, extra_backends).values() for c in configs]
