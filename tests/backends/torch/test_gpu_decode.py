"""GPU decoding (input.decode "gpu"), run on the CPU: decode_jpeg works on CPU tensors too, so
the whole path (header check, EXIF orientation, resize + crop in torch, fallbacks, batching,
HTTP) runs here; only nvJPEG itself and CUDA streams need a GPU (the last test)."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

import app.backends.torch.gpu_decode as gpu_decode
from app.backends import REGISTRY, create_backend
from app.backends.base import Backend
from app.backends.torch.common import TorchBackend
from app.backends.torch.gpu_decode import decode_batch
from app.backends.torch.models import TorchRunner, build_arch, wrap
from app.batching import DynamicBatcher
from app.config import ModelConfig, PreprocessConfig, Settings
from app.errors import InvalidInput, PayloadTooLarge
from app.main import create_app
from app.metrics import Metrics
from app.preprocess import Batch, EncodedImage, decode, inspect
from app.repository import ModelRepository
from tests.conftest import app_client, encode, synthetic_photo
from tests.fakes import FakeBackend, expected_logits, fake_config

CFG = PreprocessConfig()
NO_DRAFT = PreprocessConfig(use_draft=False)
LIMIT = 40_000_000


def jpeg_with_orientation(img: Image.Image, orientation: int, **kw: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=92, **kw)
    return buf.getvalue()


def gpu_path(datas: list[bytes], cfg: PreprocessConfig = NO_DRAFT, pad_to: int | None = None):
    images = [inspect(d, cfg, LIMIT) for d in datas]
    out, errors = decode_batch(images, cfg, "cpu", pad_to or len(images))
    return out.numpy(), errors


def close(a: np.ndarray, b: np.ndarray, max_diff: int = 2, mean_diff: float = 0.5) -> None:
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= max_diff and diff.mean() <= mean_diff, (diff.max(), diff.mean())


# ---------------------------------------------------------------------- header check
def test_inspect_keeps_baseline_jpegs_encoded_and_decodes_the_rest_on_the_cpu(
    photo_jpeg: bytes,
) -> None:
    img = inspect(photo_jpeg, CFG, LIMIT)
    assert img.data is photo_jpeg and img.pixels is None
    assert (img.width, img.height, img.orientation) == (512, 600, 1)

    photo = synthetic_photo(1, (320, 240))
    others = {
        "png": encode(photo, "PNG"),
        "webp": encode(photo, "WEBP"),
        "progressive": encode(photo, "JPEG", progressive=True),
        "cmyk": encode(photo.convert("CMYK"), "JPEG"),
        "grey": encode(photo.convert("L"), "JPEG"),
    }
    for name, data in others.items():
        got = inspect(data, CFG, LIMIT)
        assert got.data is None and got.pixels is not None, name
        np.testing.assert_array_equal(got.pixels, decode(data, CFG, LIMIT), err_msg=name)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"\xff\xd8\xff\xe0" + b"\x00" * 40,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 30,
    ],
    ids=["empty", "text", "jpeg-magic-only", "png-magic-only"],
)
def test_inspect_gives_the_cpu_paths_errors(data: bytes) -> None:
    with pytest.raises(InvalidInput) as want:
        decode(data, CFG, LIMIT)
    with pytest.raises(InvalidInput) as got:
        inspect(data, CFG, LIMIT)
    assert got.value.message == want.value.message


def test_inspect_checks_the_pixel_limit_before_decoding() -> None:
    data = encode(synthetic_photo(0, (400, 300)), "JPEG")
    with pytest.raises(PayloadTooLarge, match="400x300"):
        inspect(data, CFG, 400 * 300 - 1)


# ---------------------------------------------------------------------- pixels
def test_gpu_path_matches_pillow_on_real_photos(jpegs: list[bytes]) -> None:
    out, errors = gpu_path(jpegs)
    assert errors == {} and out.shape == (len(jpegs), 224, 224, 3)
    for i, data in enumerate(jpegs):
        close(out[i], decode(data, NO_DRAFT, LIMIT), max_diff=2, mean_diff=0.25)
    # Pillow's draft mode (DCT scaling of large JPEGs) is a CPU shortcut: a few grey levels
    big = encode(synthetic_photo(7, (1600, 1200)), quality=90)
    out, _ = gpu_path([big], CFG)
    close(out[0], decode(big, CFG, LIMIT), max_diff=8, mean_diff=0.5)


@pytest.mark.parametrize(
    "size", [(375, 500), (480, 640), (3, 400), (100, 150), (256, 300), (1500, 2000)]
)
def test_crop_then_resize_equals_torchvisions_resize_then_crop(size: tuple[int, int]) -> None:
    """Only the crop is computed, same-size images together, with the weights of torchvision's
    antialiased bilinear resize: the pixels of torchvision's float path (the one it takes on
    CUDA) within one grey level (rounding at .5), and never the whole resized image."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from app.preprocess import centre_crop_box, resized_size

    h, w = size
    imgs = torch.randint(
        0, 256, (3, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h)
    )
    new_w, new_h = resized_size(w, h, CFG.resize)
    full = F.resize(imgs.float(), [new_h, new_w], InterpolationMode.BILINEAR, antialias=True)
    left, top, right, bottom = centre_crop_box(new_w, new_h, CFG.crop)
    want = full.round().clamp(0, 255).to(torch.uint8)[:, :, top:bottom, left:right]
    got = gpu_decode.crop_resize(imgs, CFG)
    assert got.shape == (3, 224, 224, 3)
    diff = (got.permute(0, 3, 1, 2).int() - want.int()).abs()
    assert diff.max() <= 1 and diff.float().mean() < 0.005
    # one at a time gives the same as together
    assert torch.equal(gpu_decode.resize_crop(imgs[1], CFG), got[1])


