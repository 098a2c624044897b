"""docker-compose.yml and docker/ checked without a Docker daemon.

What can be checked here is checked for real: the YAML, the image tag against the tensorflow
pin, ports and mounts, the monitoring config as TF Serving's MonitoringConfig, the flags through
the embedded server's own parser, and the healthcheck command under bash against a live
embedded server. `docker compose config` runs when the compose plugin is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import config
from helpers.kernel import KERNEL_NAME

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SERVERS = ("tf-serving", "embedded-server")
JUPYTERS = {"jupyter": "tf-serving", "jupyter-embedded": "embedded-server"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def pinned(package: str) -> str:
    match = re.search(
        rf"^{re.escape(package)}==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE
    )
    assert match, f"{package} is not pinned in requirements.txt"
    return match[1]


def entrypoint_flags(service: dict) -> list[str]:
    """What the tensorflow/serving image's entrypoint passes before the compose `command:`."""
    name = service["environment"]["MODEL_NAME"]
    return [
        "--port=8500",
        "--rest_api_port=8501",
        f"--model_name={name}",
        f"--model_base_path=/models/{name}",
    ]


def test_services(services):
    assert set(services) == {
        "model-init",
        "tf-serving",
        "jupyter",
        "embedded-server",
        "jupyter-embedded",
    }
    assert services["embedded-server"]["profiles"] == ["embedded"]
    assert services["jupyter-embedded"]["profiles"] == ["embedded"]
    assert "profiles" not in services["tf-serving"] and "profiles" not in services["jupyter"]


def test_image_tag_matches_the_tensorflow_pin(services):
    version = pinned("tensorflow")
    assert services["tf-serving"]["image"] == f"tensorflow/serving:{version}"
    assert pinned("tensorflow-serving-api") == version


def test_ports_are_localhost_only_and_labelled(services):
    for name, service in services.items():
        for port in service.get("ports", []):
            host, published, inside = port.split(":")
            assert host == "127.0.0.1" and published == inside, (name, port)
    for name in SERVERS:
        assert [p.split(":")[1] for p in services[name]["ports"]] == ["8500", "8501"]
    for name in JUPYTERS:
        assert services[name]["ports"] == ["127.0.0.1:8888:8888"]
    lines = [line for line in COMPOSE_FILE.read_text().splitlines() if '"127.0.0.1:' in line]
    assert lines and all("#" in line.split('"127.0.0.1:')[1] for line in lines)


def test_bind_mounts_are_relative_and_exist(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./"), (name, volume)
            path = (ROOT / source).resolve()
            if path == config.course_root() / "models":
                continue  # written by model-init and the notebooks (helpers.export)
            assert path.exists(), (name, volume)
    models = [v for v in services["tf-serving"]["volumes"] if v.split(":")[1] == "/models"]
    assert models == ["./models:/models:ro"]


def test_monitoring_config_is_a_tf_serving_monitoring_config(services):
    from helpers.server.config_files import read_monitoring_config

    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["tf-serving"]["volumes"]}
    flag = next(f for f in services["tf-serving"]["command"] if "monitoring_config_file" in f)
    source = ROOT / mounts[flag.split("=", 1)[1]]
    monitoring = read_monitoring_config(source)
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_the_embedded_server_accepts_the_compose_flags(services):
    from helpers.server.flags import check_flags, parse_flags

    tf_serving = services["tf-serving"]
    argv = entrypoint_flags(tf_serving) + tf_serving["command"]
    flags = parse_flags(argv)
    check_flags(flags)
    assert flags.enable_grpc_healthcheck_service and flags.file_system_poll_wait_seconds == 1
    embedded = services["embedded-server"]["command"]
    assert embedded == ["python", "-m", "helpers.server", *argv, "--host=0.0.0.0"]
    check_flags(parse_flags(embedded[3:]))
    assert services["embedded-server"]["volumes"][1:] == tf_serving["volumes"]


