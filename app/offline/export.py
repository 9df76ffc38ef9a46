"""Export a torchvision ResNet to a model directory: state_dict (eager), TorchScript, ONNX.

Every exported graph takes uint8 NHWC images and normalises itself. Each format is checked
against eager fp32 on the same random batch, and the error is recorded in config.json.
Reduced precisions (--precisions int8,fp16,bf16) add files beside them (app/offline/quantize.py),
checked on the calibration images; `resnet-serve check` measures them on real data.
"""

from __future__ import annotations

import copy
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from app.backends.torch.models import ARCHS, UInt8Classifier, build_arch, quiet_torch, wrap
from app.config import BatchingConfig, ModelConfig, PreprocessConfig
from app.offline.agreement import relative_error

log = logging.getLogger(__name__)

FORMATS = ("eager", "torchscript", "onnx")
FILES = {"eager": "model.pt", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
# Reduced precisions: the files each one adds (eager bf16 needs none: it converts the state_dict).
PRECISIONS = ("int8", "fp16", "bf16")
PRECISION_FILES = {
    "onnx-int8": "model.int8.onnx",
    "onnx-fp16": "model.fp16.onnx",
    "torchscript-bf16": "model.torchscript-bf16.pt",
}
# Images of the calibration folder that the int8 export reads (and checks itself on).
CALIBRATION_LIMIT = 512
FP32_TOLERANCE = 1e-4
ONNX_OPSET = 18


class ExportError(Exception):
    """The export cannot go on; the message says what to do."""


@dataclass
class Weights:
    state_dict: dict[str, torch.Tensor] | None
    source: str
    labels: list[str]
    fallback: bool = False


def imagenet_labels(arch: str) -> list[str]:
    """Class names ship inside torchvision's weight metadata: no download needed."""
    if arch not in torchvision.models.list_models():
        return []  # our own architectures (resnet-mini) have no ImageNet weights
    return list(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])


def resolve_weights(arch: str, weights: str, allow_random_fallback: bool, seed: int) -> Weights:
    if weights == "random":
        torch.manual_seed(seed)
        return Weights(None, f"random (seed {seed})", imagenet_labels(arch))
    if weights == "imagenet":
        if arch not in torchvision.models.list_models():
            raise ExportError(
                f"{arch} has no ImageNet weights; pass a state_dict file to --weights"
            )
        spec = torchvision.models.get_model_weights(arch).DEFAULT
        try:
            state = spec.get_state_dict(progress=False, check_hash=True)
            return Weights(state, f"imagenet ({spec})", imagenet_labels(arch))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if not allow_random_fallback:
                raise ExportError(
                    f"could not download torchvision's ImageNet weights for {arch} ({reason}). "
                    "Put the file in $TORCH_HOME/hub/checkpoints, pass a state_dict path to "
                    "--weights, or pass --allow-random-fallback to export RANDOM weights."
                ) from None
            banner = "!" * 78
            print(
                f"\n{banner}\n!! WARNING: ImageNet weights for {arch} could not be downloaded:\n"
                f"!!   {reason}\n"
                "!! Exporting RANDOM weights instead: predictions are MEANINGLESS.\n"
                "!! This is recorded in config.json (weights_fallback: true) and shown by the "
                "API.\n"
                f"{banner}\n",
                file=sys.stderr,
                flush=True,
            )
            torch.manual_seed(seed)
            return Weights(
                None,
                f"random (seed {seed}; FALLBACK: ImageNet weights could not be downloaded)",
                imagenet_labels(arch),
                fallback=True,
            )
    path = Path(weights)
    if not path.is_file():
        raise ExportError(
            f"--weights must be imagenet, random or a state_dict file; {path} is none"
        )
    loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ExportError(f"{path} does not hold a state_dict")
    return Weights(loaded, f"file {path.name}", [])


def build_model(arch: str, weights: Weights) -> torch.nn.Module:
    num_classes = 1000
    if weights.state_dict is not None and "fc.weight" in weights.state_dict:
        num_classes = int(weights.state_dict["fc.weight"].shape[0])
    model = build_arch(arch, num_classes)
    if weights.state_dict is not None:
        try:
            model.load_state_dict(weights.state_dict)
        except RuntimeError as exc:
            raise ExportError(f"the weights do not fit {arch}: {exc}") from None
    return model.eval()


