"""A backend added as one file (tests/backends/plugin_backend.py) and a plugin setting: served
over /v1 and V2 (whose metadata and config learn its platform and file from the class), and
listed and run by `resnet-serve check`. Also: V2 names an int8 model's own file."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.backends import REGISTRY
from app.cli import main
from app.config import Settings, read_model_config
from app.main import create_app
from app.offline.imagefolder import load_images
from tests.backends.plugin_backend import PLUGIN, ThrowawayBackend
from tests.conftest import app_client


@pytest.fixture()
def plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plugin named in the environment, as an operator would; the registry restored after."""
    saved = dict(REGISTRY)
    monkeypatch.setenv("RESNET_SERVE_BACKEND_PLUGINS", PLUGIN)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


@pytest.fixture()
def throwaway_dir(digits_dir: Path, tmp_path: Path) -> Path:
    """The digits export, plus its ONNX files under the throwaway backend's own file keys."""
    model = tmp_path / "models" / "digits"
    shutil.copytree(digits_dir, model)
    cfg = read_model_config(model)
    for precision, source in (("fp32", "onnx"), ("int8", "onnx-int8")):
        key = ThrowawayBackend.file_key(precision)
        cfg.files[key] = f"model.{key}.onnx"
        shutil.copy(model / cfg.files[source], model / cfg.files[key])
    cfg.write(model)
    return model


def test_the_class_says_what_it_serves(throwaway_dir: Path) -> None:
    cfg = read_model_config(throwaway_dir)
    assert ThrowawayBackend.precisions(cfg.files) == ["fp32", "int8"]
    assert ThrowawayBackend.precisions({"onnx": "model.onnx"}) == []
    int8 = cfg.variant("x", precision="int8")
    assert ThrowawayBackend.model_file(int8) == "model.throwaway-int8.onnx"
    assert [c.skip is None for c in ThrowawayBackend.check_candidates(cfg, "cpu")] == [True, True]


async def test_served_over_v1_and_v2(
    throwaway_dir: Path, digits_images: dict[str, Path], plugin_env: None
) -> None:
    repo = throwaway_dir.parent
    base = read_model_config(throwaway_dir)
    base.variants = {
        "digits-throwaway": {"backend": "throwaway", "precision": "int8"},
        "digits-int8": {"precision": "int8"},  # onnxruntime
    }
    base.write(throwaway_dir)
    files = sorted(digits_images["test"].rglob("*.jpg"))[::27]  # 20 images, every digit
    truth = [int(p.parent.name) for p in files]
    async with app_client(create_app(Settings(models_dir=repo))) as c:
        parts = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in files]
        r = await c.post("/v1/models/digits-throwaway/classify?top_k=1", files=parts)
        assert r.status_code == 200, r.text
        top1 = [int(row[0]["label"]) for row in r.json()["predictions"]]
        assert np.mean(np.equal(top1, truth)) >= 0.9, (top1, truth)
        described = (await c.get("/v1/models/digits-throwaway")).json()
        assert described["backend"] == "throwaway" and described["providers"] == ["throwaway-cpu"]

        meta = (await c.get("/v2/models/digits-throwaway")).json()
        assert meta["platform"] == "throwaway_onnx"
        config = (await c.get("/v2/models/digits-throwaway/config")).json()
        assert config["platform"] == "throwaway_onnx" and config["backend"] == "throwaway"
        assert config["default_model_filename"] == "model.throwaway-int8.onnx"
        ort_int8 = (await c.get("/v2/models/digits-int8/config")).json()
        assert ort_int8["platform"] == "onnxruntime_onnx"
        assert ort_int8["default_model_filename"] == "model.int8.onnx"  # not model.onnx

        pixels = load_images(digits_images["test"], base.input, limit=2).images
        body = {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": list(pixels.shape),
                    "data": pixels.ravel().tolist(),
                }
            ]
        }
        r = await c.post("/v2/models/digits-throwaway/infer", json=body)
        assert r.status_code == 200, r.text
        logits = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(2, 10)
        want = ThrowawayBackend(base.variant("direct", backend="throwaway", precision="int8"))
        want.load()
        np.testing.assert_allclose(logits, want.infer(pixels), rtol=1e-5, atol=1e-5)


def test_listed_and_run_by_check(
    throwaway_dir: Path,
    digits_images: dict[str, Path],
    plugin_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["check", str(throwaway_dir), "--images", str(digits_images["test"]), "--limit", "60"]
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| throwaway ")]
    assert len(rows) == 2, out
    assert "| fp32 " in rows[0] and "throwaway-cpu" in rows[0] and rows[0].endswith("| pass |")
    assert "| int8 " in rows[1] and rows[1].endswith("| pass |")


def test_a_plugin_that_does_not_import_is_a_clear_check_error(
    digits_dir: Path,
    digits_images: dict[str, Path],
    plugin_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RESNET_SERVE_BACKEND_PLUGINS", "gone=tests.backends.no_such_module:Gone")
    argv = ["check", str(digits_dir), "--images", str(digits_images["test"]), "--limit", "5"]
    assert main(argv) == 2
    assert "no_such_module" in capsys.readouterr().err
