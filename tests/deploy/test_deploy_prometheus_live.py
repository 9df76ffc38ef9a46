"""A real Prometheus (Debian's binary) scrapes a real resnet-serve on 127.0.0.1.

The server is started the way a user would: `python -m app.cli export` a random-weight
ResNet-18 to ONNX, then `python -m app.cli serve`.  Prometheus runs with the project's own alert
rules; the tests query its HTTP API for the request count and a p99 from histogram_quantile,
run every dashboard query against it, and compare the dashboard's and rules' metric names with
the ones the running server really exports.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import DEPLOY, REPO, find_tool
from tests.deploy.metric_names import dashboard_exprs, exported_series, names_in, rule_exprs

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "resnet-serve.json"
RULES = DEPLOY / "prometheus" / "rules" / "resnet-serve.yml"
MODEL = "resnet18"

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, b""


def wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"{str(proc.args)[:200]} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            )
        if http(url, timeout=2)[0] == 200:
            return
        time.sleep(0.25)
    pytest.fail(f"{url} not ready after {seconds} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (30, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resnet-serve")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("RESNET_SERVE_AUTH_TOKEN", None)
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "export",
            "--arch",
            MODEL,
            "--weights",
            "random",
            "--formats",
            "onnx",
            "--out",
            str(tmp / "models" / MODEL),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert export.returncode == 0, export.stdout + export.stderr
    port = free_port()
    log = tmp / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--models",
                str(tmp / "models"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health/ready", proc, log, 120)
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    target = server.removeprefix("http://")
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "resnet-serve", "static_configs": [{"targets": [target]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                find_tool("prometheus"),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/-/ready", proc, log, 30)
        yield base
    finally:
        stop(proc)


def promql(prom: str, expr: str) -> list[dict]:
    status, body = http(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert status == 200, (expr, body[:500])
    data = json.loads(body)
    assert data["status"] == "success", data
    return data["data"]["result"]


def scalar(prom: str, expr: str) -> float | None:
    result = promql(prom, expr)
    return float(result[0]["value"][1]) if result else None


def classify(server: str, image: bytes) -> int:
    status, body = http(
        f"{server}/v1/models/{MODEL}/classify?top_k=5",
        data=image,
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert status == 200, body[:500]
    assert json.loads(body)  # a JSON answer
    return 1


def test_prometheus_sees_request_count_and_p99(server, prometheus):
    image = jpeg()
    sent = sum(classify(server, image) for _ in range(3))
    count_q = f'sum(resnet_serve_requests_total{{model="{MODEL}",endpoint="classify",code="200"}})'
    p99_q = (
        "histogram_quantile(0.99, sum by (le) (rate("
        f'resnet_serve_request_duration_seconds_bucket{{model="{MODEL}"}}[30s])))'
    )
    # The first sample lands a few seconds after Prometheus starts; keep traffic flowing so the
    # rate over the window is non-zero, and poll.
    p99 = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        p99 = scalar(prometheus, p99_q)
        if p99 is not None and not math.isnan(p99):
            break
        sent += classify(server, image)
        time.sleep(0.5)
    assert p99 is not None and not math.isnan(p99), "no p99 from histogram_quantile within 60 s"
    assert 0 < p99 <= 10, p99
    # Traffic stopped: the next scrapes must show exactly what the client sent.
    count = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        count = scalar(prometheus, count_q)
        if count == sent:
            break
        time.sleep(0.5)
    assert count == sent, f"Prometheus counted {count}, client sent {sent}"
    assert scalar(prometheus, 'up{job="resnet-serve"}') == 1
    info = promql(prometheus, f'resnet_serve_model_info{{model="{MODEL}"}}')
    assert info and {"backend", "device", "precision"} <= info[0]["metric"].keys()


def test_dashboard_queries_run_on_real_prometheus(server, prometheus):
    """Every dashboard query parses and runs; the core panels have data."""
    for expr in dashboard_exprs(DASHBOARD):
        if expr.startswith("label_values("):
            metric = expr.removeprefix("label_values(").split(",")[0]
            assert promql(prometheus, metric), expr
            continue
        promql(prometheus, expr.replace("$__rate_interval", "1m").replace("$model", ".*"))
    with_data = [
        'sum by (model) (rate(resnet_serve_requests_total{model=~".*"}[1m]))',
        'resnet_serve_model_ready{model=~".*"}',
    ]
    for expr in with_data:
        assert promql(prometheus, expr), expr


def test_alert_rules_load_and_evaluate_against_real_metrics(server, prometheus):
    deadline = time.monotonic() + 15
    while True:
        status, body = http(f"{prometheus}/api/v1/rules")
        assert status == 200
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
            break
        assert time.monotonic() < deadline, "rules were not evaluated within 15 s"
        time.sleep(0.5)
    assert len(rules) == len(rule_exprs(RULES))
    for r in rules:
        assert r["health"] == "ok", r
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert not firing, firing


def test_dashboard_and_rules_use_only_metrics_the_server_exports(server):
    status, body = http(f"{server}/metrics")
    assert status == 200
    exported = exported_series(body.decode())
    used = set()
    for expr in dashboard_exprs(DASHBOARD) + rule_exprs(RULES):
        used |= names_in(expr)
    assert used <= exported, f"not exported by the server: {sorted(used - exported)}"
