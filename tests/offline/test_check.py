"""`resnet-serve check`: agreement of every backend and precision with eager fp32, on the
trained digits model and its real held-out images; and that a miss exits non-zero."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.backends.openvino import openvino_unavailable
from app.backends.torch.common import bf16_support
from app.backends.torch.models import build_arch
from app.cli import main
from app.config import read_model_config
from app.offline import check
from app.offline.agreement import compare
from app.offline.export import export_model
from app.offline.quantize import quantize_int8
from app.offline.recipes import digits


@pytest.fixture(scope="module")
def report(digits_dir: Path, digits_images: dict[str, Path]):
    return check.check_model(digits_dir, digits_images["test"])


def rows_by_key(rows: list[check.Row]) -> dict[tuple[str, str], check.Row]:
    return {(r.backend, r.precision): r for r in rows}


def test_every_cpu_backend_and_precision_agrees(report) -> None:
    cfg, data, rows, ref_acc = report
    assert len(data.files) == 540 and data.truth is not None
    assert ref_acc is not None and ref_acc >= 0.99
    by = rows_by_key(rows)
    ran = {k for k, r in by.items() if not r.skipped}
    expected = {
        ("eager", "fp32"),
        ("torchscript", "fp32"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("onnxruntime", "fp16"),
    }
    if bf16_support("cpu") is None:
        expected |= {("eager", "bf16"), ("torchscript", "bf16")}
    if importlib.util.find_spec("openvino") is not None:
        expected |= {("openvino", "fp32"), ("openvino", "int8")}
        if openvino_unavailable("bf16", "cpu") is None:
            expected.add(("openvino", "bf16"))
        else:
            assert by[("openvino", "bf16")].skipped  # listed, with why
    assert expected <= ran
    for row in rows:
        assert row.passed, check.format_table(rows)
    fp32 = [("eager", "fp32"), ("torchscript", "fp32"), ("onnxruntime", "fp32")]
    fp32 += [k for k in [("openvino", "fp32")] if k in ran]
    for key in fp32:
        rel_error = by[key].rel_error
        assert rel_error is not None and rel_error < 1e-4
        assert by[key].top1 == 1.0 and by[key].top5 == 1.0 and by[key].accuracy == ref_acc
    int8_top1 = by[("onnxruntime", "int8")].top1
    assert int8_top1 is not None and int8_top1 >= 0.99
    assert by[("onnxruntime", "int8")].provider == "CPUExecutionProvider"
    assert by[("eager", "fp16")].skipped  # no CUDA device here
    if ("openvino", "int8") in ran:
        ov_top1 = by[("openvino", "int8")].top1
        assert ov_top1 is not None and ov_top1 >= 0.99
        assert by[("openvino", "int8")].provider == "OpenVINO:CPU:int8"  # read back


def test_compare_measures_what_it_says() -> None:
    ref = np.array([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    same_top5 = ref.copy()
    same_top5[0, [1, 2]] = [1.0, 2.0]  # rank 2 and 3 swap: top-1 and top-5 set unchanged
    assert compare(ref, same_top5)[:2] == (1.0, 1.0)
    other = ref.copy()
    other[1, 0] = 10.0  # new best class of image 1, and class 0 enters its top 5
    top1, top5, rel = compare(ref, other)
    assert (top1, top5) == (0.5, 0.5) and rel == pytest.approx(10.0 / 5.0)


def test_cli_prints_the_table_and_exits_zero(
    digits_dir: Path, digits_images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["check", str(digits_dir), "--images", str(digits_images["test"]), "--limit", "100"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| onnxruntime | int8" in out and "top-1 agree" in out and "100 images" in out
    assert "FAIL" not in out


def test_badly_calibrated_int8_fails_the_check(
    digits_dir: Path,
    digits_images: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """int8 calibrated on blank paper agrees on ~76 % of the held-out digits: exit 1."""
    bad = tmp_path / "digits"
    shutil.copytree(digits_dir, bad)
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(3):
        Image.new("L", (80, 80), 255).save(blank / f"{i}.png")
    quantize_int8(bad / "model.onnx", bad / "model.int8.onnx", blank, digits.PREPROCESS)
    rc = main(["check", str(bad), "--images", str(digits_images["test"])])
    out = capsys.readouterr().out
    assert rc == 1
    # every backend that reads model.int8.onnx fails it (ONNX Runtime, and OpenVINO when
    # installed); nothing else does
    int8 = [line for line in out.splitlines() if "| int8 " in line and "-bf16" not in line]
    int8 = [line for line in int8 if line.startswith(("| onnxruntime", "| openvino"))]
    assert any(line.startswith("| onnxruntime") for line in int8)
    assert all("FAIL" in line for line in int8), out
    rest = [line for line in out.splitlines() if line not in int8]
    assert not any("FAIL" in line for line in rest), out


def test_a_different_fp32_graph_fails_the_check(
    digits_dir: Path, digits_images: dict[str, Path], tmp_path: Path
) -> None:
    """An ONNX file of other weights (here: untrained) must not pass as the trained model."""
    bad = tmp_path / "digits"
    shutil.copytree(digits_dir, bad)
    torch.manual_seed(1)
    torch.save(build_arch("resnet-mini", 10).state_dict(), tmp_path / "untrained.pt")
    other = export_model(
        "resnet-mini",
        str(tmp_path / "untrained.pt"),
        ["onnx"],
        tmp_path / "other",
        preprocess=digits.PREPROCESS,
    )
    shutil.copy(tmp_path / "other" / other.files["onnx"], bad / "model.onnx")
    _, _, rows, _ = check.check_model(bad, digits_images["test"], limit=50)
    by = rows_by_key(rows)
    assert not by[("onnxruntime", "fp32")].passed
    rel_error = by[("onnxruntime", "fp32")].rel_error
    assert rel_error is not None and rel_error > 1e-4
    assert by[("torchscript", "fp32")].passed


def test_wrong_number_of_classes_is_a_failed_row(
    digits_dir: Path, digits_images: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "digits"
    shutil.copytree(digits_dir, bad)
    export_model(
        "resnet-mini", "random", ["onnx"], tmp_path / "other", preprocess=digits.PREPROCESS
    )  # 1000 classes
    shutil.copy(tmp_path / "other" / "model.onnx", bad / "model.onnx")
    _, _, rows, _ = check.check_model(bad, digits_images["test"], limit=10)
    row = rows_by_key(rows)[("onnxruntime", "fp32")]
    assert not row.passed and "shape" in (row.error or "")


def test_missing_images_is_a_clear_error(
    digits_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(digits_dir), "--images", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["check", str(digits_dir), "--images", str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err
    no_eager = tmp_path / "no-eager"
    shutil.copytree(digits_dir, no_eager)
    config = read_model_config(no_eager)
    config.files.pop("eager")
    config.write(no_eager)
    assert main(["check", str(no_eager), "--images", str(tmp_path / "empty")]) == 2
    assert "no eager state_dict" in capsys.readouterr().err


def test_unlabelled_folder_reports_agreement_without_accuracy(
    digits_dir: Path, digits_images: dict[str, Path], tmp_path: Path
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(digits_images["test"].rglob("*.jpg"))[:20]:
        shutil.copy(path, flat / f"{path.parent.name}-{path.name}")
    _, data, rows, ref_acc = check.check_model(digits_dir, flat)
    assert data.truth is None and ref_acc is None
    assert all(r.accuracy is None and r.passed for r in rows)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU precisions need a CUDA device")
def test_gpu_precisions_agree(digits_dir: Path, digits_images: dict[str, Path]) -> None:
    """On a GPU machine: eager fp16, ONNX fp16 on the CUDA (and TensorRT, if built in)
    providers, and fp32 on the GPU, against eager fp32 on the CPU."""
    import onnxruntime as ort

    _, _, rows, _ = check.check_model(digits_dir, digits_images["test"], device="cuda:0")
    by = rows_by_key(rows)
    assert not by[("eager", "fp16")].skipped
    if "CUDAExecutionProvider" in ort.get_available_providers():
        fp16 = [r for r in rows if r.backend == "onnxruntime" and r.precision == "fp16"]
        assert any(r.provider == "CUDAExecutionProvider" for r in fp16), check.format_table(rows)
    for row in rows:
        assert row.passed, check.format_table(rows)