def test_jupyter_reaches_the_server_by_service_name(services):
    for jupyter, server in JUPYTERS.items():
        service = services[jupyter]
        address = config.server_address(service["environment"]["MODEL_SERVER"])
        assert (address.host, address.grpc_port, address.rest_port) == (server, 8500, 8501)
        assert not address.embedded
        assert service["depends_on"] == {server: {"condition": "service_healthy"}}
        assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
        assert "./:/course" in service["volumes"]
    for server in SERVERS:
        assert services[server]["depends_on"] == {
            "model-init": {"condition": "service_completed_successfully"}
        }
    assert services["tf-serving"]["stop_grace_period"] == "3s"


def test_dockerfile_installs_the_same_requirements():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert "COPY requirements.txt" in text and "pip install -r requirements.txt" in text
    assert "pip install --no-deps -e ." in text
    assert '"--ip=0.0.0.0", "--port=8888"' in text
    # The kernel the notebooks ask for, made by the same module as `make install`.
    assert "python -m helpers.kernel" in text
    for notebook in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        assert json_kernel_name(notebook) == KERNEL_NAME, notebook.name


def test_build_context_leaves_out_the_virtualenv_and_models():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".venv", "models", ".git"} <= set(ignored)
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists() and source not in ignored, source


def json_kernel_name(path: Path) -> str:
    import json

    return json.loads(path.read_text())["metadata"]["kernelspec"]["name"]


# --------------------------------------------------------------------------- healthcheck
def healthcheck_command(services, port: int) -> list[str]:
    """The compose healthcheck as a command line, aimed at `port` instead of 8501."""
    test = services["tf-serving"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:3] == ["bash", "-c"]
    assert services["embedded-server"]["healthcheck"] == services["tf-serving"]["healthcheck"]
    assert "/dev/tcp/127.0.0.1/8501" in test[3]
    for tool in ("curl", "wget", "python"):
        assert tool not in test[3]
    return ["bash", "-c", test[3].replace("/8501", f"/{port}")]


def build_stand_in_model(path: Path) -> Path:
    """A tiny SavedModel served as `mnist` (the healthcheck only asks for its status)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        y = tf.identity(x, name="y")
        signature = v1.saved_model.signature_def_utils.predict_signature_def({"x": x}, {"y": y})
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    return path


def test_healthcheck_passes_on_a_live_server_and_fails_on_a_dead_port(services, tmp_path):
    from helpers.server.process import start_server

    build_stand_in_model(tmp_path / "mnist" / "1")
    with start_server(tmp_path / "mnist", "mnist", default_ports=False, timeout=120) as server:
        live = subprocess.run(
            healthcheck_command(services, server.rest_port),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert live.returncode == 0, live.stderr
        # The gRPC port speaks HTTP/2 only: no model status there, so the check must fail.
        wrong = subprocess.run(
            healthcheck_command(services, server.grpc_port),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert wrong.returncode != 0
    dead = subprocess.run(
        healthcheck_command(services, server.rest_port), capture_output=True, text=True, timeout=30
    )
    assert dead.returncode != 0


# --------------------------------------------------------------------------- docker compose
def compose_command() -> list[str] | None:
    """`docker compose` (the plugin), else the standalone `docker-compose`; None when neither.

    Both validate and print the file with `config` without a Docker daemon.
    """
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_docker_compose_config_accepts_the_file():
    command = compose_command()
    if command is None:
        reason = (
            "neither the docker compose plugin nor docker-compose is installed "
            "(Debian/Ubuntu: `sudo apt-get install docker-compose`)"
        )
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI must check the compose file, but {reason}")  # .ci/run installs it
        pytest.skip(reason)
    env = {**os.environ, "COMPOSE_PROFILES": "embedded"}
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert set(resolved) == {
        "model-init",
        "tf-serving",
        "jupyter",
        "embedded-server",
        "jupyter-embedded",
    }
    assert re.fullmatch(r"\d+:\d+", resolved["jupyter"]["user"])  # ${COURSE_UID:-1000}:...
