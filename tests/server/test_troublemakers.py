"""The troublemaker list, gRPC side: a clear error for every mistake and a server that keeps
serving, under load, while its model folders are broken, deleted or hidden; and processes that
never outlive a killed parent or leave a port behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
from serving_suite import (
    EXTERNAL,
    EXTERNAL_REASON,
    MNIST,
    TOY,
    copy_version,
    images,
    predict_request,
    rpc_error,
)

pytestmark = pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)


def _toy_request():
    return predict_request({"x": np.array([1.0], np.float32)}, name=TOY)


def _states(channel) -> dict[int, str]:
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
    )

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TOY
    response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    name = get_model_status_pb2.ModelVersionStatus.State.Name
    return {s.version: name(s.state) for s in response.model_version_status}


def _wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def _under_load(channel, threads: int = 3):
    """Predict on the toy model from several threads; yields the list of failures."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    failures: list[str] = []
    calls = [0]
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                stub.Predict(_toy_request(), timeout=20)
                calls[0] += 1
            except grpc.RpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.3)
        yield failures
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        print(f"{calls[0]} calls under load, {len(failures)} failed")
        assert calls[0] > 0


@pytest.fixture(scope="module")
def polled(model_store, tmp_path_factory):
    """A toy server polling its base path every second; versions 1 and 2 on disk."""
    from helpers.server.process import start_server

    base = tmp_path_factory.mktemp("troublemakers") / TOY
    base.mkdir()
    copy_version(model_store, TOY, 1, base, 1)
    copy_version(model_store, TOY, 1, base, 2)
    server = start_server(
        base,
        TOY,
        rest_port=0,
        default_ports=False,
        extra_flags=[
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
        ],
    )
    channel = grpc.insecure_channel(server.grpc_target)
    _wait_for(lambda: _states(channel).get(2) == "AVAILABLE", "version 2")
    yield server, base, channel
    channel.close()
    server.stop()


def test_corrupt_version_added_under_load_fails_no_call(polled):
    server, base, channel = polled
    staging = base / ".writing-3"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"\x08\x01garbage, not a SavedModel")
    with _under_load(channel) as failures:
        staging.rename(base / "3")
        _wait_for(lambda: _states(channel).get(3) == "END", "version 3 to fail")
    assert failures == []
    assert _states(channel)[2] == "AVAILABLE"
    shutil.rmtree(base / "3")
    _wait_for(lambda: 3 not in _states(channel) or _states(channel)[2] == "AVAILABLE", "cleanup")


def test_version_folder_deleted_while_serving_falls_back_without_failures(polled):
    server, base, channel = polled
    _wait_for(lambda: _states(channel).get(2) == "AVAILABLE", "version 2")
    with _under_load(channel) as failures:
        shutil.rmtree(base / "2")
        _wait_for(
            lambda: _states(channel).get(1) == "AVAILABLE" and _states(channel).get(2) == "END",
            "version 1 to replace the deleted version 2",
        )
    assert failures == []


def test_models_folder_gone_keeps_the_loaded_version_serving(polled):
    """An unreadable base path (here: moved away) is a poll error, not an unload."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    server, base, channel = polled
    hidden = base.with_name(base.name + "-hidden")
    base.rename(hidden)
    try:
        _wait_for(
            lambda: any("filesystem access error" in line for line in server.log_lines()),
            "the poll error in the log",
        )
        time.sleep(1.5)  # another poll or two
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert list(stub.Predict(_toy_request(), timeout=10).outputs["y"].float_val) == [3.0]
        assert _states(channel).get(1) == "AVAILABLE"
        warnings = [line for line in server.log_lines() if "filesystem access error" in line]
        assert len(warnings) == 1, "one warning per episode, not one per poll"
    finally:
        hidden.rename(base)


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("../" + MNIST, None, "Servable not found for request: Latest(../mnist)"),
        ("%2e%2e", None, "Servable not found for request: Latest(%2e%2e)"),
        (MNIST + "/../" + MNIST, None, "Latest(mnist/../mnist)"),
        (MNIST, 2**63 - 1, f"Specific(mnist, {2**63 - 1})"),
        (MNIST, -1, "Specific(mnist, -1)"),
        (MNIST, 0, "Specific(mnist, 0)"),
    ],
)
def test_path_tricks_and_absurd_versions_are_not_found(predict_stub, name, version, message):
    error = rpc_error(predict_stub.Predict, predict_request(name=name, version=version), timeout=30)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert message in error.details()
    assert predict_stub.Predict(predict_request({"image": images()}), timeout=30).outputs


def test_sigkill_under_load_releases_the_port(model_store):
    from helpers.server.process import start_server

    server = start_server(model_store / TOY, TOY, rest_port=0, default_ports=False)
    port = server.grpc_port
    with grpc.insecure_channel(server.grpc_target) as channel, _under_load(channel) as failures:
        time.sleep(0.5)
        os.kill(server.pid, signal.SIGKILL)
        _wait_for(lambda: not server.is_running(), "the process to die")
        time.sleep(0.5)
    server.stop()
    assert all(f.startswith(("UNAVAILABLE", "CANCELLED")) for f in failures), failures[:3]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens
    with socket.socket() as rebind:  # the port can be bound again at once
        rebind.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rebind.bind(("127.0.0.1", port))


def test_killed_kernel_leaves_no_orphan_server(model_store, tmp_path):
    """A notebook kernel (the parent) SIGKILLed while its server runs: the server goes too."""
    script = tmp_path / "kernel.py"
    script.write_text(
        "import time\n"
        "from helpers.server.process import start_server\n"
        f"s = start_server({str(model_store / TOY)!r}, {TOY!r}, rest_port=0,"
        " default_ports=False)\n"
        "print(s.pid, s.grpc_port, flush=True)\n"
        "time.sleep(600)\n"
    )
    kernel = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env=dict(os.environ, PYTHONPATH=os.getcwd()),
    )
    try:
        line = kernel.stdout.readline()
        server_pid, port = (int(v) for v in line.split())
        kernel.kill()
        kernel.wait(30)
        started = time.monotonic()
        _wait_for(lambda: not _alive(server_pid), "the server to follow its kernel", timeout=60)
        print(f"server gone {time.monotonic() - started:.2f} s after its kernel was killed")
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait(30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
