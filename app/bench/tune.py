"""`resnet-serve tune models/NAME --images DIR [--p99-ms 100] [--budget 300]`: find the
serving configuration of a model that serves the most images/s within a p99 bound, on this
machine, by serving it for real.

Each configuration tried is one trial: the model is served by a real `resnet-serve serve`
process on a free local port (a throw-away repository whose files link to the model's own),
loaded with the bench client: closed loop at a few concurrencies (the peak), then Poisson
arrivals at 80 % of that peak, whose p99 is held against the bound (that is the serving
scenario: a closed loop only measures the queue it builds itself). The search is staged, most
promising first, so a budget too small for everything still tries what matters:

1. every backend and precision the export's files allow and this machine runs (each backend's
   own check candidates), at the thread budget's defaults; int8 and OpenVINO first;
2. for the two best: the thread layouts (instances x threads per instance over the cores);
3. for the best: the batching knobs that still matter for it. Where it served with the adaptive
   scheduler (ONNX Runtime, OpenVINO on the CPU: the scheduler sizes batches from the queue
   and the measured batch times, max_batch_size is only their bound), the static scheduler at
   max_batch_size 8 and 4 and the adaptive one with a bound of 16; where it served static,
   max_batch_size and max_queue_delay_ms;
4. for the best: 2 server processes (workers) when there are 2 cores or more.

Every trial is time-boxed (start-up and each step), trials whose expected cost no longer fits
the remaining budget are skipped and listed. It prints a table, writes a PNG of throughput
against p99 for every configuration tried (and the bound), a JSON of every trial, and adds the
best configuration that met the bound to the model's config.json as a variant (default
"<name>-tuned"), after copying config.json to a timestamped backup; an existing variant of that
name is never replaced without --force. Workers are a server setting, not a model's: the
recommended `--workers` is printed and stored in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import CONFIG_FILE, ModelConfig, read_model_config

POISSON_FRACTION = 0.8
PRECISION_RANK = {"int8": 0, "bf16": 1, "fp16": 2, "fp32": 3}
BACKEND_RANK = {"openvino": 0, "onnxruntime": 1, "torchscript": 2, "eager": 3}
THREAD_SECTIONS = {
    "onnxruntime": ("onnxruntime", "intra_op_threads"),
    "torchscript": ("torch", "threads"),
    "eager": ("torch", "threads"),
    "openvino": ("openvino", "threads"),
}


@dataclass
class Trial:
    backend: str
    precision: str
    overrides: dict[str, Any]  # the candidate's own ModelConfig overrides (providers, ...)
    instances: int = 0  # 0: the thread budget's default
    threads: int = 0
    max_batch_size: int = 8
    max_queue_delay_ms: float = 0.0
    workers: int = 1
    stage: int = 1
    scheduler: str = "adaptive"  # batching.scheduler (static where the backend has no wide runner)
    wide_max_batch: int = 0  # batching.wide_max_batch (adaptive; 0: the server's default)
    # results
    status: str = "not run"
    steps: list[dict[str, Any]] = field(default_factory=list)
    peak_images_per_s: float | None = None
    poisson: dict[str, Any] | None = None
    served: dict[str, Any] | None = None  # /v1/models entry: what really ran
    seconds: float = 0.0

    @property
    def key(self) -> tuple[Any, ...]:
        return (
            self.backend,
            self.precision,
            json.dumps(self.overrides, sort_keys=True),
            self.instances,
            self.threads,
            self.max_batch_size,
            self.max_queue_delay_ms,
            self.workers,
            self.scheduler,
            self.wide_max_batch,
        )

    @property
    def resolved_key(self) -> tuple[Any, ...]:
        """The key with the instances and threads the server really used."""
        key = list(self.key)
        key[3] = self.instances or self._served_instances()
        key[4] = self.threads or self._served_threads()
        return tuple(key)

    def layout(self) -> str:
        if self.served and self.served.get("threads"):
            t = self.served["threads"]
            return f"{t['instances']}x{t['inference_threads'] or '-'}"
        return f"{self.instances or 'auto'}x{self.threads or 'auto'}"

    def served_scheduler(self) -> str:
        """The scheduler the server really ran ("adaptive" only where a wide runner loaded)."""
        return str(((self.served or {}).get("scheduler") or {}).get("scheduler") or "static")

    def describe(self) -> str:
        scheduler = self.served_scheduler() if self.served else self.scheduler
        wide = f" wide{self.wide_max_batch}" if self.wide_max_batch else ""
        return (
            f"{self.backend}/{self.precision} {self.layout()} bs{self.max_batch_size} "
            f"delay{self.max_queue_delay_ms:g} w{self.workers} {scheduler}{wide}"
        )

    def p99(self) -> float | None:
        return None if self.poisson is None else self.poisson.get("p99_ms")

    def poisson_images_per_s(self) -> float:
        return float((self.poisson or {}).get("images_per_s") or 0.0)

    def meets(self, p99_ms: float) -> bool:
        p99 = self.p99()
        ok = self.poisson is not None and not self.poisson.get("failed")
        return ok and p99 is not None and p99 <= p99_ms

    def model_overrides(self, base: ModelConfig) -> dict[str, Any]:
        """The variant's overrides of the base config (whole sections, as variants take)."""
        out: dict[str, Any] = {"backend": self.backend, "precision": self.precision}
        for key, value in self.overrides.items():
            out[key] = value
        batching = base.batching.model_dump()
        batching.update(
            max_batch_size=self.max_batch_size,
            max_queue_delay_ms=self.max_queue_delay_ms,
            instances=self.instances or self._served_instances(),
            scheduler=self.scheduler,
            wide_max_batch=self.wide_max_batch,
        )
        out["batching"] = batching
        section, name = THREAD_SECTIONS.get(self.backend, (None, None))
        threads = self.threads or self._served_threads()
        if section and name and threads:
            data = dict(out.get(section) or getattr(base, section).model_dump())
            data[name] = threads
            out[section] = data
        return out

    def _served_instances(self) -> int:
        return int((self.served or {}).get("threads", {}).get("instances") or 0)

    def _served_threads(self) -> int:
        return int((self.served or {}).get("threads", {}).get("inference_threads") or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "overrides": self.overrides,
            "instances": self.instances,
            "threads": self.threads,
            "layout": self.layout(),
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_ms": self.max_queue_delay_ms,
            "workers": self.workers,
            "scheduler": self.scheduler,
            "wide_max_batch": self.wide_max_batch,
            "served_scheduler": self.served_scheduler() if self.served else None,
            "stage": self.stage,
            "status": self.status,
            "peak_images_per_s": self.peak_images_per_s,
            "poisson": self.poisson,
            "steps": self.steps,
            "providers": (self.served or {}).get("providers"),
            "seconds": round(self.seconds, 2),
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def usable_cores() -> int:
    from app.threads import usable_cores as cores

    return cores().usable


def first_stage(base: ModelConfig, device: str) -> tuple[list[Trial], list[str]]:
    """One trial per backend and precision that runs here, most promising first; and the
    candidates that cannot run here, with why."""
    from app.backends import REGISTRY, backend_class

    trials: list[Trial] = []
    cannot: list[str] = []
    for name in REGISTRY:
        try:
            cls = backend_class(name)
            candidates = cls.check_candidates(base, device)
        except Exception as exc:  # a backend whose library is missing
            cannot.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        for cand in candidates:
            if cand.skip:
                cannot.append(f"{name}/{cand.precision}: {cand.skip}")
            else:
                trials.append(Trial(name, cand.precision, dict(cand.overrides)))
    trials.sort(key=lambda t: (PRECISION_RANK.get(t.precision, 9), BACKEND_RANK.get(t.backend, 9)))
    return trials, cannot


def third_stage(best: Trial) -> list[Trial]:
    """The batching knobs worth trying on the best configuration so far. Served adaptive: the
    scheduler picks batch sizes and waits for none, so max_batch_size matters only as its
    bound and a queue delay works against it: try the static scheduler (8 and 4) against a
    bound of 16, and the wide runner taking whole queues of up to 8 (wide_max_batch 8, where
    the default gives it only what would leave an instance idle). Served static:
    max_batch_size and max_queue_delay_ms, as before."""
    if best.served_scheduler() == "adaptive":
        knobs = [
            ("static", 8, 0.0, 0),
            ("static", 4, 0.0, 0),
            ("adaptive", 16, 0.0, 0),
            ("adaptive", 8, 0.0, 8),
        ]
    else:
        knobs = [(best.scheduler, m, d, 0) for m, d in ((4, 0.0), (16, 0.0), (8, 2.0), (16, 5.0))]
    return [
        Trial(
            best.backend,
            best.precision,
            best.overrides,
            max_batch_size=mbs,
            max_queue_delay_ms=delay,
            stage=3,
            instances=best._served_instances(),
            threads=best._served_threads(),
            scheduler=scheduler,
            wide_max_batch=wide,
        )
        for scheduler, mbs, delay, wide in knobs
    ]


def thread_layouts(cores: int) -> list[tuple[int, int]]:
    """(instances, threads per instance) filling the cores: 1 x C, C x 1, and 2 x C/2."""
    layouts = {(1, cores), (cores, 1)}
    if cores >= 4:
        layouts.add((2, cores // 2))
    return sorted(layouts)


class Tuner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model_dir: Path = Path(args.model)
        self.base = read_model_config(self.model_dir)
        self.deadline = time.monotonic() + args.budget
        self.trials: list[Trial] = []
        self.skipped: list[Trial] = []
        self.cost_estimate: float | None = None  # seconds of the trials run so far, the most
        self.workdir = Path(tempfile.mkdtemp(prefix="resnet-serve-tune-"))
        from app.bench.payload import build_bodies, load_images

        self.images = load_images(Path(args.images), args.max_files)
        self.bodies = build_bodies(self.images, "raw", 1)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # ----------------------------------------------------------------------- one trial
    def repository(self, trial: Trial) -> Path:
        repo = self.workdir / f"trial{len(self.trials)}"
        model = repo / self.base.name
        model.mkdir(parents=True)
        for entry in self.model_dir.iterdir():
            if entry.name != CONFIG_FILE:
                (model / entry.name).symlink_to(entry.resolve())
        # instances and threads left at 0 (stage 1) are the thread budget's to decide
        cfg = self.base.variant(self.base.name, **trial.model_overrides(self.base))
        cfg.write(model)
        return repo

    def run_trial(self, trial: Trial) -> None:
        started = time.monotonic()
        repo = self.repository(trial)
        port = free_port()
        log_path = repo / "server.log"
        cmd = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--models",
            str(repo),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(trial.workers),
            "--log-level",
            "warning",
        ]
        # no drain period when the trial is over: its load has ended, nothing is in flight, and
        # the default 5 s would come out of the search's budget at every trial
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RESNET_SERVE_SHUTDOWN_GRACE_S": "0"}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            trial.status = self._serve_and_load(trial, proc, port)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            trial.seconds = time.monotonic() - started
            self.cost_estimate = max(self.cost_estimate or 0.0, trial.seconds)
        if trial.status.startswith("server"):
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            trial.status += ": " + " | ".join(tail)[-300:]

    def _serve_and_load(self, trial: Trial, proc: subprocess.Popen[bytes], port: int) -> str:
        import httpx

        url = f"http://127.0.0.1:{port}"
        limit = time.monotonic() + min(self.args.start_timeout, max(1.0, self.remaining()))
        while True:
            if proc.poll() is not None:
                return f"server exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/health/ready", timeout=1.0).status_code == 200:
                    break
                models = httpx.get(f"{url}/v1/models", timeout=1.0).json()["models"]
                failed = [m for m in models if m["state"] == "failed"]
                if failed:
                    return f"server: model failed to load: {failed[0]['reason']}"
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > limit:
                return "server did not become ready in time"
            time.sleep(0.2)
        trial.served = httpx.get(f"{url}/v1/models", timeout=5.0).json()["models"][0]
        return asyncio.run(self._load(trial, port))

    async def _load(self, trial: Trial, port: int) -> str:
        from app.bench import report
        from app.bench.client import LoadGenerator
        from app.bench.payload import DEFAULT_PATHS, Target, http_request

        path = DEFAULT_PATHS["raw"].format(model=self.base.name)
        target = Target.parse(f"http://127.0.0.1:{port}", path)
        gen = LoadGenerator(
            "127.0.0.1",
            port,
            [http_request(target, b) for b in self.bodies],
            timeout=max(5.0, self.args.p99_ms / 1000 * 20),
        )
        step_s, warm = self.args.step_s, self.args.warmup_s
        peak = 0.0
        for c in self.args.concurrency:
            if self.remaining() < step_s + warm:
                return "stopped: budget"
            s = report.clean((await gen.closed_loop(c, step_s, None, warm)).summary())
            s["label"] = f"c{c}"
            trial.steps.append(s)
            peak = max(peak, float(s["ok_per_s"] or 0.0))
        if not trial.steps:
            return "stopped: budget"
        trial.peak_images_per_s = max(float(s["images_per_s"] or 0) for s in trial.steps)
        if not peak:
            return "failed: no request succeeded"
        if self.remaining() < step_s + warm:
            return "stopped: budget (no Poisson step)"
        rate = round(POISSON_FRACTION * peak, 2)
        s = report.clean(
            (await gen.open_loop(rate, step_s, None, warm, seed=self.args.seed)).summary()
        )
        s["label"] = f"poisson {rate:g}/s"
        trial.steps.append(s)
        trial.poisson = s
        return "ok" if not s["failed"] else f"ok, {s['failed']} failed requests"

    # ----------------------------------------------------------------------- the search
    def try_all(self, trials: list[Trial]) -> None:
        for trial in trials:
            # the same configuration as one already run, also once "auto" is resolved
            if any(trial.key in (t.key, t.resolved_key) for t in self.trials):
                continue
            expected = self.cost_estimate or self.args.step_s * 5
            if self.remaining() < expected:
                trial.status = (
                    f"skipped: {self.remaining():.0f} s left, a trial takes ~{expected:.0f} s"
                )
                self.skipped.append(trial)
                continue
            self.trials.append(trial)
            print(f"trial {len(self.trials)}: {trial.describe()} ...", flush=True)
            self.run_trial(trial)
            print(f"  {self.row_text(trial)}", flush=True)

    def ranked(self, trials: list[Trial]) -> list[Trial]:
        """Meeting the bound first, then by Poisson images/s, then by peak."""
        return sorted(
            (t for t in trials if t.poisson is not None),
            key=lambda t: (
                not t.meets(self.args.p99_ms),
                -t.poisson_images_per_s(),
                -(t.peak_images_per_s or 0.0),
            ),
        )

    def search(self, device: str) -> None:
        first, cannot = first_stage(self.base, device)
        for why in cannot:
            print(f"not tried: {why}")
        if self.args.backends:
            first = [t for t in first if t.backend in self.args.backends]
        self.try_all(first)
        cores = usable_cores()
        top = self.ranked(self.trials)[:2]
        second = [
            Trial(t.backend, t.precision, t.overrides, instances=i, threads=n, stage=2)
            for t in top
            for i, n in thread_layouts(cores)
        ]
        self.try_all(second)
        best = self.ranked(self.trials)[:1]
        self.try_all([trial for t in best for trial in third_stage(t)])
        best = self.ranked(self.trials)[:1]
        if cores >= 2:
            fourth = []
            for t in best:
                # two processes share the cores: each gets half of them
                per = max(1, cores // 2)
                instances = min(t._served_instances() or 1, per)
                fourth.append(
                    Trial(
                        t.backend,
                        t.precision,
                        t.overrides,
                        instances=instances,
                        threads=max(1, per // instances),
                        max_batch_size=t.max_batch_size,
                        max_queue_delay_ms=t.max_queue_delay_ms,
                        workers=2,
                        stage=4,
                        scheduler=t.scheduler,
                    )
                )
            self.try_all(fourth)

    # ----------------------------------------------------------------------- output
    def row_text(self, t: Trial) -> str:
        p = t.poisson or {}
        return (
            f"{t.status}; peak {t.peak_images_per_s or 0:.1f} img/s; "
            f"poisson {p.get('images_per_s') or 0:.1f} img/s "
            f"p50 {p.get('p50_ms') or 0:.1f} ms p99 {p.get('p99_ms') or 0:.1f} ms"
        )

    def table(self) -> str:
        header = (
            "#",
            "stage",
            "backend",
            "precision",
            "inst x thr",
            "max bs",
            "delay ms",
            "workers",
            "scheduler",
            "peak img/s",
            "poisson img/s",
            "p50 ms",
            "p99 ms",
            "meets p99",
            "status",
        )
        rows = [header]
        for i, t in enumerate(self.trials, 1):
            p = t.poisson or {}

            def num(v: Any, fmt: str = ".1f") -> str:
                return "-" if v is None else format(v, fmt)

            rows.append(
                (
                    str(i),
                    str(t.stage),
                    t.backend,
                    t.precision,
                    t.layout(),
                    str(t.max_batch_size),
                    f"{t.max_queue_delay_ms:g}",
                    str(t.workers),
                    t.served_scheduler() if t.served else t.scheduler,
                    num(t.peak_images_per_s),
                    num(p.get("images_per_s")),
                    num(p.get("p50_ms")),
                    num(p.get("p99_ms")),
                    "yes" if t.meets(self.args.p99_ms) else "no",
                    t.status[:60],
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows
        ]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)

    def plot(self, path: Path, best: Trial | None) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
        for i, t in enumerate(self.trials, 1):
            points = [s for s in t.steps if s.get("p99_ms") is not None]
            if not points:
                continue
            closed = sorted(
                (s for s in points if s["loop"] == "closed"), key=lambda s: s["images_per_s"]
            )
            line = ax.plot(
                [s["images_per_s"] for s in closed],
                [s["p99_ms"] for s in closed],
                "-o",
                markersize=3,
                alpha=0.5,
                label=f"{i}: {t.describe()}",
            )[0]
            if t.poisson and t.poisson.get("p99_ms") is not None:
                ax.plot(
                    t.poisson["images_per_s"],
                    t.poisson["p99_ms"],
                    "*" if t is best else "s",
                    markersize=14 if t is best else 7,
                    color=line.get_color(),
                )
                ax.annotate(
                    str(i),
                    (t.poisson["images_per_s"], t.poisson["p99_ms"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
        ax.axhline(self.args.p99_ms, color="red", linestyle="--", linewidth=1, label="p99 bound")
        ax.set_xlabel("achieved throughput (images/s)")
        ax.set_ylabel("p99 latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(
            f"resnet-serve tune {self.base.name}: closed loop (lines), Poisson at "
            f"{POISSON_FRACTION:.0%} of peak (squares; star: chosen)",
            fontsize=9,
        )
        ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def write_variant(model_dir: Path, name: str, overrides: dict[str, Any], force: bool) -> Path:
    """Add the variant to config.json after a timestamped backup; returns the backup's path."""
    path = model_dir / CONFIG_FILE
    raw = json.loads(path.read_text())
    variants = raw.setdefault("variants", {})
    if name in variants and not force:
        raise FileExistsError(f"{path} already has a variant {name!r} (use --force to replace)")
    backup = path.with_name(f"{CONFIG_FILE}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    shutil.copy2(path, backup)
    variants[name] = overrides
    candidate = ModelConfig.model_validate(raw)  # never write a config that does not load
    candidate.variant(name, **overrides)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    os.replace(tmp, path)
    return backup


def main(args: argparse.Namespace) -> int:
    model_dir = Path(args.model)
    try:
        base = read_model_config(model_dir)
    except (OSError, ValueError) as exc:
        print(f"tune: cannot read {model_dir}: {exc}", file=sys.stderr)
        return 2
    name = args.name or f"{base.name}-tuned"
    if name in base.variants and not args.force:
        print(
            f"tune: {model_dir / CONFIG_FILE} already has a variant {name!r}; pass --force to "
            "replace it, or --name for another",
            file=sys.stderr,
        )
        return 2
    if name == base.name:
        print("tune: the variant needs a name other than the model's own", file=sys.stderr)
        return 2
    try:
        tuner = Tuner(args)
    except (OSError, ValueError) as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    print(
        f"tune {base.name}: budget {args.budget:g} s, p99 bound {args.p99_ms:g} ms, "
        f"{usable_cores()} usable cores, {len(tuner.images)} images, steps of "
        f"{args.step_s:g} s (+{args.warmup_s:g} s warm-up) at concurrency "
        f"{','.join(map(str, args.concurrency))}, then Poisson at {POISSON_FRACTION:.0%} of "
        "the peak",
        flush=True,
    )
    try:
        tuner.search(args.device or base.device)
    except KeyboardInterrupt:
        print("\ninterrupted: reporting what was measured", file=sys.stderr)
    finally:
        tuner.close()
    ranked = tuner.ranked(tuner.trials)
    best = ranked[0] if ranked and ranked[0].meets(args.p99_ms) else None
    print("\n" + tuner.table())
    for t in tuner.skipped:
        print(f"skipped (budget): {t.describe()}")
    out_dir = Path(args.out_dir) if args.out_dir else model_dir
    plot_path = out_dir / f"tune-{base.name}.png"
    tuner.plot(plot_path, best)
    print(f"wrote {plot_path}")
    report = {
        "model": base.name,
        "budget_s": args.budget,
        "p99_ms": args.p99_ms,
        "cores": usable_cores(),
        "trials": [t.as_dict() for t in tuner.trials],
        "skipped": [t.describe() for t in tuner.skipped],
        "best": None,
    }
    rc = 0
    if best is None:
        print(f"no configuration met p99 <= {args.p99_ms:g} ms: config.json left as it was")
        rc = 1
    else:
        overrides = best.model_overrides(base)
        report["best"] = {"variant": name, "overrides": overrides, "workers": best.workers}
        try:
            backup = write_variant(model_dir, name, overrides, args.force)
        except (FileExistsError, ValueError) as exc:
            print(f"tune: not written: {exc}", file=sys.stderr)
            rc = 2
        else:
            print(
                f"best: #{tuner.trials.index(best) + 1} {best.describe()}: "
                f"{best.poisson_images_per_s():.1f} img/s at p99 {best.p99():.1f} ms"
            )
            print(f"wrote variant {name!r} to {model_dir / CONFIG_FILE} (backup: {backup.name})")
            print(
                f"serve it: resnet-serve serve --models {model_dir.parent} "
                f"--workers {best.workers}   (model name {name})"
            )
    json_path = out_dir / f"tune-{base.name}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {json_path}")
    return rc


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from app.bench.options import int_list

    p = sub.add_parser(
        "tune",
        help="search backend, precision, threads and batching for the best served "
        "throughput within a p99 bound; writes the best as a config.json variant",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model directory (holding config.json)")
    p.add_argument("--images", required=True, help="folder of JPEG files to send")
    p.add_argument("--p99-ms", type=float, default=100.0, help="p99 bound of the Poisson step")
    p.add_argument("--budget", type=float, default=300.0, help="seconds for the whole search")
    p.add_argument("--step-s", type=float, default=5.0, help="seconds measured per load step")
    p.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured load before a step")
    p.add_argument(
        "--concurrency", type=int_list, default=[1, 4, 16], help="closed-loop steps per trial"
    )
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds to be ready")
    p.add_argument("--backends", type=lambda s: [b for b in s.split(",") if b], help="only these")
    p.add_argument("--device", help="cpu or cuda:N (default: the model's)")
    p.add_argument("--name", help="variant name (default <model>-tuned)")
    p.add_argument("--force", action="store_true", help="replace an existing variant of that name")
    p.add_argument("--max-files", type=int, default=64, help="use the first N images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", help="where the PNG and JSON go (default: the model directory)")
    p.set_defaults(func=main)