def test_a_long_thin_jpeg_is_cheap() -> None:
    """20000x2: resized first it would be 2560000x256 (7.9 GB as float); cropped first, the
    window read is a few source columns wide."""
    thin = encode(synthetic_photo(1, (20000, 2)), "JPEG")
    out, errors = gpu_path([thin])
    assert errors == {} and out.shape == (1, 224, 224, 3)
    wx, x0 = gpu_decode.aa_weights(20000, 2_560_000, 1_279_888, 224)
    assert wx.shape[1] <= 4 and x0 == 9998


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(orientation: int) -> None:
    data = jpeg_with_orientation(synthetic_photo(3, (400, 260)), orientation)
    img = inspect(data, NO_DRAFT, LIMIT)
    assert img.data is not None and img.orientation == orientation
    out, errors = gpu_path([data], PreprocessConfig(resize=200, crop=180, use_draft=False))
    want = decode(data, PreprocessConfig(resize=200, crop=180, use_draft=False), LIMIT)
    assert errors == {}
    close(out[0], want, max_diff=2, mean_diff=0.25)


def test_mixed_batch_pads_with_zeros_and_keeps_each_image_in_its_row(jpegs: list[bytes]) -> None:
    png = encode(synthetic_photo(5, (300, 200)), "PNG")
    datas = [jpegs[1], png, jpegs[2]]
    out, errors = gpu_path(datas, pad_to=5)
    assert errors == {} and out.shape == (5, 224, 224, 3)
    for i, data in enumerate(datas):
        close(out[i], decode(data, NO_DRAFT, LIMIT))
    assert not out[3:].any()


