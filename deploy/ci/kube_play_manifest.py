"""The rendered Deployment, made runnable by `podman kube play` on one machine without a
registry or a Service: the only changes are the local image (imagePullPolicy Never), one
replica, a hostPort on 127.0.0.1 and the model repository as a read-only hostPath at /models.

Usage: kube_play_manifest.py RENDERED OUT --image IMG --host-port N --models DIR
Prints terminationGracePeriodSeconds (the shutdown test's bound)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--image", required=True)
    ap.add_argument("--host-port", type=int, required=True)
    ap.add_argument("--models", type=Path, required=True)
    args = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(args.rendered.read_text()) if d]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    dep["spec"]["replicas"] = 1
    spec = dep["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    container["image"] = args.image
    container["imagePullPolicy"] = "Never"
    for port in container["ports"]:
        if port["name"] == "http":
            port["hostPort"] = args.host_port
            port["hostIP"] = "127.0.0.1"
    container.setdefault("volumeMounts", []).append(
        {"name": "models", "mountPath": "/models", "readOnly": True}
    )
    spec.setdefault("volumes", []).append(
        {"name": "models", "hostPath": {"path": str(args.models.resolve()), "type": "Directory"}}
    )
    args.out.write_text(yaml.safe_dump(dep, sort_keys=False))
    print(spec["terminationGracePeriodSeconds"])


if __name__ == "__main__":
    main()
