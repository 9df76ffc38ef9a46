"""The Ray Serve deployment: each replica is the resnet-serve FastAPI app (create_app), with
its lifespan (model load and warm-up before the replica counts as started; on shutdown the
batchers drain and the models close) and its DataPlane, exactly as under uvicorn.

Serve's HTTP proxy parses nothing but the route: the request reaches the replica's FastAPI app
as ASGI, so every endpoint, error and limit of the server is the same (KServe V2, /classify,
/health/*, 413/415/422/503). The replica's Serve health check is the app's readiness (every
model loaded, warm and accepting), so a replica whose model failed never takes traffic.

Metrics: Serve's proxy routes /metrics to any one replica, so it is not a scrape target.
With `metrics_port` each replica also serves its own registry on the first free port of
metrics_port .. metrics_port + metrics_port_span - 1 of its node (replicas on one node take
consecutive ports): scrape every node's range (docs/deployment.md).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app.config import ModelConfig, Settings
from app.main import create_app
from app.metrics import Metrics
from app.model_folders import load_model_configs
from app.ray_serve.sizing import ReplicaLimits, replica_limits

log = logging.getLogger(__name__)

APP_NAME = "resnet-serve"
DEPLOYMENT_NAME = "resnet-serve"


@dataclass
class RayOptions:
    """Everything `resnet-serve ray` and the `serve run` builder accept."""

    models_dir: Path = Path("models")
    replicas: int = 1
    # (min, max): Serve autoscaling on ongoing requests instead of a fixed replica count
    autoscale: tuple[int, int] | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    max_replicas_per_node: int | None = None
    # None: derived from the models' batching (sizing.py)
    max_ongoing_requests: int | None = None
    # Requests waiting in each caller's router (each HTTP proxy) before Serve answers 503
    # (-1: unbounded). None: the sum of the models' max_queue_size, the bound one server has.
    max_queued_requests: int | None = None
    metrics_port: int | None = None
    metrics_port_span: int = 8
    graceful_shutdown_timeout_s: float = 30.0
    health_check_period_s: float = 5.0
    # Server settings (RESNET_SERVE_* of the driver's environment, overridden by these)
    settings: dict[str, Any] = field(default_factory=dict)


def replica_cores(options: RayOptions) -> int:
    """The cores a replica's thread budget plans for (instances, inference and decode
    threads), and the sizing of Serve's limits with it: its num_cpus, not the whole node's."""
    return max(1, math.ceil(options.num_cpus))


def _explicit(options: RayOptions, name: str) -> bool:
    """Whether the driver set this server setting (--setting or RESNET_SERVE_*)."""
    return name in options.settings or f"RESNET_SERVE_{name.upper()}" in os.environ


def replica_settings(options: RayOptions) -> dict[str, Any]:
    """The server settings every replica builds, as JSON-able values (they travel in the
    Serve config). decode_threads defaults to the replica's CPU share, not the driver's.
    gRPC is off unless asked for: Serve's proxies carry HTTP only, and every replica on a node
    binding the default port 8001 made all but the first fail to start."""
    settings = Settings(**{"models_dir": options.models_dir, **options.settings})
    exclude = {"host", "port", "workers"}
    if not _explicit(options, "decode_threads"):
        exclude.add("decode_threads")
    dumped = settings.model_dump(mode="json", exclude=exclude)
    dumped.setdefault("decode_threads", replica_cores(options))
    if not _explicit(options, "grpc_port"):
        dumped["grpc_port"] = 0
    return dumped


def _serve_metrics(metrics: Metrics, first_port: int, span: int) -> tuple[Any, int]:
    """Serve the replica's registry over HTTP on the first free port of the range."""
    from prometheus_client import start_http_server

    last_error: OSError | None = None
    for port in range(first_port, first_port + span):
        try:
            server, _thread = start_http_server(port, addr="0.0.0.0", registry=metrics.registry)
        except OSError as exc:
            last_error = exc
            continue
        return server, port
    raise RuntimeError(
        f"no free metrics port in {first_port}..{first_port + span - 1}: {last_error}"
    )