def export_torchscript(module: UInt8Classifier, example: torch.Tensor, path: Path) -> None:
    with quiet_torch(), torch.no_grad():
        traced = torch.jit.trace(module, (example,))
        frozen = torch.jit.freeze(traced)
        torch.jit.save(frozen, str(path))


def export_onnx(module: UInt8Classifier, example: torch.Tensor, path: Path) -> None:
    # The TorchScript-based exporter: deprecated upstream but exact and quick here; the graph
    # is plain Conv/Gemm/Relu/Add plus the uint8 Cast/Transpose/Mul/Sub at its head.
    with quiet_torch(), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {session.get_inputs()[0].name: batch})[0]
    return out


def export_model(
    arch: str,
    weights: str,
    formats: list[str],
    out: Path,
    name: str | None = None,
    allow_random_fallback: bool = False,
    seed: int = 0,
    labels: list[str] | None = None,
    preprocess: PreprocessConfig | None = None,
    batching: BatchingConfig | None = None,
    precisions: list[str] | None = None,
    calibration_images: Path | None = None,
) -> ModelConfig:
    """Export fp32 `formats`, then the reduced-precision files of `precisions`:
    int8 -> onnx-int8 (static QDQ, calibrated on calibration_images), fp16 -> onnx-fp16,
    bf16 -> torchscript-bf16 (eager serves bf16 from the fp32 state_dict)."""
    precisions = list(precisions or [])
    _check_precisions(precisions, formats, calibration_images)
    if arch not in ARCHS:
        raise ExportError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ExportError(f"formats must be some of {', '.join(FORMATS)}; got {formats}")
    preprocess = preprocess or PreprocessConfig()
    resolved = resolve_weights(arch, weights, allow_random_fallback, seed)
    model = build_model(arch, resolved)
    head: Any = model.fc  # torch types a Module's attributes as Tensor | Module
    num_classes = int(head.out_features)
    labels = labels or resolved.labels
    if len(labels) != num_classes:
        labels = [f"class_{i}" for i in range(num_classes)]

    out.mkdir(parents=True, exist_ok=True)
    module = wrap(model, preprocess.mean, preprocess.std, "cpu", "fp32", channels_last=False)
    rng = np.random.default_rng(seed)
    check = rng.integers(0, 256, size=(4, preprocess.crop, preprocess.crop, 3), dtype=np.uint8)
    example = torch.from_numpy(check[:2].copy())
    with torch.inference_mode():
        reference = module(torch.from_numpy(check)).numpy()

    files: dict[str, str] = {}
    errors: dict[str, float] = {}
    for fmt in formats:
        path = out / FILES[fmt]
        if fmt == "eager":
            torch.save(model.state_dict(), path)
            got = _run_eager_from_file(arch, num_classes, path, preprocess, check)
        elif fmt == "torchscript":
            export_torchscript(module, example, path)
            with quiet_torch():
                loaded = torch.jit.load(str(path)).eval()
            with torch.inference_mode():
                got = loaded(torch.from_numpy(check)).numpy()
        else:
            export_onnx(module, example, path)
            got = run_onnx(path, check)
        files[fmt] = FILES[fmt]
        errors[fmt] = relative_error(reference, got)
        print(f"{fmt:12s} {path}  max relative error vs eager fp32: {errors[fmt]:.2e}")
        if errors[fmt] > FP32_TOLERANCE:
            raise ExportError(
                f"{fmt} disagrees with eager fp32: max relative error {errors[fmt]:.2e} "
                f"> {FP32_TOLERANCE:.0e}"
            )

    if precisions:
        sample = check
        if calibration_images is not None:
            from app.offline.imagefolder import load_images

            sample = load_images(calibration_images, preprocess, limit=64).images
        with torch.inference_mode():
            sample_reference = module(torch.from_numpy(sample)).numpy()
        for key, reduced in _export_precisions(
            precisions, files, module, example, out, preprocess, calibration_images, sample
        ):
            files[key] = PRECISION_FILES[key]
            if reduced is not None:
                errors[key] = relative_error(sample_reference, reduced)
                where = "calibration images" if sample is not check else "random images"
                print(
                    f"{key:16s} {out / files[key]}  max relative error vs eager fp32 on "
                    f"{len(sample)} {where}: {errors[key]:.2e}"
                )

    backend = (
        "onnxruntime" if "onnx" in files else ("torchscript" if "torchscript" in files else "eager")
    )
    config = ModelConfig(
        name=name or out.name,
        arch=arch,
        backend=backend,
        files=files,
        num_classes=num_classes,
        labels=labels,
        weights=resolved.source,
        weights_fallback=resolved.fallback,
        input=preprocess,
        batching=batching or BatchingConfig(),
        export_check=errors,
    )
    config.write(out)
    print(
        f"wrote {out / 'config.json'} (serves with backend {backend}; weights: {resolved.source})"
    )
    return config


