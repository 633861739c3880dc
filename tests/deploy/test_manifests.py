"""The Kubernetes manifests and the Helm chart, checked offline: schema-valid (kubernetes-validate's
bundled schemas, strict), every DaemonSet property of issue 15, and a config the forwarder
accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from nsm_forwarder.config.loader import load_settings
from nsm_forwarder.config.settings import Settings
from tests.deploy.manifests import (
    CHART,
    DOCKER,
    KUBERNETES,
    KUBERNETES_VERSIONS,
    ROOT,
    UPSTREAM_ENV,
    check_daemonset,
    documents,
    env_of,
    forwarder_container,
    helm_template,
    kustomize,
    one,
)

#: an operator's values file for upstream's nsm chart, as it would be reused here
UPSTREAM_VALUES = {
    "registry": "docker.io",
    "org": "example",
    "tag": "master",
    "pullPolicy": "Always",
    "forwardingPlane": "kernel",
    "insecure": True,
    "metricsCollectorEnabled": True,
    "global": {"JaegerTracing": True},
    "kernel": {"image": "nsm-forwarder", "resources": {"limitCPU": 2, "requestsCPU": "1m"}},
}

SOURCES = {
    "kustomize": lambda: kustomize(KUBERNETES),
    "kustomize-vpp": lambda: kustomize(KUBERNETES / "vpp"),
    "helm": lambda: helm_template({}),
    "helm-vpp": lambda: helm_template({"forwardingPlane": "vpp"}),
    "helm-upstream-values": lambda: helm_template(UPSTREAM_VALUES),
}


@pytest.fixture(params=sorted(SOURCES))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    built = SOURCES[request.param]()
    if built is None:
        pytest.skip("kubectl (which has kustomize built in) is not installed")
    return built


def validate(objects: list[dict[str, Any]]) -> None:
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{obj['kind']}/{obj['metadata']['name']}"
                pytest.fail(f"{name} against Kubernetes {version}: {exc.message} at {exc.path}")


def test_manifests_validate_against_the_kubernetes_schemas(objects: list[dict[str, Any]]) -> None:
    validate(objects)
    assert {o["kind"] for o in objects} == {"DaemonSet", "ServiceAccount", "ConfigMap"}
    assert {o["metadata"]["namespace"] for o in objects} == {"nsm-system"}


def test_manifests_base_files_validate_without_kustomize() -> None:
    """The base's files are plain manifests, so they are checked even where kubectl is not."""
    base = KUBERNETES / "base"
    objects = [
        doc
        for f in ("daemonset.yaml", "serviceaccount.yaml")
        for doc in documents((base / f).read_text())
    ]
    for obj in objects:
        obj.setdefault("metadata", {})["namespace"] = "nsm-system"
    validate(objects)
    objects.append(
        {
            "kind": "ConfigMap",
            "metadata": {"name": "nsm-forwarder-config"},
            "data": {"forwarder.toml": (base / "forwarder.toml").read_text()},
        }
    )
    check_daemonset(objects)


def test_manifests_daemonset_has_every_property_of_issue_15(objects: list[dict[str, Any]]) -> None:
    check_daemonset(objects)


