"""Shared fixtures of the server conformance suite (helpers live in serving_suite.py).

Servers are started once per configuration (session scope) and share tiny models: the course's
MNIST model (exported with helpers.export) and a small TF1 "toy" SavedModel whose signatures
cover Predict, Classify, Regress and a deliberately slow call.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from serving_suite import (
    EXTERNAL,
    MNIST,
    MONITORING_CONFIG,
    TOY,
    build_toy_model,
    model_config_text,
    write,
)

from helpers import config


@pytest.fixture(scope="session")
def model_store() -> Iterator[Path]:
    """A folder with mnist/1, mnist/2 (two differently seeded models) and toy/1."""
    from helpers.export import export_model
    from helpers.model import build_model

    root = Path(tempfile.mkdtemp(prefix="server-suite-"))
    export_model(build_model(seed=0), MNIST, 1, base_dir=root)
    export_model(build_model(seed=1), MNIST, 2, base_dir=root)
    build_toy_model(root / TOY / "1")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def server(model_store: Path, tmp_path_factory) -> Iterator[object]:
    """The suite's main server (or the external one MODEL_SERVER names)."""
    from helpers.server.process import ExternalServer, start_server

    if EXTERNAL:
        handle = ExternalServer(config.server_address(), MNIST)
        handle.wait_until_available(MNIST, timeout=60)
        yield handle
        return
    folder = tmp_path_factory.mktemp("main-server")
    model_config = write(folder / "models.config", model_config_text(model_store))
    monitoring = write(folder / "monitoring.config", MONITORING_CONFIG)
    flags = [
        f"--model_config_file={model_config}",
        f"--monitoring_config_file={monitoring}",
        "--allow_version_labels_for_unavailable_models",
        "--enable_grpc_healthcheck_service",
    ]
    handle = start_server(extra_flags=flags, default_ports=False, timeout=120)
    handle.wait_until_available(TOY, timeout=60)
    handle.wait_until_available(MNIST, version=1, timeout=60)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="session")
def predict_stub(channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="session")
def model_stub(channel):
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceStub(channel)
