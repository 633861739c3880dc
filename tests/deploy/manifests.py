"""The deployment's manifests as the tests see them: kustomize builds, the Helm chart rendered,
and the properties issue 15 asks of the forwarder's DaemonSet."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.helmrender import Chart, render_chart

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
KUBERNETES = DOCKER / "kubernetes"
CHART = Chart(DOCKER / "helm" / "nsm-forwarder")
#: the oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest schemas bundled
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")

#: Upstream's environment variables (spec §4.1 table, and §4.10's chart env: JAEGER_*), less
#: VPPAGENT_ENDPOINT (a vpp-agent address; this forwarder talks to VPP's own API socket).
UPSTREAM_ENV = (
    "FORWARDER_NAME",
    "FORWARDER_SOCKET",
    "FORWARDER_SOCKET_TYPE",
    "NSM_BASEDIR",
    "FORWARDER_REGISTRAR_SOCKET",
    "FORWARDER_REGISTRAR_SOCKET_TYPE",
    "METRICS_COLLECTOR_ENABLED",
    "METRICS_COLLECTOR_REQUEST_PERIOD",
    "NSM_FORWARDER_SRC_IP",
    "CROSS_CONNECT_LIVENESS_CHECK_INTERVAL",
    "INSECURE",
    "TRACER_ENABLED",
    "JAEGER_AGENT_HOST",
    "JAEGER_AGENT_PORT",
    "FORWARDER_ALLOW_VHOST",
)


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(path: Path) -> list[dict[str, Any]] | None:
    """``kubectl kustomize path`` (kustomize is built into kubectl), or None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return documents(done.stdout)


def helm_template(overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart rendered with ``overrides`` merged over values.yaml (tests/deploy/helmrender)."""
    rendered = render_chart(CHART, overrides)
    return [doc for text in rendered.values() for doc in documents(text)]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def forwarder_container(pod: dict[str, Any]) -> dict[str, Any]:
    """The container that runs ``nsm-forwarder run`` (a VPP pod has a second one)."""
    found = [c for c in pod["containers"] if c.get("args") == ["run"]]
    assert len(found) == 1, [c["name"] for c in pod["containers"]]
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """{name: value or valueFrom} of a container's env."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item)


def check_daemonset(objects: list[dict[str, Any]]) -> None:
    """Every DaemonSet property of issue 15 item 2 (AssertionError naming the first one
    missing), and the references between the objects (ServiceAccount, ConfigMap)."""
    ds = one(objects, "DaemonSet")
    spec = ds["spec"]
    pod = spec["template"]["spec"]
    fwd = forwarder_container(pod)
    assert pod.get("hostPID") is True, "hostPID"
    assert pod.get("hostNetwork") is True, "hostNetwork"
    assert pod.get("dnsPolicy") == "ClusterFirstWithHostNet", "cluster DNS with hostNetwork"
    for container in pod["containers"]:
        assert container["securityContext"].get("privileged") is True, container["name"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"].rstrip("/"): m for m in fwd["volumeMounts"]}

    def host_path(mount_path: str) -> str:
        assert mount_path in mounts, f"no mount at {mount_path}"
        return str(volumes[mounts[mount_path]["name"]]["hostPath"]["path"]).rstrip("/")

    assert host_path("/var/lib/networkservicemesh") == "/var/lib/networkservicemesh"
    assert mounts["/var/lib/networkservicemesh"].get("mountPropagation") == "Bidirectional"
    assert host_path("/run/spire/sockets") == "/run/spire/sockets"
    assert mounts["/run/spire/sockets"].get("readOnly") is True, "spire socket read-only"
    assert host_path("/var/run/netns") == "/var/run/netns"
    assert mounts["/var/run/netns"].get("mountPropagation") == "HostToContainer"
    # /proc: hostPID gives the container the node's processes; a hostPath /proc is not needed.
    assert "/proc" not in mounts

    env = env_of(fwd)
    missing = [name for name in UPSTREAM_ENV if name not in env]
    assert not missing, f"upstream env vars missing: {missing}"
    assert env["NSM_FORWARDER_SRC_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["SPIFFE_ENDPOINT_SOCKET"] == "unix:///run/spire/sockets/agent.sock"
    for name, value in env.items():
        assert isinstance(value, str | dict), f"{name}: env values are strings, not {value!r}"

    port = int(env["NSM_FORWARDER_HEALTH_PORT"])
    assert [p["containerPort"] for p in fwd["ports"]] == [port]
    probes = {k: fwd[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/liveness"
    assert probes["readinessProbe"]["path"] == "/readiness"
    assert probes["startupProbe"]["path"] == "/readiness"
    assert {int(p["port"]) for p in probes.values()} == {port}, "probes on the health port"

    for container in pod["containers"]:
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], container
        assert resources["limits"]["memory"], container
    assert pod["tolerations"] == [{"operator": "Exists"}], "tolerates every taint"
    assert pod["priorityClassName"] == "system-node-critical"
    assert spec["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }

    account = one(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False

    config = one(objects, "ConfigMap")
    assert (
        volumes[mounts["/etc/nsm-forwarder"]["name"]]["configMap"]["name"]
        == (config["metadata"]["name"])
    )
    assert env["NSM_FORWARDER_CONFIG"] == "/etc/nsm-forwarder/forwarder.toml"
    assert "workers" in config["data"]["forwarder.toml"], "the worker pool size is in the config"

    # upstream's selector and labels, so the DaemonSet can replace upstream's in place
    plane = "vpp" if any(c["name"] == "vpp" for c in pod["containers"]) else "kernel"
    assert ds["metadata"]["name"] == f"nsm-{plane}-forwarder"
    assert spec["selector"] == {"matchLabels": {"app": f"nsm-{plane}-plane"}}
    assert spec["template"]["metadata"]["labels"]["app"] == f"nsm-{plane}-plane"
    assert fwd["name"] == f"{plane}-forwarder"
    if plane == "vpp":
        default = spec["template"]["metadata"]["annotations"][
            "kubectl.kubernetes.io/default-container"
        ]
        assert default == fwd["name"], "kubectl exec ds/... reaches the forwarder, not VPP"
        assert "/run/vpp" in mounts and "emptyDir" in volumes[mounts["/run/vpp"]["name"]]