def truncated_jpeg(jpegs: list[bytes]) -> bytes:
    """A header Pillow accepts, then entropy-coded data cut short and garbled."""
    good = jpegs[1]
    return good[: len(good) // 3] + b"\x00\xff\x13" * 50


def undecodable_jpeg(jpegs: list[bytes]) -> bytes:
    """A whole JPEG whose scan names a Huffman table it never defines: Pillow opens its header,
    and libjpeg-turbo (torchvision's CPU decode_jpeg) and Pillow both refuse to decode it."""
    data = bytearray(jpegs[1])
    sos = data.find(b"\xff\xda")
    data[sos + 6] = 0x33  # the first component's DC/AC table selectors: tables 3 and 3
    return bytes(data)


def test_a_truncated_jpeg_is_refused_on_the_cpu_before_the_gpu(jpegs: list[bytes]) -> None:
    """nvJPEG decodes a cut JPEG into a half-grey image without an error; the CPU walks the
    markers first (app.jpeg_structure), so the client gets 400, as on the CPU path."""
    good = jpegs[1]
    for cut in (truncated_jpeg(jpegs), good[: len(good) // 2], good[:-2], good[:300]):
        with pytest.raises(InvalidInput, match="corrupt"):
            inspect(cut, NO_DRAFT, LIMIT)
    assert inspect(good + b"\x00" * 10, NO_DRAFT, LIMIT).data is not None  # padding after EOI


def test_jpeg_structure() -> None:
    from app.jpeg_structure import jpeg_structure_error as why

    good = encode(synthetic_photo(2, (120, 90)), "JPEG")
    assert why(good) is None
    assert why(b"\x89PNG") == "no start-of-image marker"
    # type-ignore reason: why() is str | None; the first clause checks None
    assert why(good[:-2]) is not None and "truncated" in why(good[:-2])  # type: ignore[operator]
    sos = good.find(b"\xff\xda")
    length = int.from_bytes(good[sos + 2 : sos + 4], "big")
    assert why(good[: sos + 2 + length] + b"\xff\xd9") == "the scan holds no data"
    assert "runs past the end" in (why(good[: sos + 5]) or "")
    assert why(b"\xff\xd8\xff\xd9") == "end-of-image before any scan"
    assert why(b"\xff\xd8\x00") == "no marker at byte 2 where one must start"
    # garbage inside a complete scan passes: every decoder turns it into pixels
    garbled = good[: sos + 2 + length] + b"\x12\x34" * 200 + b"\xff\xd9"
    assert why(garbled) is None


def test_an_unreadable_jpeg_fails_alone(jpegs: list[bytes]) -> None:
    bad = undecodable_jpeg(jpegs)
    images = [inspect(d, NO_DRAFT, LIMIT) for d in (jpegs[1], bad, jpegs[2])]
    assert images[1].data is not None  # the header passed: only decoding finds the fault
    out, errors = decode_batch(images, NO_DRAFT, "cpu", 3)
    # neither decode_jpeg nor Pillow can read it: its row is its own error, with Pillow's words
    assert list(errors) == [1] and isinstance(errors[1], InvalidInput)
    assert "truncated or corrupt" in errors[1].message
    close(out[0].numpy(), decode(jpegs[1], NO_DRAFT, LIMIT))
    close(out[2].numpy(), decode(jpegs[2], NO_DRAFT, LIMIT))
    assert not out[1].any()


def test_a_batch_the_decoder_rejects_is_split_until_the_bad_image_is_alone(
    jpegs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = gpu_decode.decode_jpeg  # type: ignore[attr-defined]  # torchvision's, imported there
    rejected = jpegs[3]  # a JPEG the device decoder refuses (the CPU decoder reads it)

    def picky(tensors, **kw):
        calls.append(len(tensors))
        if any(bytes(t.numpy()) == rejected for t in tensors):
            raise RuntimeError("nvjpeg: NVJPEG_STATUS_BAD_JPEG")
        return real(tensors, **kw)

    monkeypatch.setattr(gpu_decode, "decode_jpeg", picky)
    datas = [jpegs[1], jpegs[2], jpegs[0], jpegs[4], jpegs[1], rejected, jpegs[2], jpegs[0]]
    guard = gpu_decode.StreamGuard(torch.device("cpu"))
    images = [inspect(d, NO_DRAFT, LIMIT) for d in datas]
    out, errors = decode_batch(images, NO_DRAFT, "cpu", 8, guard=guard)
    # 8 fails; 0-3 pass; 4-7 fail; 4-5 fail; 4 passes; 5 fails alone; 6-7 pass
    assert errors == {} and calls == [8, 4, 4, 2, 1, 1, 2]
    assert guard.calls == 7 and guard.waits == 6  # the stream is awaited before every retry
    for i, data in enumerate(datas):
        close(out[i].numpy(), decode(data, NO_DRAFT, LIMIT))  # 5: by the CPU decoder

    # an image the device decoder refuses alone goes to the CPU decoder (Pillow)
    monkeypatch.setattr(
        gpu_decode, "decode_jpeg", lambda t, **kw: (_ for _ in ()).throw(RuntimeError("no"))
    )
    out, errors = decode_batch(images[:3], NO_DRAFT, "cpu", 3)
    assert errors == {}
    for i, data in enumerate(datas[:3]):
        np.testing.assert_array_equal(out[i].numpy(), decode(data, NO_DRAFT, LIMIT))


def test_large_batches_are_decoded_in_chunks_of_bounded_pixels(
    jpegs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = [EncodedImage(pixels=np.zeros((224, 224, 3), np.uint8))] + [
        inspect(d, NO_DRAFT, LIMIT) for d in jpegs
    ]
    sizes = [im.width * im.height for im in images[1:]]  # 307200, 307200, 150000, 786432, 50176
    assert gpu_decode._chunks(images, 700_000) == [[1, 2], [3], [4], [5]]
    assert gpu_decode._chunks(images, sum(sizes)) == [[1, 2, 3, 4, 5]]
    monkeypatch.setattr(gpu_decode, "DECODE_CHUNK_PIXELS", 700_000)
    guard = gpu_decode.StreamGuard(torch.device("cpu"))
    out, errors = decode_batch(images, NO_DRAFT, "cpu", 6, guard=guard)
    assert errors == {} and not out[0].any()
    assert guard.calls == 4 and guard.waits == 3  # before every chunk but the first
    for i, data in enumerate(jpegs, start=1):
        close(out[i].numpy(), decode(data, NO_DRAFT, LIMIT))
    # the same batch in one chunk: the very same pixels (on a GPU this catches the stream race)
    single, _ = decode_batch(images, NO_DRAFT, "cpu", 6, chunk_pixels=sum(sizes))
    assert torch.equal(out, single)


def test_torch_runner_decodes_and_infers_in_one_call(jpegs: list[bytes]) -> None:
    torch.manual_seed(0)
    module = wrap(build_arch("resnet-mini", 10), CFG.mean, CFG.std, "cpu", "fp32")
    runner = TorchRunner(module, "cpu", 4, (224, 224, 3), NO_DRAFT)
    images = [inspect(d, NO_DRAFT, LIMIT) for d in jpegs[:3]]
    logits, errors = runner.run_encoded(images, 4)
    assert errors == {} and logits.shape == (4, 10)
    pixels, _ = decode_batch(images, NO_DRAFT, "cpu", 4)
    np.testing.assert_allclose(logits, runner(pixels.numpy()), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- config and loading
def test_config_validation() -> None:
    ok = ModelConfig(name="m", backend="eager", device="cuda", input={"decode": "gpu"})
    assert ok.input.decode == "gpu" and ok.device == "cuda:0"
    assert ModelConfig(name="m").input.decode == "cpu"
    with pytest.raises(ValueError, match="input.decode 'gpu' decodes on the model's CUDA device"):
        ModelConfig(name="m", input={"decode": "gpu"})
    with pytest.raises(ValueError):
        ModelConfig(name="m", device="cuda", input={"decode": "nvjpeg"})


def test_only_backends_that_decode_on_the_gpu_accept_it() -> None:
    cfg = ModelConfig(name="m", backend="onnxruntime", device="cuda", input={"decode": "gpu"})
    with pytest.raises(ValueError, match="'onnxruntime' cannot decode images on the GPU"):
        create_backend(cfg)
    assert create_backend(cfg.variant("e", backend="eager")).gpu_decode


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the failure on a machine without CUDA"
)
@pytest.mark.parametrize("backend", ["eager", "torchscript"])
async def test_gpu_decode_without_cuda_fails_to_load_with_its_reason(
    backend: str, tmp_path
) -> None:
    cfg = ModelConfig(name="m", backend=backend, device="cuda", input={"decode": "gpu"})
    cfg.directory = tmp_path
    repo = ModelRepository([cfg], Metrics())
    await repo.load_all()
    model = repo.get("m")
    assert model.state == "failed" and not repo.ready
    assert "input.decode 'gpu'" in (model.reason or "")
    assert "torch.cuda.is_available() is False" in (model.reason or "")


# ---------------------------------------------------------------------- batching, HTTP
class FakeGpuBackend(FakeBackend):
    """The fake's logits (a function of each image's mean), fed by the real decode path."""

    gpu_decode = True
    name = "fake-gpu"
    seen: list[int] = []

    def infer_encoded(self, images: list[EncodedImage], pad_to: int):
        FakeGpuBackend.seen.append(len(images))
        out, errors = decode_batch(images, self.config.input, "cpu", pad_to)
        return expected_logits(out.numpy(), self.config.num_classes), errors


def grey(value: int, fmt: str = "JPEG") -> bytes:
    return encode(Image.new("RGB", (300, 240), (value, value, value)), fmt)


def gpu_fake_config(name: str = "fakegpu") -> ModelConfig:
    return fake_config(name, backend="fake-gpu", device="cuda", input={"decode": "gpu"})


async def test_one_bad_image_fails_only_its_request(jpegs: list[bytes]) -> None:
    """Three requests share one batch; the one whose JPEG no decoder can read gets 400."""
    cfg = gpu_fake_config()
    metrics = Metrics()
    backend = FakeGpuBackend(cfg)
    batcher = DynamicBatcher("m", [backend], cfg.batching, metrics.for_model("m"))
    FakeGpuBackend.seen.clear()
    bad = EncodedImage(data=b"\xff\xd8 definitely not a jpeg body")
    requests: list[Batch] = [
        [inspect(grey(40), cfg.input, LIMIT)],
        [inspect(grey(90), cfg.input, LIMIT), bad],
        np.full((1, 224, 224, 3), 150, np.uint8),  # V2 pixels, beside encoded images
    ]
    batcher.start()  # the worker first runs at the next await: all three are queued by then
    futures = [batcher.submit(r, time.monotonic() + 10) for r in requests]
    results = await asyncio.gather(*futures, return_exceptions=True)
    await batcher.close()
    assert FakeGpuBackend.seen == [4]  # one batch
    assert isinstance(results[0], np.ndarray) and isinstance(results[2], np.ndarray)
    assert int(np.argmax(results[0][0])) in (39, 40, 41)
    assert isinstance(results[1], InvalidInput) and results[1].message.startswith("image 1: ")
    assert int(np.argmax(results[2][0])) == 150


async def test_http_classify_with_gpu_decode() -> None:
    REGISTRY["fake-gpu"] = f"{__name__}:FakeGpuBackend"
    app = create_app(
        Settings(max_image_pixels=1_000_000), configs=[gpu_fake_config()], metrics=Metrics()
    )
    async with app_client(app) as client:
        files = [
            ("images", (f"{v}", grey(v, fmt), "image/x"))
            for v, fmt in ((30, "JPEG"), (200, "PNG"), (120, "JPEG"))
        ]
        r = await client.post("/v1/models/fakegpu/classify?top_k=1", files=files)
        assert r.status_code == 200, r.text
        tops = [row[0]["index"] for row in r.json()["predictions"]]
        assert all(abs(t - v) <= 1 for t, v in zip(tops, (30, 200, 120), strict=True)), tops

        r = await client.post(
            "/v1/models/fakegpu/classify",
            content=b"GIF89a broken",
            headers={"Content-Type": "image/gif"},
        )
        assert r.status_code == 400 and "error" in r.json()
        huge = encode(Image.new("RGB", (1200, 1000)), "JPEG")
        r = await client.post(
            "/v1/models/fakegpu/classify", content=huge, headers={"Content-Type": "image/jpeg"}
        )
        assert r.status_code == 413, r.text
        r = await client.get("/v1/models/fakegpu")
        assert r.json()["input"]["decode"] == "gpu"


class CountingTorchBackend(TorchBackend):
    """The torch backends' warm-up over the fake's logits: no module, no GPU."""

    name = "counting-torch"

    def build_module(self) -> None:
        raise AssertionError("not loaded in this test")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.seen.append(len(batch))
        return expected_logits(batch, self.config.num_classes)

    def infer_encoded(
        self, images: list[EncodedImage], pad_to: int
    ) -> tuple[np.ndarray, dict[int, Exception]]:
        self.encoded.append(len(images))
        return Backend.infer_encoded(self, images, pad_to)  # decoded on the CPU

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.seen: list[int] = []
        self.encoded: list[int] = []


def test_warmup_decodes_a_jpeg_at_every_batch_size() -> None:
    backend = CountingTorchBackend(gpu_fake_config("warm"))
    backend.warmup([1, 2, 4])
    # pixels at each size, then a decoded JPEG at each size
    assert backend.seen == [1, 2, 4, 1, 2, 4] and backend.encoded == [1, 2, 4]
    cpu = CountingTorchBackend(fake_config("cpu-decoding"))
    cpu.warmup([1, 2])
    assert cpu.seen == [1, 2] and cpu.encoded == []  # no GPU decoding, no JPEG warm-up


# ---------------------------------------------------------------------- the real thing
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
def test_nvjpeg_path_matches_the_cpu_path_on_a_gpu(jpegs: list[bytes]) -> None:
    images = [inspect(d, NO_DRAFT, LIMIT) for d in jpegs]
    images.append(
        inspect(jpeg_with_orientation(synthetic_photo(2, (400, 260)), 6), NO_DRAFT, LIMIT)
    )
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out, errors = decode_batch(images, NO_DRAFT, "cuda", len(images) + 1)
    stream.synchronize()
    assert errors == {} and out.device.type == "cuda"
    cpu, _ = decode_batch(images, NO_DRAFT, "cpu", len(images) + 1)
    # nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's: a grey level or two on
    # most pixels, more than 12 at sharp colour edges. Bounded: the mean, the 99th percentile,
    # and a maximum that only a wrong image, orientation or crop would exceed.
    diff = np.abs(out.cpu().numpy().astype(int) - cpu.numpy().astype(int))
    assert diff.mean() <= 1.5 and np.percentile(diff, 99) <= 12 and diff.max() <= 96, (
        diff.mean(),
        np.percentile(diff, 99),
        diff.max(),
    )

    module = wrap(build_arch("resnet-mini", 10), CFG.mean, CFG.std, "cuda:0", "fp16")
    runner = TorchRunner(module, "cuda:0", 8, (224, 224, 3), NO_DRAFT)
    logits, errors = runner.run_encoded(images, 8)
    assert errors == {} and logits.shape == (8, 10) and np.isfinite(logits).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
def test_nvjpeg_chunks_give_the_pixels_of_one_chunk_on_a_gpu() -> None:
    """The stream race: nvJPEG writes on its own stream into memory the caller's stream may
    still read. Many chunks (one 3 Mpx photo each, then four) must give the pixels of one."""
    photos = [encode(synthetic_photo(s, (2000, 1500)), quality=90) for s in range(12)]
    images = [inspect(d, NO_DRAFT, LIMIT) for d in photos]
    stream = torch.cuda.Stream()
    results = []
    with torch.cuda.stream(stream):
        for budget in (10**12, 3_000_000, 12_000_000):
            out, errors = decode_batch(images, NO_DRAFT, "cuda", 16, chunk_pixels=budget)
            assert errors == {}
            results.append(out.clone())
            # as TorchRunner does after every batch: the guard orders the chunks of one call,
            # and nothing may order the next call's nvJPEG stream after this call's kernels
            stream.synchronize()
    # a race overwrites whole regions with other pixels; cuBLAS may pick another algorithm for
    # another batch count of the resize matmul, which moves a rare pixel by one level
    for other in results[1:]:
        diff = (results[0].int() - other.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, (
            diff.max(),
            (diff > 0).float().mean(),
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
async def test_served_gpu_decode_model_on_a_gpu(models_repo, jpegs: list[bytes]) -> None:
    """The eager ResNet-18 on cuda:0 with two instances (a stream each), over HTTP."""
    from app.config import read_model_config

    base = read_model_config(models_repo / "resnet18")
    gpu = base.variant(
        "gpu",
        backend="eager",
        device="cuda",
        precision="fp16",
        input={**base.input.model_dump(), "decode": "gpu"},
        batching={**base.batching.model_dump(), "instances": 2, "max_batch_size": 8},
    )
    cpu = gpu.variant("cpu", input={**gpu.input.model_dump(), "decode": "cpu"})
    app = create_app(Settings(), configs=[gpu, cpu], metrics=Metrics())
    async with app_client(app) as client:
        backends = app.state.repository.get("gpu").backends
        assert len({id(b._runner.stream) for b in backends}) == 2  # a stream per instance
        png = encode(synthetic_photo(4, (300, 200)), "PNG")
        files = [("images", (f"{i}", d, "image/jpeg")) for i, d in enumerate([*jpegs, png])]
        got = await client.post("/v1/models/gpu/classify?top_k=1", files=files)
        want = await client.post("/v1/models/cpu/classify?top_k=1", files=files)
        assert got.status_code == 200 and want.status_code == 200, (got.text, want.text)
        # a truncated JPEG: 400 from the structure check on the CPU, before nvJPEG
        headers = {"Content-Type": "image/jpeg"}
        bad = await client.post(
            "/v1/models/gpu/classify", content=truncated_jpeg(jpegs), headers=headers
        )
        assert bad.status_code == 400, bad.text
        # a whole JPEG whose scan names an undefined Huffman table: nvJPEG is expected to
        # refuse it, then Pillow does: 400 (if nvJPEG decoded it into garbage: 200)
        bad = await client.post(
            "/v1/models/gpu/classify", content=undecodable_jpeg(jpegs), headers=headers
        )
        assert bad.status_code == 400, bad.text


# ---------------------------------------------------------------------- the benchmark script
def _benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_pipeline.py"
    spec = importlib.util.spec_from_file_location("gpu_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_benchmark_says_why_it_cannot_run_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    assert _benchmark().main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_benchmark_runs_its_code_on_the_cpu(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    args = [
        "--device",
        "cpu",
        "--arch",
        "resnet-mini",
        "--batch-sizes",
        "2",
        "--num-images",
        "3",
        "--seconds",
        "0",
        "--warmup",
        "0",
        "--crop",
        "64",
        "--resize",
        "72",
        "--json",
        str(out),
        "--instances",
        "1",
        "2",
    ]
    assert _benchmark().main(args) == 0
    import json

    (row,) = json.loads(out.read_text())["results"]
    assert row["batch"] == 2 and all(
        row[k] > 0 for k in ("decode_resize", "model_eager", "pipeline_eager", "pipeline_eager_x2")
    )


# ---------------------------------------------------------------------- fallbacks are counted
def broken_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """nvJPEG that cannot start: every call raises, as a missing libnvjpeg or a failed device
    does (the CPU decoder then reads every image)."""

    def fail(tensors, **kw):
        raise RuntimeError("nvjpeg: NVJPEG_STATUS_NOT_INITIALIZED")

    monkeypatch.setattr(gpu_decode, "decode_jpeg", fail)


def test_a_decoder_that_cannot_start_is_counted_and_logged_once(
    jpegs: list[bytes], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to fall back silently: figures labelled GPU decoding were the CPU's."""
    broken_decoder(monkeypatch)
    module = wrap(build_arch("resnet-mini", 10), CFG.mean, CFG.std, "cpu", "fp32")
    runner = TorchRunner(module, "cpu", 4, (224, 224, 3), NO_DRAFT)
    images = [inspect(d, NO_DRAFT, LIMIT) for d in jpegs[:3]]
    with caplog.at_level("WARNING", logger=gpu_decode.__name__):
        for _ in range(2):
            logits, errors = runner.run_encoded(images, 4)
            assert errors == {} and logits.shape == (4, 10)  # answered by the CPU decoder
    assert runner.fallbacks.take() == {"decoder_failed": 6}
    assert runner.fallbacks.take() == {}  # taken: counted once
    lines = [r.getMessage() for r in caplog.records if "nvJPEG" in r.getMessage()]
    assert len(lines) == 1 and "NVJPEG_STATUS_NOT_INITIALIZED" in lines[0], lines


def test_an_image_rejected_alone_is_counted_as_such(
    jpegs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gpu_decode.decode_jpeg  # type: ignore[attr-defined]  # torchvision's, imported there
    rejected = jpegs[3]

    def picky(tensors, **kw):
        if any(bytes(t.numpy()) == rejected for t in tensors):
            raise RuntimeError("nvjpeg: NVJPEG_STATUS_BAD_JPEG")
        return real(tensors, **kw)

    monkeypatch.setattr(gpu_decode, "decode_jpeg", picky)
    fallbacks = gpu_decode.DecodeFallbacks()
    images = [inspect(d, NO_DRAFT, LIMIT) for d in (jpegs[1], rejected, jpegs[2])]
    _, errors = decode_batch(images, NO_DRAFT, "cpu", 3, fallbacks=fallbacks)
    assert errors == {} and fallbacks.take() == {"image_rejected": 1}
    _, errors = decode_batch(images[:1], NO_DRAFT, "cpu", 1, fallbacks=fallbacks)
    assert fallbacks.take() == {}  # decoded on the device: nothing to count


class FallbackCountingBackend(FakeGpuBackend):
    name = "fake-gpu-fallbacks"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.fallbacks = gpu_decode.DecodeFallbacks("fake")

    def infer_encoded(self, images: list[EncodedImage], pad_to: int):
        out, errors = decode_batch(
            images, self.config.input, "cpu", pad_to, fallbacks=self.fallbacks
        )
        return expected_logits(out.numpy(), self.config.num_classes), errors

    def take_decode_fallbacks(self) -> dict[str, int]:
        return self.fallbacks.take()


async def test_gpu_decode_fallbacks_reach_the_metrics(
    jpegs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken_decoder(monkeypatch)
    cfg = gpu_fake_config()
    metrics = Metrics()
    batcher = DynamicBatcher(
        "m", [FallbackCountingBackend(cfg)], cfg.batching, metrics.for_model("m")
    )
    batcher.start()
    requests: list[Batch] = [[inspect(d, cfg.input, LIMIT) for d in jpegs[:2]] for _ in range(3)]
    results = await asyncio.gather(*(batcher.submit(r, time.monotonic() + 10) for r in requests))
    await batcher.close()
    assert all(r.shape[0] == 2 for r in results)  # every image answered, by the CPU decoder
    value = metrics.registry.get_sample_value(
        "resnet_serve_gpu_decode_fallbacks_total", {"model": "m", "reason": "decoder_failed"}
    )
    assert value == 6


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda:0",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ],
)
def test_a_read_only_batch_runs_without_the_non_writable_warning(device: str) -> None:
    """A V2 tensor is a read-only view of the body: torch.from_numpy warned about it (seen in
    every worker's log on the first GPU run). Its own process: torch warns once per process."""
    import subprocess
    import sys

    code = f"""
import warnings, numpy as np, torch
warnings.simplefilter("error")
from app.backends.torch.models import TorchRunner, build_arch, wrap
from app.config import PreprocessConfig
cfg = PreprocessConfig()
module = wrap(build_arch("resnet-mini", 10), cfg.mean, cfg.std, "{device}", "fp32")
runner = TorchRunner(module, "{device}", 4, (64, 64, 3), cfg)
data = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
view = np.frombuffer(data.tobytes(), np.uint8).reshape(data.shape)
assert not view.flags.writeable
got = runner(view)
big = np.frombuffer(np.concatenate([data] * 3).tobytes(), np.uint8).reshape(6, 64, 64, 3)
np.testing.assert_allclose(runner(big)[:2], got, rtol=1e-3, atol=1e-3)
np.testing.assert_allclose(runner(data.copy()), got, rtol=1e-4, atol=1e-4)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]
