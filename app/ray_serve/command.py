"""`resnet-serve ray`: deploy resnet-serve as a Ray Serve application on a running cluster.

    resnet-serve ray --address auto --models /models --replicas 2 --num-cpus 4

It connects to the cluster (a driver: run it on a cluster node, or anywhere with
`--address ray://HEAD:10001`), starts Serve there if it is not running (HTTP proxies on
--http-host:--http-port), deploys the application, waits until every replica is ready (models
loaded and warm) and exits; the application keeps running on the cluster (`serve status`,
`serve shutdown`). The model repository must be at the same path on every node that can run a
replica (baked into the image, or a shared file system), and resnet-serve installed there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from app.ray_serve.deployment import APP_NAME, RayOptions


def _autoscale(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    if not sep or int(low) < 1 or int(high) < int(low):
        raise argparse.ArgumentTypeError("--autoscale takes MIN:MAX with 1 <= MIN <= MAX")
    return int(low), int(high)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ray",
        help="deploy on a running Ray cluster as a Ray Serve application (needs the ray extra)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    p.add_argument(
        "--node-ip-address",
        help="this driver's node IP, when it is not the default route's (e.g. 127.0.0.1)",
    )
    p.add_argument(
        "--models", type=Path, help="model repository on every node (required to deploy)"
    )
    p.add_argument(
        "--delete",
        action="store_true",
        help="remove the application instead: Serve stops routing to its replicas, waits for "
        "their ongoing requests, then each replica's lifespan drains its batchers and closes "
        "the models",
    )
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=1, help="fixed number of replicas")
    scale.add_argument(
        "--autoscale",
        type=_autoscale,
        metavar="MIN:MAX",
        help="Serve autoscaling on ongoing requests, between MIN and MAX replicas",
    )
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica")
    p.add_argument(
        "--resources",
        type=json.loads,
        default={},
        help="custom Ray resources per replica, JSON (e.g. '{\"resnet_slot\": 1}')",
    )
    p.add_argument("--max-replicas-per-node", type=int, help="spread replicas over nodes")
    p.add_argument(
        "--max-ongoing-requests",
        type=int,
        help="per replica (default: derived from the models' batching, see docs)",
    )
    p.add_argument(
        "--max-queued-requests",
        type=int,
        help="requests waiting in each proxy's router before Serve answers 503 "
        "(default: the sum of the models' max_queue_size)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="each replica serves its Prometheus metrics on the first free port from here",
    )
    p.add_argument("--metrics-port-span", type=int, default=8)
    p.add_argument("--graceful-shutdown-timeout-s", type=float, default=30.0)
    p.add_argument("--health-check-period-s", type=float, default=5.0)
    p.add_argument("--http-host", default="0.0.0.0", help="Serve's HTTP proxies bind here")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument(
        "--proxy-location",
        default="EveryNode",
        choices=["EveryNode", "HeadOnly"],
        help="where Serve runs HTTP proxies (HeadOnly when nodes share one host, as in tests)",
    )
    p.add_argument("--name", default=APP_NAME, help="Serve application name")
    p.add_argument("--route-prefix", default="/")
    p.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server setting for every replica (e.g. request_timeout_ms=10000); the "
        "driver's RESNET_SERVE_* environment applies too",
    )
    p.set_defaults(func=run)


def options_from_namespace(args: argparse.Namespace) -> RayOptions:
    settings: dict[str, Any] = {}
    for item in args.setting:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--setting takes KEY=VALUE, got {item!r}")
        settings[key.strip()] = value
    return RayOptions(
        models_dir=args.models.resolve(),
        replicas=args.replicas,
        autoscale=args.autoscale,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        resources=args.resources,
        max_replicas_per_node=args.max_replicas_per_node,
        max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
        metrics_port=args.metrics_port,
        metrics_port_span=args.metrics_port_span,
        graceful_shutdown_timeout_s=args.graceful_shutdown_timeout_s,
        health_check_period_s=args.health_check_period_s,
        settings=settings,
    )


def run(args: argparse.Namespace) -> int:
    try:
        import ray
        from ray import serve
    except ImportError:
        print(
            "resnet-serve ray needs the ray extra: pip install 'resnet-serve[ray]'", file=sys.stderr
        )
        return 2
    from app.ray_serve.deployment import build_deployment

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    init: dict[str, Any] = {"address": args.address, "logging_level": logging.WARNING}
    if args.node_ip_address:
        init["_node_ip_address"] = args.node_ip_address
    if args.delete:
        ray.init(**init)
        serve.delete(args.name)
        print(json.dumps({"application": args.name, "status": "DELETED"}))
        return 0
    if args.models is None:
        print("resnet-serve ray: --models is required to deploy", file=sys.stderr)
        return 2
    options = options_from_namespace(args)
    bound, limits = build_deployment(options)
    ray.init(**init)
    serve.start(
        proxy_location=args.proxy_location,
        http_options={"host": args.http_host, "port": args.http_port},
    )
    serve.run(bound, name=args.name, route_prefix=args.route_prefix)
    status = serve.status().applications[args.name].status
    print(
        json.dumps(
            {
                "application": args.name,
                "status": getattr(status, "value", str(status)),
                "max_ongoing_requests": options.max_ongoing_requests or limits.max_ongoing_requests,
                "target_ongoing_requests": limits.target_ongoing_requests,
                "per_model_capacity": limits.per_model_capacity,
                "http": f"http://{args.http_host}:{args.http_port}{args.route_prefix}",
            }
        )
    )
    return 0
