"""A tritonclient session against a running resnet-serve: metadata, JSON and binary infer,
encoded files, the classification extension, statistics.

    python examples/v2_tritonclient.py --url 127.0.0.1:8000 --model resnet50 IMAGE.jpg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from PIL import Image


def show(title: str, value: object) -> None:
    text = value if isinstance(value, str) else json.dumps(value, indent=None, default=str)
    print(f"--- {title}\n{text}")


def pixels(path: Path, crop: int = 224) -> np.ndarray:
    """Resize the shorter side to 256 and centre-crop, as the server does for files."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize(
        (max(crop, int(w * scale)), max(crop, int(h * scale))), Image.Resampling.BILINEAR
    )
    left, top = (img.width - crop) // 2, (img.height - crop) // 2
    return np.asarray(img.crop((left, top, left + crop, top + crop)), np.uint8)[None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="127.0.0.1:8000")
    p.add_argument("--model", default="resnet50")
    p.add_argument("image", type=Path)
    args = p.parse_args()
    client = httpclient.InferenceServerClient(url=args.url)
    model = args.model

    show(
        "live / ready / model ready",
        [client.is_server_live(), client.is_server_ready(), client.is_model_ready(model)],
    )
    show("server metadata", client.get_server_metadata())
    show("model metadata", client.get_model_metadata(model))
    config = client.get_model_config(model)
    show(
        "model config (excerpt)",
        {k: config[k] for k in ("name", "platform", "max_batch_size", "input", "output")},
    )

    batch = pixels(args.image)
    for binary in (False, True):
        inp = httpclient.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch, binary_data=binary)
        out = httpclient.InferRequestedOutput("logits", binary_data=binary)
        res = client.infer(
            model, [inp], outputs=[out], request_id=f"pixels-{'binary' if binary else 'json'}"
        )
        logits = res.as_numpy("logits")
        show(
            f"infer UINT8 pixels, {'binary' if binary else 'JSON'} tensors",
            f"id={res.get_response()['id']} logits {logits.dtype} {logits.shape} "
            f"argmax={int(logits.argmax())} first={logits[0, :3].tolist()}",
        )

    files = httpclient.InferInput("image_bytes", [1, 1], "BYTES")
    files.set_data_from_numpy(np.array([[args.image.read_bytes()]], dtype=object))
    res = client.infer(
        model,
        [files],
        outputs=[httpclient.InferRequestedOutput("probabilities", class_count=3)],
    )
    show(
        "infer encoded file (BYTES image_bytes), classification top-3 of probabilities",
        [e.decode() for e in res.as_numpy("probabilities").ravel()],
    )

    stats = client.get_inference_statistics(model)["model_stats"][0]
    show(
        "statistics",
        {
            k: stats[k]
            for k in (
                "name",
                "version",
                "inference_count",
                "execution_count",
                "inference_stats",
                "batch_stats",
            )
        },
    )


if __name__ == "__main__":
    main()
