"""Versions over time: new versions picked up live, hot reload under load, failed and
half-written versions, config reload over RPC, health following availability.

One server watches a base path this module writes to; the tests run in file order and each
one leaves the folder in the state the next expects.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest
from serving_suite import (
    EXTERNAL,
    EXTERNAL_REASON,
    MNIST,
    TOY,
    copy_version,
    predict_request,
    rpc_error,
)

pytestmark = pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)


@pytest.fixture(scope="module")
def live(model_store, tmp_path_factory):
    """A server polling every second a base path that starts with version 1 only."""
    from helpers.server.process import start_server

    base = tmp_path_factory.mktemp("live") / MNIST
    base.mkdir()
    copy_version(model_store, MNIST, 1, base, 1)
    server = start_server(
        base,
        rest_port=0,
        default_ports=False,
        extra_flags=[
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=1",
            "--load_retry_interval_micros=100000",
            "--enable_grpc_healthcheck_service",
        ],
    )
    channel = grpc.insecure_channel(server.grpc_target)
    yield server, base, channel
    channel.close()
    server.stop()


def _stubs(channel):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    return (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )


def _states(channel, name=MNIST) -> dict[int, tuple[str, str]]:
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = _stubs(channel)[1].GetModelStatus(request, timeout=10)
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    return {
        s.version: (names(s.state), s.status.error_message) for s in response.model_version_status
    }


def _wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _served_version(channel) -> int:
    return _stubs(channel)[0].Predict(predict_request(), timeout=10).model_spec.version.value


def test_new_version_is_picked_up_live(live, model_store):
    server, base, channel = live
    assert _served_version(channel) == 1
    copy_version(model_store, MNIST, 2, base, 2)
    _wait_for(lambda: _states(channel).get(2, ("",))[0] == "AVAILABLE", what="version 2")
    assert _served_version(channel) == 2
    # The latest policy keeps one version: version 1 is unloaded once 2 serves.
    _wait_for(lambda: _states(channel)[1][0] == "END", what="version 1 unloaded")
    assert server.wait_for_log("Successfully loaded servable version {name: mnist version: 2}")


def test_hot_reload_under_load_has_zero_failed_calls(live, model_store):
    _server, base, channel = live
    predict = _stubs(channel)[0].Predict
    errors: list[str] = []
    versions: set[int] = set()
    stop = threading.Event()

    def hammer():
        request = predict_request()
        while not stop.is_set():
            try:
                versions.add(predict(request, timeout=10).model_spec.version.value)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        copy_version(model_store, MNIST, 1, base, 3)
        _wait_for(lambda: _states(channel)[2][0] == "END", what="version 2 replaced by 3")
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert versions == {2, 3}


def test_corrupt_version_keeps_the_previous_one_serving(live):
    server, base, channel = live
    broken = base / ".writing-4"
    (broken / "variables").mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    broken.rename(base / "4")
    state = _wait_for(
        lambda: _states(channel).get(4, ("",))[0] == "END" and _states(channel)[4],
        what="version 4 to fail",
    )
    assert state[1] != ""  # the load error is reported in GetModelStatus

    # --max_num_load_retries=1: one first attempt, one retry, then the version gives up.
    def failures() -> list[str]:
        failed = "Loading servable: {name: mnist version: 4} failed"
        return [line for line in server.log_lines() if failed in line]

    _wait_for(lambda: len(failures()) >= 2, what="both failed attempts in the log")
    assert len(failures()) == 2
    assert _states(channel)[3][0] == "AVAILABLE"
    assert _served_version(channel) == 3


def test_failed_version_status_carries_error_code(live):
    from tensorflow_serving.apis import get_model_status_pb2

    _server, _base, channel = live
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MNIST
    request.model_spec.version.value = 4
    status = _stubs(channel)[1].GetModelStatus(request, timeout=10).model_version_status[0]
    assert status.state == get_model_status_pb2.ModelVersionStatus.END
    assert status.status.error_code != 0


def test_half_written_folder_is_never_served(live, model_store):
    _server, base, channel = live
    partial = base / "5"
    shutil.copytree(model_store / MNIST / "1" / "variables", partial / "variables")
    time.sleep(2.5)  # more than two polls
    assert 5 not in _states(channel)
    assert _served_version(channel) == 3
    # The missing file arrives: now it is complete and gets loaded.
    shutil.copy(model_store / MNIST / "1" / "saved_model.pb", partial / "saved_model.pb")
    _wait_for(lambda: _states(channel).get(5, ("",))[0] == "AVAILABLE", what="version 5")
    assert _served_version(channel) == 5


def test_folder_still_being_written_is_not_loaded(live, model_store):
    _server, base, channel = live
    target = base / "6"
    shutil.copytree(model_store / MNIST / "1", target)
    growing = target / "assets.extra" / "still-copying.bin"
    growing.parent.mkdir()
    stop = threading.Event()

    def keep_writing() -> None:
        with growing.open("ab") as handle:
            while not stop.is_set():
                handle.write(b"x" * 64)
                handle.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        time.sleep(2.5)  # more than two polls while the folder keeps changing
        assert 6 not in _states(channel)
        assert _served_version(channel) == 5
    finally:
        stop.set()
        writer.join()
    _wait_for(lambda: _states(channel).get(6, ("",))[0] == "AVAILABLE", what="version 6")
    assert _served_version(channel) == 6


def _reload(channel, text: str):
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    return _stubs(channel)[1].HandleReloadConfigRequest(request, timeout=60)


def _config(*entries: str) -> str:
    return "model_config_list { " + " ".join(f"config {{ {e} }}" for e in entries) + " }"


def test_reload_config_adds_a_model(live, model_store):
    _server, base, channel = live
    response = _reload(
        channel,
        _config(
            f"name: '{MNIST}' base_path: '{base}' model_platform: 'tensorflow'",
            f"name: '{TOY}' base_path: '{model_store / TOY}' model_platform: 'tensorflow'",
        ),
    )
    assert response.status.error_code == 0
    assert _states(channel, TOY) == {1: ("AVAILABLE", "")}


def test_reload_config_label_must_name_an_available_version(live):
    _server, base, channel = live
    error = rpc_error(
        _reload,
        channel,
        _config(
            f"name: '{MNIST}' base_path: '{base}' model_platform: 'tensorflow' "
            "version_labels { key: 'stable' value: 9 }"
        ),
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "Request to assign label to version 9 of model mnist, which is not currently available "
        "for inference"
    )


def test_reload_config_labels_available_versions(live):
    _server, base, channel = live
    _reload(
        channel,
        _config(
            f"name: '{MNIST}' base_path: '{base}' model_platform: 'tensorflow' "
            "model_version_policy { specific { versions: 3 versions: 6 } } "
            "version_labels { key: 'stable' value: 6 }"
        ),
    )
    _wait_for(lambda: _states(channel)[3][0] == "AVAILABLE", what="version 3 back")
    predict = _stubs(channel)[0].Predict
    assert predict(predict_request(label="stable"), timeout=10).model_spec.version.value == 6
    assert predict(predict_request(version=3), timeout=10).model_spec.version.value == 3


def test_reload_config_refuses_relative_base_path(live):
    _server, _base, channel = live
    error = rpc_error(
        _reload,
        channel,
        _config("name: 'other' base_path: 'models/other' model_platform: 'tensorflow'"),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "Expected model other to have an absolute path or URI; got base_path()=models/other"
    )


def test_models_left_out_of_a_reload_are_unloaded(live, model_store):
    _server, _base, channel = live
    _reload(
        channel,
        _config(f"name: '{TOY}' base_path: '{model_store / TOY}' model_platform: 'tensorflow'"),
    )
    assert all(state == "END" for state, _ in _states(channel).values())
    error = rpc_error(_stubs(channel)[0].Predict, predict_request(), timeout=10)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(mnist)"


def test_health_follows_availability(live, model_store):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _server, _base, channel = live
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest(service="PredictionService")
    assert health.Check(check, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    _reload(channel, "model_config_list { }")
    assert health.Check(check, timeout=10).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_no_versions_log_line(live, tmp_path: Path):
    server, _base, channel = live
    empty = tmp_path / "empty"
    (empty / "not-a-number").mkdir(parents=True)
    with pytest.raises(grpc.RpcError):
        _reload(
            channel, _config(f"name: 'empty' base_path: '{empty}' model_platform: 'tensorflow'")
        )
    expected = (
        f"No versions of servable empty found under base path {empty}. Did you forget to "
        "name your leaf directory as a number (eg. '/1/')?"
    )
    assert server.wait_for_log(expected)
