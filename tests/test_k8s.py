"""k8s/ checked without a cluster.

Every manifest is validated (strictly: unknown fields are errors) against Kubernetes' published
OpenAPI schemas for several releases, offline, with kubernetes-validate. The rest is checked
against the course itself: the image tag against the tensorflow pin and docker-compose.yml, the
ports, the flags through the embedded server's own parser, the readiness command against the
compose healthcheck (which tests/test_compose.py runs against a live server), the health service
name, the monitoring config, and how the objects point at each other.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
#: The oldest release checked has the native grpc probe (GA in 1.27) and autoscaling/v2.
KUBERNETES_VERSIONS = ("1.27.0", "1.30.0", "1.33.0", kubernetes_validate.latest_version())


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


@pytest.fixture(scope="module")
def deployment() -> dict:
    return load("deployment.yaml")


@pytest.fixture(scope="module")
def serving(deployment) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def pinned(package: str) -> str:
    text = (ROOT / "requirements.txt").read_text()
    match = re.search(rf"^{re.escape(package)}==(\S+)", text, re.MULTILINE)
    assert match, f"{package} is not pinned in requirements.txt"
    return match[1]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_matches_the_published_schema(name, version):
    kubernetes_validate.validate(load(name), version, strict=True)


def test_the_validator_rejects_a_broken_manifest(deployment):
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest():
    kustomization = load("kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == MANIFESTS


def test_image_and_ports_match_the_pins_and_compose(serving, compose):
    version = pinned("tensorflow")
    assert serving["image"] == f"tensorflow/serving:{version}" == compose["tf-serving"]["image"]
    assert pinned("tensorflow-serving-api") == version
    ports = {p["name"]: p["containerPort"] for p in serving["ports"]}
    published = [int(p.split(":")[-1]) for p in compose["tf-serving"]["ports"]]
    assert [ports["grpc"], ports["http"]] == published == [8500, 8501]
    env = {e["name"]: e["value"] for e in serving["env"]}
    assert env == {"MODEL_NAME": compose["tf-serving"]["environment"]["MODEL_NAME"]}


def test_the_embedded_server_accepts_the_arguments(serving):
    from helpers.server.flags import channel_arguments, check_flags, parse_flags

    name = serving["env"][0]["value"]
    entrypoint = ["--port=8500", "--rest_api_port=8501", f"--model_name={name}"]
    flags = parse_flags([*entrypoint, f"--model_base_path=/models/{name}", *serving["args"]])
    check_flags(flags)
    assert flags.enable_grpc_healthcheck_service
    assert dict(channel_arguments(flags.grpc_channel_arguments)) == {
        "grpc.max_connection_age_ms": 300000
    }
    mounts = {m["name"]: m for m in serving["volumeMounts"]}
    config_dir = mounts["monitoring"]["mountPath"]
    assert flags.monitoring_config_file == f"{config_dir}/monitoring.config"


def test_monitoring_config_is_the_compose_one(deployment):
    from google.protobuf import text_format

    from helpers.server.config_files import config_protos, read_monitoring_config

    configmap = load("monitoring-config.yaml")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["monitoring"]["configMap"]["name"] == configmap["metadata"]["name"]
    in_k8s = text_format.Parse(
        configmap["data"]["monitoring.config"], config_protos().MonitoringConfig()
    )
    assert in_k8s == read_monitoring_config(ROOT / "docker" / "monitoring.config")
    assert in_k8s.prometheus_config.enable


def test_model_is_copied_in_and_mounted_read_only(deployment, serving):
    spec = deployment["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    models = next(v for v in spec["volumes"] if v["name"] == "models")
    assert "emptyDir" in models
    shared = next(m for m in init["volumeMounts"] if m["name"] == "models")["mountPath"]
    assert init["command"] == ["cp", "-R", "/models/mnist", f"{shared}/"]
    mount = next(m for m in serving["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert all(m.get("readOnly") for m in serving["volumeMounts"])
    dockerfile = (K8S / "model-image" / "Dockerfile").read_text()
    assert "COPY mnist /models/mnist" in dockerfile
    assert f"docker build -t {init['image']} -f k8s/model-image/Dockerfile models" in dockerfile
    assert init["image"] in (K8S / "README.md").read_text()
    for container in (init, serving):
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_readiness_reads_the_model_state_like_the_compose_healthcheck(serving, compose):
    command = serving["readinessProbe"]["exec"]["command"]
    healthcheck = compose["tf-serving"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD" and command == healthcheck[1:]
    assert "/v1/models/mnist" in command[2] and '"AVAILABLE"' in command[2]
    for tool in ("curl", "wget", "python"):  # the tensorflow/serving image has none of them
        assert tool not in command[2]


def test_liveness_and_startup_ask_the_grpc_health_service(serving):
    from helpers.server.health import SERVICE_NAMES

    grpc_port = next(p["containerPort"] for p in serving["ports"] if p["name"] == "grpc")
    for probe in ("livenessProbe", "startupProbe"):
        check = serving[probe]["grpc"]
        assert check["port"] == grpc_port
        assert check.get("service", "") in SERVICE_NAMES
    assert "--enable_grpc_healthcheck_service" in serving["args"]
    startup = serving["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # room for a slow load


def test_termination_outlasts_the_pre_stop_pause(deployment, serving):
    command = serving["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(command[1]) < grace <= int(command[1]) + 10


def test_services_select_the_pods_and_name_their_ports(deployment, serving):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    port_names = {p["name"] for p in serving["ports"]}
    grpc_service, rest_service = load("service-grpc.yaml"), load("service-rest.yaml")
    assert grpc_service["spec"]["clusterIP"] == "None"  # headless: DNS lists every ready pod
    assert rest_service["spec"]["type"] == "ClusterIP"
    for service in (grpc_service, rest_service):
        assert service["spec"]["selector"] == labels
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    assert [p["port"] for p in grpc_service["spec"]["ports"]] == [8500]
    assert [p["port"] for p in rest_service["spec"]["ports"]] == [8501]


def test_autoscaler_scales_the_deployment_on_cpu(deployment, serving):
    hpa = load("hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in serving["resources"]["requests"]  # utilisation is a share of the request


def test_a_deployment_the_autoscaler_owns_sets_no_replicas(deployment):
    # With `replicas` in the file, every `kubectl apply` resets the count the HPA chose.
    owned = {
        (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        for hpa in (load(name) for name in MANIFESTS)
        if hpa["kind"] == "HorizontalPodAutoscaler"
    }
    assert ("Deployment", deployment["metadata"]["name"]) in owned
    assert "replicas" not in deployment["spec"]


def cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "1.5", "500m") in CPUs."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_tensorflow_threads_match_the_cpu_limit(serving):
    from helpers.server.flags import parse_flags

    flags = parse_flags(["--model_name=mnist", "--model_base_path=/models/mnist", *serving["args"]])
    limit = cpus(serving["resources"]["limits"]["cpu"])
    assert limit == int(limit), "a whole number of CPUs, so the thread counts can match it"
    # Without the flags TensorFlow sizes its pools from the node's CPUs, not from the limit.
    assert flags.tensorflow_intra_op_parallelism == int(limit)
    assert 1 <= flags.tensorflow_inter_op_parallelism <= int(limit)
    assert flags.tensorflow_session_parallelism == 0  # TF Serving refuses all three at once


def test_disruption_budget_selects_the_deployments_pods(deployment):
    pdb = load("pdb.yaml")
    assert (pdb["apiVersion"], pdb["kind"]) == ("policy/v1", "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    # A drain evicts one pod at a time, so at the HPA's minimum the others keep serving.
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert load("hpa.yaml")["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]
