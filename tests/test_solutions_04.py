"""Notebook 04's exercise solutions, run against a live embedded server with two versions."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from helpers import client, config
from helpers.solutions import ex04

pytest_plugins = ["served_mnist"]


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """A server whose base path holds versions 1 and 2 (it serves 2, the latest)."""
    from served_mnist import copy_model, trained_version

    from helpers.server.process import start_server

    source = trained_version(config.models_dir() / "client-tests")
    base_path = copy_model(source, tmp_path_factory.mktemp("ex04") / "mnist", (1, 2))
    handle = start_server(base_path, default_ports=False, timeout=120)
    channel = client.open_channel(handle.grpc_target)
    client.wait_until_available(channel, "mnist", version=2, timeout=60)
    yield handle, channel, str(base_path)
    channel.close()
    handle.stop()


def answered_by(channel, **spec) -> int:
    request = client.make_predict_request(
        np.zeros((1, 28, 28, 1), np.float32), "mnist", "image", **spec
    )
    stub = client._prediction_stub(channel)
    return stub.Predict(request, timeout=10).model_spec.version.value


def test_rest_states_agree_with_grpc(two_versions):
    handle, channel, _ = two_versions
    over_rest = ex04.rest_version_states(handle.rest_url, "mnist")
    over_grpc = {row.version: row.state for row in client.get_model_status(channel, "mnist")}
    assert over_rest == over_grpc
    assert over_rest[2] == "AVAILABLE"
    with pytest.raises(RuntimeError, match="HTTP 404"):
        ex04.rest_version_states(handle.rest_url, "nope")


def test_labelling_an_unloaded_version_in_one_step_is_refused(two_versions):
    _, channel, base = two_versions
    one_step = client.build_model_config("mnist", base, versions=[2], labels={"old": 1})
    with pytest.raises((client.ReloadError, grpc.RpcError)) as caught:
        client.reload_config(channel, one_step)
    message = (
        caught.value.details() if isinstance(caught.value, grpc.RpcError) else str(caught.value)
    )
    assert "which is not currently available for inference" in message


def test_serve_and_label_then_unload(two_versions):
    _, channel, base = two_versions
    ex04.serve_and_label(channel, "mnist", base, {"stable": 1, "canary": 2}, timeout=60)
    assert answered_by(channel, label="stable") == 1
    assert answered_by(channel, label="canary") == 2

    client.reload_config(channel, client.build_model_config("mnist", base, versions=[2]))
    ex04.wait_until_unloaded(channel, "mnist", 1, timeout=30)
    states = {row.version: row.state for row in client.get_model_status(channel, "mnist")}
    assert states.get(1, "END") == "END" and states[2] == "AVAILABLE"
    with pytest.raises(TimeoutError, match="version 2 of 'mnist' is still AVAILABLE"):
        ex04.wait_until_unloaded(channel, "mnist", 2, timeout=0.3)
