"""Settings from the environment, model configs, variants and side-by-side backends."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import ModelConfig, Settings
from app.model_folders import load_model_configs


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_SERVE_PORT", "9123")
    monkeypatch.setenv("RESNET_SERVE_BACKENDS", "torchscript,eager")
    monkeypatch.setenv("RESNET_SERVE_MAX_BODY_BYTES", "1000")
    s = Settings()
    assert s.port == 9123 and s.backends == ["torchscript", "eager"] and s.max_body_bytes == 1000
    assert Settings(port=1).port == 1  # explicit values win


def test_model_config_validation() -> None:
    assert ModelConfig(name="m", device="cuda").device == "cuda:0"
    with pytest.raises(ValidationError):
        ModelConfig(name="m", device="gpu")
    with pytest.raises(ValidationError):
        ModelConfig(name="../etc")
    with pytest.raises(ValidationError):
        ModelConfig(name="m", num_classes=2, labels=["a"])
    with pytest.raises(ValidationError):
        ModelConfig(name="m", input={"resize": 200, "crop": 224})
    assert ModelConfig(name="m", device="cuda:1").pads_to_bucket
    assert not ModelConfig(name="m").pads_to_bucket


def test_repository_variants_and_extra_backends(resnet18_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(resnet18_dir, repo / "resnet18")
    cfg = ModelConfig.model_validate_json((repo / "resnet18" / "config.json").read_text())
    cfg.variants = {"r18-ts-bs4": {"backend": "torchscript", "batching": {"max_batch_size": 4}}}
    cfg.write(repo / "resnet18")
    (repo / "not-a-model").mkdir()
    configs = load_model_configs(repo, ["eager", "onnxruntime"])
    by_name = {c.name: c for c in configs}
    assert set(by_name) == {"resnet18", "r18-ts-bs4", "resnet18-eager"}
    assert by_name["r18-ts-bs4"].backend == "torchscript"
    assert by_name["r18-ts-bs4"].batching.max_batch_size == 4
    assert by_name["resnet18-eager"].directory == repo / "resnet18"
    with pytest.raises(FileNotFoundError):
        load_model_configs(tmp_path / "missing")
