"""A real two-node Ray cluster on 127.0.0.1 for the tests: a head and a worker node, each a
`ray start --block` process in its own session, with distinct ports, one temp dir, small
resources (2 CPUs, 100 MB object store each) and one `resnet_slot` custom resource per node, so a
deployment asking for one slot per replica puts one replica on each node.

Stopped by PID only: every process below the two `ray start` processes (raylet, GCS, agents and
the Ray worker processes that host the replicas, which live in sessions of their own) is
collected by walking /proc and killed one by one. `ray stop` is never used: it would end every
Ray process on the machine, other users' too.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
SLOT = "resnet_slot"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_range(n: int) -> int:
    """The first port of n consecutive free ports (checked now; good enough for a test)."""
    for _ in range(200):
        base = random.randrange(20000, 59000)
        if all(_port_free(p) for p in range(base, base + n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal the process and every descendant, by PID. Returns the PIDs signalled."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


def ray_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),  # the replicas import this worktree's app
        "RAY_USAGE_STATS_ENABLED": "0",
        # A local ray.init() writes ~/.ray/auth_token, after which a `ray start` head turns on
        # token auth that its worker did not pass ("InvalidAuthToken"): loopback tests opt out.
        "RAY_AUTH_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        # The GCS declares a node dead after 3 missed 1 s health checks (default 5 x 3 s).
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
        # Serve's proxy prefers replicas on its own node while they have room; spread the
        # requests over both nodes instead, or killing the worker would test nothing.
        "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
        "RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING": "0",
    }


class Node:
    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.metrics_port = free_port()
        workers = free_range(60)
        cmd = [
            str(RAY),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            f'--resources={{"{SLOT}": 1}}',
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={self.metrics_port}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--min-worker-port={workers}",
            f"--max-worker-port={workers + 59}",
            *args,
        ]
        self._log = open(log, "wb")
        self.log_path = log
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=ray_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: ray start exited:\n{self.log()}")
            if b"Ray runtime started" in self.log_path.read_bytes():
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not started after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> list[int]:
        pids = kill_tree(self.proc.pid)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        return pids


class Cluster:
    """Head + worker; `with Cluster() as c:` and everything is killed on exit."""

    def __init__(self) -> None:
        # Short: Ray's Unix socket paths must stay under 108 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rsray-", dir="/tmp"))
        self.gcs_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.nodes: list[Node] = []

    def start(self, timeout: float = 120.0) -> None:
        head = Node(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
                f"--dashboard-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
            ],
            self.temp_dir / "head.log",
        )
        self.nodes.append(head)
        head.wait_started(timeout)
        worker = Node("worker", [f"--address={self.address}"], self.temp_dir / "worker.log")
        self.nodes.append(worker)
        worker.wait_started(timeout)

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def worker(self) -> Node:
        return self.nodes[1]

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.proc.returncode is None:
                node.kill()
        # Zombies of killed processes are reaped by init; nothing else may be left.
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