class ResnetServeReplica:
    """One replica: create_app(settings) with a fresh metrics registry."""

    def __init__(
        self,
        settings: dict[str, Any],
        metrics_port: int | None = None,
        metrics_port_span: int = 8,
        cores: int | None = None,
    ) -> None:
        self._settings = Settings(**settings)
        app_log = logging.getLogger("app")
        app_log.setLevel(self._settings.log_level.upper())
        if not app_log.handlers:  # to the replica's stderr: Ray's worker log, and the driver's
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            app_log.addHandler(handler)
        self._metrics = Metrics()
        self._app: FastAPI = create_app(self._settings, metrics=self._metrics, max_cores=cores)
        self._metrics_server: Any = None
        self.metrics_port: int | None = None
        if metrics_port is not None:
            self._metrics_server, self.metrics_port = _serve_metrics(
                self._metrics, metrics_port, metrics_port_span
            )
            log.info("replica metrics on port %d", self.metrics_port)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._app

    async def check_health(self) -> None:
        """Serve's health check (also its start-up gate): the app's readiness."""
        repository = getattr(self._app.state, "repository", None)
        if repository is None or not repository.ready:
            states = {m.name: m.state for m in repository.models.values()} if repository else {}
            raise RuntimeError(f"resnet-serve replica not ready: {states}")

    def __del__(self) -> None:
        # Runs after Serve has drained the replica and the app's lifespan has closed the models.
        server = getattr(self, "_metrics_server", None)
        if server is not None:
            threading.Thread(target=server.shutdown, daemon=True).start()


def deployment_options(
    options: RayOptions, configs: list[ModelConfig], settings: dict[str, Any]
) -> tuple[dict[str, Any], ReplicaLimits]:
    """serve.deployment's options for these models (no Ray needed to compute them)."""
    limits = replica_limits(configs, replica_cores(options))
    max_ongoing = options.max_ongoing_requests or limits.max_ongoing_requests
    max_queued = options.max_queued_requests
    if max_queued is None:
        max_queued = sum(c.batching.max_queue_size for c in configs)
    actor_options: dict[str, Any] = {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus}
    if options.resources:
        actor_options["resources"] = dict(options.resources)
    deploy_options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": max_ongoing,
        "max_queued_requests": max_queued,
        # Serve's own overload answer, like the server's: 503 with Retry-After
        "backpressure_config": {"status_code": 503, "retry_after_s": settings["retry_after_s"]},
        "graceful_shutdown_timeout_s": options.graceful_shutdown_timeout_s,
        "health_check_period_s": options.health_check_period_s,
    }
    if options.max_replicas_per_node is not None:
        deploy_options["max_replicas_per_node"] = options.max_replicas_per_node
    if options.autoscale is not None:
        low, high = options.autoscale
        deploy_options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": limits.target_ongoing_requests,
            # model load and warm-up cost seconds: add fast, remove slowly
            "upscale_delay_s": 10.0,
            "downscale_delay_s": 300.0,
        }
    else:
        deploy_options["num_replicas"] = options.replicas
    return deploy_options, limits


def build_deployment(options: RayOptions) -> tuple[Any, ReplicaLimits]:
    """The bound Serve application and the limits it was given."""
    from ray import serve

    configs = load_model_configs(options.models_dir, options.settings.get("backends"))
    settings = replica_settings(options)
    deploy_options, limits = deployment_options(options, configs, settings)
    ingress = serve.ingress()(ResnetServeReplica)
    deployment = serve.deployment(**deploy_options)(ingress)
    bound = deployment.bind(
        settings, options.metrics_port, options.metrics_port_span, replica_cores(options)
    )
    return bound, limits


def options_from_args(args: dict[str, Any]) -> RayOptions:
    """`serve run app.ray_serve.deployment:build_app models=DIR replicas=2 ...` (or the
    `args:` of a Serve config file / KubeRay RayService): keys are RayOptions' fields;
    autoscale is MIN:MAX, resources and settings are JSON objects."""
    import json

    known = RayOptions.__dataclass_fields__
    unknown = set(args) - set(known) - {"models"}
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}; known: {sorted(known)}")
    opts = RayOptions()
    values = asdict(opts)
    for key, raw in args.items():
        name = "models_dir" if key == "models" else key
        text = str(raw)
        if name == "models_dir":
            values[name] = Path(text)
        elif name == "autoscale":
            low, _, high = text.partition(":")
            values[name] = (int(low), int(high))
        elif name in ("resources", "settings"):
            values[name] = json.loads(text) if isinstance(raw, str) else dict(raw)
        elif name in (
            "num_cpus",
            "num_gpus",
            "graceful_shutdown_timeout_s",
            "health_check_period_s",
        ):
            values[name] = float(text)
        else:
            values[name] = int(text)
    return RayOptions(**values)


def build_app(args: dict[str, Any]) -> Any:
    """Serve application builder: `serve run app.ray_serve.deployment:build_app models=DIR`."""
    bound, limits = build_deployment(options_from_args(args))
    log.info("resnet-serve on Ray Serve: %s", limits)
    return bound
