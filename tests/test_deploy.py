"""deploy/: docker compose, Grafana provisioning, Prometheus and Kubernetes files, checked
offline (no docker daemon or cluster here): YAML, mounted paths, Kubernetes schemas, kustomize
rendering, and the settings that must agree with the server (ports, grace, health service)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmxsim_server.config import ServerConfig, from_environment
from vmxsim_server.service import SERVICE_NAME

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.32.0"  # the kubectl client here is v1.32; grpc probes are GA since 1.27
GRPC_PORT, METRICS_PORT, HEALTH_PORT = 50051, 9464, 8081


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_compose_mounts_exist_and_ports_match_the_server() -> None:
    compose = load(COMPOSE)
    services = compose["services"]
    assert set(services) == {"vmxsim", "prometheus", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    build = services["vmxsim"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()
    published = {p.rsplit(":", 1)[-1] for p in services["vmxsim"]["ports"]}
    assert published == {str(GRPC_PORT), str(METRICS_PORT)}
    grace = float(services["vmxsim"]["environment"]["VMXSIM_GRACE"])
    assert float(services["vmxsim"]["stop_grace_period"].rstrip("s")) > grace


def test_dockerfile_listens_on_every_interface_with_the_default_ports() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"VMXSIM_LISTEN=0.0.0.0:{GRPC_PORT}" in dockerfile
    assert f"VMXSIM_METRICS_LISTEN=0.0.0.0:{METRICS_PORT}" in dockerfile
    assert ServerConfig().listen.endswith(f":{GRPC_PORT}")
    assert (ServerConfig().metrics_listen or "").endswith(f":{METRICS_PORT}")
    for copied in ("pyproject.toml", "README.md", "protos", "server", "client"):
        assert (ROOT / copied).exists()
        assert f"!{copied}" in (DEPLOY / "Dockerfile.dockerignore").read_text()


def test_grafana_provisioning_points_at_the_compose_prometheus_and_dashboards() -> None:
    datasources = load(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")
    (source,) = datasources["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    providers = load(DEPLOY / "grafana/provisioning/dashboards/vmxsim.yaml")
    (provider,) = providers["providers"]
    grafana = load(COMPOSE)["services"]["grafana"]
    mounts = dict(v.split(":")[:2][::-1] for v in grafana["volumes"])
    local = COMPOSE.parent / mounts[provider["options"]["path"]]
    assert (local / "vmxsim.json").is_file()
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"


def test_prometheus_config_scrapes_the_compose_vmxsim() -> None:
    config = load(DEPLOY / "prometheus/prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "vmxsim"
    assert job["static_configs"][0]["targets"] == [f"vmxsim:{METRICS_PORT}"]


# --- Kubernetes --------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path)
    ]


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [doc for _, doc in manifests() if doc["kind"] == kind]
    return doc


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        pytest.skip(f"SKIPPED LOUDLY: kubernetes-validate cannot be imported ({exc})")
    checked = []
    for name, doc in manifests():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD (prometheus-operator): checked by the PodMonitor test below
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{name} ({doc['kind']}) is invalid for Kubernetes {KUBERNETES_VERSION}: {exc}"
            )
        checked.append(doc["kind"])
    assert sorted(checked) == ["NetworkPolicy", "Service", "StatefulSet"]


def test_statefulset_probes_grace_and_scrape_annotations() -> None:
    statefulset = by_kind("StatefulSet")
    service = by_kind("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    pod = statefulset["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT, "health": HEALTH_PORT}
    # the grpc probe cannot do TLS: it asks the plaintext health-only port
    assert container["livenessProbe"]["grpc"] == {"port": HEALTH_PORT}
    assert container["readinessProbe"]["grpc"] == {"port": HEALTH_PORT, "service": SERVICE_NAME}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["VMXSIM_HEALTH_LISTEN"] == f"0.0.0.0:{HEALTH_PORT}"
    assert env["VMXSIM_LISTEN"] == f"0.0.0.0:{GRPC_PORT}"
    assert env["VMXSIM_METRICS_LISTEN"] == f"0.0.0.0:{METRICS_PORT}"
    grace = float(env.get("VMXSIM_GRACE", ServerConfig().grace_seconds))
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)


def test_statefulset_serves_tls_tokens_and_state_from_secrets_and_a_volume() -> None:
    """Issue 14 item 14: secure defaults; every file the server is told to read is mounted."""
    pod = by_kind("StatefulSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "vmxsim-tls", "tokens": "vmxsim-tokens"}
    for name in ("VMXSIM_TLS_CERT", "VMXSIM_TLS_KEY", "VMXSIM_METRICS_TLS_CERT",
                 "VMXSIM_METRICS_TLS_KEY", "VMXSIM_AUTH_TOKEN_FILE"):  # fmt: skip
        assert any(env[name].startswith(mounts[volume] + "/") for volume in secrets), name
    (claim,) = by_kind("StatefulSet")["spec"]["volumeClaimTemplates"]
    assert env["VMXSIM_STATE_DIR"] == mounts[claim["metadata"]["name"]]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    config = from_environment(
        {k: v for k, v in env.items() if not k.endswith(("_FILE", "_CERT", "_KEY"))}
    )
    assert not config.tls  # the table's other settings parse (the files exist only in a pod)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for name in ("VMXSIM_TLS_CERT", "VMXSIM_AUTH_TOKEN_FILE", "VMXSIM_STATE_DIR"):
        assert f"{name}={env[name]}" in dockerfile
    assert f"VOLUME {env['VMXSIM_STATE_DIR']}" in dockerfile


def test_only_prometheus_may_scrape_and_it_scrapes_over_tls() -> None:
    policy = by_kind("NetworkPolicy")
    pod = by_kind("StatefulSet")["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    open_rule, metrics_rule = policy["spec"]["ingress"]
    assert "from" not in open_rule and {p["port"] for p in open_rule["ports"]} == {"grpc", "health"}
    assert metrics_rule["from"] and [p["port"] for p in metrics_rule["ports"]] == ["metrics"]
    assert pod["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    (endpoint,) = by_kind("PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["ca"]["secret"]["name"]


def test_podmonitor_selects_the_pods_metrics_port() -> None:
    monitor = by_kind("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    pod = by_kind("StatefulSet")["spec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_the_base_without_the_optional_podmonitor() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], check=True, capture_output=True, text=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert sorted(doc["kind"] for doc in docs) == ["NetworkPolicy", "Service", "StatefulSet"]
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vmxsim"


def test_the_locust_manifest_validates_and_matches_the_statefulset() -> None:
    """deploy/load/kubernetes.yaml (docs/walkthrough.md): master Job + Service, worker
    Deployment, valid for Kubernetes 1.32; the master's hosts are the StatefulSet's pods."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = load_all(DEPLOY / "load/kubernetes.yaml")
    assert sorted(doc["kind"] for doc in docs) == ["Deployment", "Job", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {doc["kind"]: doc for doc in docs}
    (master,) = kinds["Job"]["spec"]["template"]["spec"]["containers"]
    (worker,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "--master" in master["args"] and "--worker" in worker["args"]
    assert "--master-host=locust-master" in worker["args"]
    assert kinds["Service"]["metadata"]["name"] == "locust-master"
    assert (
        kinds["Service"]["spec"]["selector"]
        == kinds["Job"]["spec"]["template"]["metadata"]["labels"]
    )
    statefulset = by_kind("StatefulSet")
    replicas, service = statefulset["spec"]["replicas"], statefulset["spec"]["serviceName"]
    (hosts,) = [a.split("=", 1)[1] for a in master["args"] if a.startswith("--host=")]
    assert hosts.split(",") == [f"vmxsim-{i}.{service}:50051" for i in range(replicas)]
