"""The table (and gpu_check.json) of what benchmarks/gpu_check.sh measured in OUT.

    python benchmarks/gpu_check_report.py OUT [--dry 1]

Reads env.json, steps.tsv (name, exit status, seconds, box: the prepare step's box is 0, it
runs beside the tests), tests.xml, decode.json, logs/dmon.log, pipeline_*.json and
served-<label>-c<N>.json (one per bench client process; their img/s add up, p50 is their
median, p99 their maximum). Missing files make "not run" rows, never an error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

TARGET_JPEG = 10_000  # img/s, one JPEG per request (the issue's target)
TARGET_PIXELS = 25_000  # img/s, uint8 tensors, 32 per request
TARGET_P99_MS = 50.0


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps(out: Path) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    path = out / "steps.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            name, rc, seconds, box = (line.split("\t") + ["", "", "", ""])[:4]
            rows[name] = {"rc": rc, "seconds": seconds, "box": box}
    return rows


def status(step: dict[str, str] | None) -> str:
    if step is None:
        return "not run"
    rc = step["rc"]
    if rc == "skipped":
        return "skipped: no time left"
    if rc in ("124", "137"):
        return f"cut at {step['box']} s"
    return "ok" if rc == "0" else f"exit {rc}"


def tests(out: Path) -> str:
    path = out / "tests.xml"
    if not path.is_file():
        log = out / "logs" / "tests.log"
        text = log.read_text().strip().splitlines() if log.is_file() else []
        return text[-1] if text else "no result"
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0))
    errors, skipped = int(suite.get("errors", 0)), int(suite.get("skipped", 0))
    names = [
        c.get("name", "")
        for c in suite.iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    ]
    passed = total - failed - errors - skipped
    summary = f"{passed} passed, {failed + errors} failed, {skipped} skipped"
    return summary + (f" (failed: {', '.join(names[:6])})" if names else "")


def jpeg_engine(out: Path) -> str:
    path = out / "logs" / "dmon.log"
    if not path.is_file():
        return "unknown (no nvidia-smi dmon)"
    header: list[str] = []
    peak = None
    for line in path.read_text().splitlines():
        if line.startswith("#") and "gpu" in line and not header:
            header = line.lstrip("#").split()
            continue
        if line.startswith("#") or not header or "jpg" not in header:
            continue
        cells = line.split()
        if len(cells) == len(header) and cells[header.index("jpg")].isdigit():
            value = int(cells[header.index("jpg")])
            peak = value if peak is None else max(peak, value)
    if not header or "jpg" not in header:
        return "unknown (dmon has no jpg column)"
    if peak is None:
        return "unknown (no samples)"
    return f"used (jpg engine up to {peak}%)" if peak > 0 else "NOT used (jpg engine 0%)"


def race_verdict(race: dict[str, Any]) -> str:
    if not race["ok"]:
        return f"DIFFERS in {race['mismatched_rounds']} rounds (max {race.get('max_diff')} levels)"
    if not race.get("max_diff"):
        return "identical to one chunk"
    return (
        f"within {race['max_diff']} level of one chunk ({race['changed_fraction']:.1e} of pixels)"
    )


def served(out: Path) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("served-*-c*.json")):
        label = path.stem.rsplit("-c", 1)[0].removeprefix("served-")
        data = read_json(path)
        if data and data.get("steps"):
            groups.setdefault(label, []).append(data["steps"][-1])
    result = {}
    for label, rows in groups.items():
        p50 = [r["p50_ms"] for r in rows if r.get("p50_ms") is not None]
        p99 = [r["p99_ms"] for r in rows if r.get("p99_ms") is not None]
        result[label] = {
            "clients": len(rows),
            "images_per_s": sum(r["images_per_s"] for r in rows),
            "p50_ms": statistics.median(p50) if p50 else None,
            "p99_ms": max(p99) if p99 else None,
            "errors": sum(sum((r.get("errors") or {}).values()) for r in rows),
        }
    return result


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--dry", default="0")
    args = p.parse_args(argv)
    out: Path = args.out
    dry = args.dry == "1"
    env = read_json(out / "env.json") or {}
    st = steps(out)
    rows: list[tuple[str, str, str]] = []

    gpus = ", ".join(env.get("gpus") or []) or "no CUDA device"
    rows.append(
        ("machine", gpus, f"torch {env.get('torch')}, torchvision {env.get('torchvision')}")
    )
    rows.append(("driver caps", env.get("NVIDIA_DRIVER_CAPABILITIES", "?"), f"cc: {env.get('cc')}"))
    rows.append(
        (
            "onnxruntime-gpu",
            env.get("onnxruntime_gpu", "not installed"),
            f"TensorRT: {env.get('tensorrt', '?')}",
        )
    )
    prep = st.get("prepare")
    rows.append(
        (
            "0 prepared images, model",
            status(prep),
            f"{prep['seconds']} s on the CPU, beside the tests" if prep else "",
        )
    )
    rows.append(("1 GPU tests", tests(out), status(st.get("tests"))))

    decode = read_json(out / "decode.json") or {}
    for row in decode.get("decode", []):
        ratio = row["resize_batched_img_s"] / max(row["resize_per_image_img_s"], 1e-9)
        rows.append(
            (
                f"2 nvJPEG batch {row['batch']}",
                f"decode {fmt(row['decode_img_s'])} img/s; "
                f"+crop+resize {fmt(row['decode_crop_resize_img_s'])}",
                f"resize batched/per-image x{ratio:.1f}",
            )
        )
    rows.append(("2 hardware JPEG engine", jpeg_engine(out), status(st.get("decode"))))
    race = decode.get("race")
    rows.append(
        (
            "2 multi-chunk race",
            race_verdict(race) if race else "not run",
            f"{race['images']} x {race['size'][0]}x{race['size'][1]}, {race['chunks']} chunks, "
            f"{fmt(race.get('decode_crop_resize_img_s'))} img/s"
            if race
            else status(st.get("decode")),
        )
    )

    pipelines = {"eager": 3, "processes": 5, "compiled": 6}  # the check's step numbers
    pipeline_rows: dict[int, list[tuple[str, str, str]]] = {}
    for kind, number in pipelines.items():
        data = read_json(out / f"pipeline_{kind}.json")
        rows_of_kind = pipeline_rows.setdefault(number, [])
        if not data:
            rows_of_kind.append(
                (f"{number} pipeline {kind}", "not run", status(st.get(f"pipeline_{kind}")))
            )
            continue
        for r in data.get("results", []):
            if "batch" not in r:
                continue
            cells = [
                f"{k.removeprefix('pipeline_')} {fmt(v)}"
                for k, v in r.items()
                if k.startswith("pipeline_")
            ]
            models = [
                f"{k.removeprefix('model_')} {fmt(v)}"
                for k, v in r.items()
                if k.startswith("model_")
            ]
            rows_of_kind.append(
                (
                    f"{number} pipeline {kind} bs {r['batch']}"
                    + (" (cut short)" if r.get("partial") else ""),
                    "nvJPEG+model img/s: " + ", ".join(cells),
                    "model alone: " + ", ".join(models),
                )
            )
    rows += pipeline_rows[3]

    figures = served(out)
    for label, fig in figures.items():
        target = TARGET_PIXELS if label.startswith("pixels") else TARGET_JPEG
        what = "V2 uint8, 32/request" if label.startswith("pixels") else "one JPEG/request"
        workers = label.rsplit("-w", 1)[-1].split("-")[0]  # jpeg-w8-clients8: 8
        ok = fig["images_per_s"] >= target and (fig["p99_ms"] or 1e9) <= TARGET_P99_MS
        rows.append(
            (
                f"4 served {what}, --workers {workers}",
                f"{fmt(fig['images_per_s'])} img/s, p50 {fmt(fig['p50_ms'], ' ms')}, "
                f"p99 {fmt(fig['p99_ms'], ' ms')}"
                + (f", {fig['errors']} errors" if fig["errors"] else ""),
                ("meets" if ok else "below")
                + f" target {target:,} img/s, p99 <= {TARGET_P99_MS:g} ms"
                + f" ({fig['clients']} client processes)",
            )
        )
    if not figures:
        rows.append(("4 served", "not run", status(st.get("served"))))
    elif st.get("served", {}).get("rc") not in (None, "0"):
        rows.append(("4 served", "incomplete", status(st.get("served"))))

    rows += pipeline_rows[5] + pipeline_rows[6]

    ort = read_json(out / "ort_inprocess.json")
    if env.get("onnxruntime_gpu") != "installed":
        rows.append(("7 onnxruntime-gpu", "not installed", "see docs/gpu.md"))
    elif not ort:
        rows.append(("7 onnxruntime-gpu", "no figures", status(st.get("ort"))))
    else:
        for r in ort.get("steps", []):
            rows.append(
                (
                    f"7 onnxruntime-gpu fp16 bs {r.get('batch_size')}",
                    f"{fmt(r.get('images_per_s'))} img/s (in-process, uint8 in)",
                    f"p50 {fmt(r.get('p50_ms'), ' ms')}",
                )
            )

    width = [max(len(r[i]) for r in rows) for i in range(3)]
    title = "GPU check" + (" (DRY RUN: plumbing only, figures mean nothing)" if dry else "")
    print(f"\n{title}, results in {out}")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip())
    summary = {
        "dry_run": dry,
        "env": env,
        "steps": st,
        "tests": tests(out),
        "decode": decode,
        "jpeg_engine": jpeg_engine(out),
        "pipeline": {
            k: read_json(out / f"pipeline_{k}.json") for k in ("eager", "compiled", "processes")
        },
        "served": figures,
        "onnxruntime_gpu": ort,
        "table": [list(r) for r in rows],
    }
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