def _check_precisions(
    precisions: list[str], formats: list[str], calibration_images: Path | None
) -> None:
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        raise ExportError(f"precisions must be some of {', '.join(PRECISIONS)}; got {unknown}")
    for precision in ("int8", "fp16"):
        if precision in precisions and "onnx" not in formats:
            raise ExportError(f"{precision} is an ONNX Runtime precision: add onnx to the formats")
    if "int8" in precisions:
        if calibration_images is None:
            raise ExportError(
                "int8 needs calibration images: pass --calibration-images DIR (a folder of "
                "images like those the model will serve, e.g. its training images)"
            )
        if not calibration_images.is_dir():
            raise ExportError(f"calibration folder {calibration_images} does not exist")


def _export_precisions(
    precisions: list[str],
    files: dict[str, str],
    module: UInt8Classifier,
    example: torch.Tensor,
    out: Path,
    preprocess: PreprocessConfig,
    calibration_images: Path | None,
    sample: np.ndarray,
) -> list[tuple[str, np.ndarray | None]]:
    """Write each precision's file; return (files key, its logits on `sample` or None)."""
    from app.offline.quantize import convert_fp16, quantize_int8

    made: list[tuple[str, np.ndarray | None]] = []
    if "int8" in precisions:
        assert calibration_images is not None
        path = out / PRECISION_FILES["onnx-int8"]
        report = quantize_int8(
            out / files["onnx"], path, calibration_images, preprocess, CALIBRATION_LIMIT
        )
        print(f"onnx-int8: {report.summary()} from {calibration_images}")
        made.append(("onnx-int8", run_onnx(path, sample)))
    if "fp16" in precisions:
        path = out / PRECISION_FILES["onnx-fp16"]
        convert_fp16(out / files["onnx"], path)
        try:  # made for CUDA / TensorRT; ONNX Runtime's CPU provider runs it too, slowly
            got: np.ndarray | None = run_onnx(path, sample)
        except Exception as exc:
            print(f"onnx-fp16: not checked here (the CPU provider cannot run it: {exc})")
            got = None
        made.append(("onnx-fp16", got))
    if "bf16" in precisions and "torchscript" in files:
        path = out / PRECISION_FILES["torchscript-bf16"]
        bf16 = copy.deepcopy(module).to(torch.bfloat16).eval()  # as wrap(precision="bf16")
        export_torchscript(bf16, example, path)
        with quiet_torch():
            loaded = torch.jit.load(str(path)).eval()
        with torch.inference_mode():
            made.append(("torchscript-bf16", loaded(torch.from_numpy(sample)).float().numpy()))
    return made


def _run_eager_from_file(
    arch: str, num_classes: int, path: Path, preprocess: PreprocessConfig, batch: np.ndarray
) -> np.ndarray:
    model = build_arch(arch, num_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    module = wrap(model.eval(), preprocess.mean, preprocess.std, "cpu", "fp32", channels_last=True)
    with torch.inference_mode():
        return module(torch.from_numpy(batch)).numpy()