def test_manifests_config_is_accepted_by_the_forwarder(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The DaemonSet's env plus its ConfigMap, loaded as the forwarder loads them."""
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    env = {k: v for k, v in env_of(forwarder_container(pod)).items() if isinstance(v, str)}
    env["NSM_FORWARDER_SRC_IP"] = "192.0.2.10"  # status.podIP
    config = tmp_path / "forwarder.toml"
    config.write_text(one(objects, "ConfigMap")["data"]["forwarder.toml"])
    settings = load_settings(env=env, config_file=config)
    plane = "vpp" if len(pod["containers"]) == 2 else "kernel"
    assert settings.driver == plane
    assert settings.workers == tomllib.loads(config.read_text())["workers"]
    assert settings.health_port == 5555
    if plane == "vpp":
        assert str(settings.vpp_api_socket).startswith("/run/vpp/")


def test_manifests_upstream_env_names_are_the_forwarders() -> None:
    aliases = {f.validation_alias for f in Settings.model_fields.values()}
    assert [n for n in UPSTREAM_ENV if n not in aliases and not n.startswith("JAEGER_")] == []


def test_helm_values_keep_upstreams_names_and_meaning() -> None:
    values = CHART.values
    for key in ("registry", "org", "tag", "pullPolicy", "forwardingPlane", "insecure"):
        assert key in values, key
    assert values["metricsCollectorEnabled"] is False and values["global"]["JaegerTracing"] is False
    assert set(values["kernel"]["resources"]) >= {"limitCPU", "requestsCPU"}
    fwd = forwarder_container(
        one(helm_template(UPSTREAM_VALUES), "DaemonSet")["spec"]["template"]["spec"]
    )
    env = env_of(fwd)
    assert fwd["image"] == "docker.io/example/nsm-forwarder:master"
    assert fwd["imagePullPolicy"] == "Always"
    assert (env["INSECURE"], env["TRACER_ENABLED"], env["METRICS_COLLECTOR_ENABLED"]) == (
        "true",
        "true",
        "true",
    )
    assert fwd["resources"]["limits"]["cpu"] == 2 and fwd["resources"]["requests"]["cpu"] == "1m"
    default = forwarder_container(one(helm_template({}), "DaemonSet")["spec"]["template"]["spec"])
    assert default["image"] == f"nsm-forwarder:{CHART.meta['appVersion']}"
    assert env_of(default)["INSECURE"] == "false"


def test_helm_config_change_rolls_the_daemonset() -> None:
    def checksum(values: dict[str, Any]) -> str:
        ds = one(helm_template(values), "DaemonSet")
        return str(ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({"workers": 4}) != checksum({})
    config = one(helm_template({"workers": 4, "extraConfig": "mtu = 9000"}), "ConfigMap")
    assert tomllib.loads(config["data"]["forwarder.toml"])["workers"] == 4


def test_helm_refuses_an_unknown_forwarding_plane() -> None:
    from tests.deploy.helmrender import TemplateError

    with pytest.raises(TemplateError, match="forwardingPlane must be kernel or vpp"):
        helm_template({"forwardingPlane": "ovs"})


def test_manifests_versions_agree() -> None:
    """pyproject's version is the image's VERSION, the chart's appVersion, kustomize's tag."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(rf"^ARG VERSION={re.escape(version)}$", dockerfile, re.M)
    assert CHART.meta["appVersion"] == version
    for path in (KUBERNETES / "base", KUBERNETES / "vpp"):
        kustomization = documents((path / "kustomization.yaml").read_text())[0]
        assert [i["newTag"] for i in kustomization["images"]] == [version]


def test_helm_template_with_a_real_helm_binary(tmp_path: Path) -> None:
    """Where a helm binary exists, its output must pass the same checks as the renderer's."""
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("no helm binary here; tests/deploy/helmrender.py rendered the chart instead")
    for plane in ("kernel", "vpp"):
        done = subprocess.run(
            [
                helm,
                "template",
                "nsm-forwarder",
                str(CHART.path),
                "--namespace",
                "nsm-system",
                "--set",
                f"forwardingPlane={plane}",
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        objects = documents(done.stdout)
        validate(objects)
        check_daemonset(objects)


@pytest.mark.parametrize(
    "breaks",
    [
        lambda pod, fwd: pod.pop("hostPID"),
        lambda pod, fwd: pod.update(tolerations=[{"key": "x", "operator": "Exists"}]),
        lambda pod, fwd: fwd["env"].pop(),
        lambda pod, fwd: fwd["volumeMounts"][0].pop("mountPropagation"),
        lambda pod, fwd: fwd.pop("startupProbe"),
        lambda pod, fwd: pod.pop("priorityClassName"),
    ],
    ids=["hostPID", "tolerations", "env", "propagation", "startupProbe", "priority"],
)
def test_manifests_check_fails_on_a_missing_property(breaks: Any) -> None:
    objects = helm_template({})
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    breaks(pod, forwarder_container(pod))
    with pytest.raises((AssertionError, KeyError)):
        check_daemonset(objects)


def test_readme_deploy_section_names_what_exists() -> None:
    """The README's "Deploy on Kubernetes" names existing files, the real DaemonSet and values."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deploy on Kubernetes", 1)[1].split("\n## ", 1)[0]
    paths = set(re.findall(r"(?<![\w/])((?:docker|tests)/[\w./-]+)", section))
    assert paths and [p for p in paths if not (ROOT / p.rstrip(".")).exists()] == []
    names = {
        f"ds/{one(kustomize(KUBERNETES) or helm_template({}), 'DaemonSet')['metadata']['name']}"
    }
    assert set(re.findall(r"ds/[\w-]+", section)) == names
    values = CHART.values
    for key in re.findall(r"--set (\w+)=", section) + ["workers", "insecure"]:
        assert key in values, key
