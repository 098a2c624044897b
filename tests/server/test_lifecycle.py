"""Start-up order and prompt stops: ports open after loading; SIGTERM, SIGINT and a dead parent
stop the server in every state (loading, retrying a failed load, serving a long call)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from serving_suite import EXTERNAL, EXTERNAL_REASON, MNIST, TOY, predict_request, rpc_error

pytestmark = pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)

#: A retry interval no test waits for: a server still retrying after a stop would hang here.
LONG_RETRY = ["--max_num_load_retries=1000", "--load_retry_interval_micros=600000000"]


def _broken_model(root: Path) -> Path:
    """A base path whose only version has a corrupt saved_model.pb (its load always fails)."""
    version = root / "broken" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return version.parent


def _wait_for_line(server, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in server.log_lines()):
            return
        assert server.is_running(), "\n".join(server.log_lines()[-15:])
        time.sleep(0.1)
    raise AssertionError(f"no log line with {text!r}:\n" + "\n".join(server.log_lines()[-15:]))


def _wait_exit(server, timeout: float = 60) -> tuple[int | None, float]:
    """Wait for the process to end by itself; returns (exit code, seconds it took)."""
    started = time.monotonic()
    while server.is_running() and time.monotonic() - started < timeout:
        time.sleep(0.05)
    return server.returncode, time.monotonic() - started


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ports_stay_closed_while_loading_and_a_signal_stops_the_retries(tmp_path, signum):
    """Item 3 (start-up order) and item 4 (stop while a failed load is being retried)."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from helpers.server.process import start_server

    base = _broken_model(tmp_path)
    server = start_server(
        base, "broken", rest_port=0, default_ports=False, wait=False, extra_flags=LONG_RETRY
    )
    try:
        _wait_for_line(server, "Loading servable: {name: broken version: 1} failed")
        # TF Serving opens its ports after the initial load: the client is refused, not NOT_FOUND.
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "broken"
            error = rpc_error(stub.GetModelStatus, request, timeout=5)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        os.kill(server.pid, signum)
        code, seconds = _wait_exit(server)
        print(f"stopped while retrying a failed load in {seconds:.2f} s")
        assert code == 0, "\n".join(server.log_lines()[-15:])
        assert server.wait_for_log("Stop requested before the models finished loading")
    finally:
        server.stop()


def test_parent_death_while_loading_stops_the_server(tmp_path):
    """A parent killed while the model is still loading takes the server (and its port) along."""
    from helpers.server.process import free_port, port_is_free

    base = _broken_model(tmp_path)
    port = free_port()
    log_path = tmp_path / "server.log"
    script = tmp_path / "parent.py"
    flags = [f"--port={port}", f"--model_base_path={base}", "--model_name=broken", *LONG_RETRY]
    script.write_text(
        "import os, subprocess, sys, time\n"
        f"log = open({str(log_path)!r}, 'w')\n"
        f"flags = {flags!r} + ['--parent_pid=' + str(os.getpid())]\n"
        "p = subprocess.Popen([sys.executable, '-m', 'helpers.server', *flags],"
        " stdout=log, stderr=log)\n"
        "print(p.pid, flush=True)\n"
        "while 'failed' not in open(log.name).read():\n"
        "    time.sleep(0.1)\n"
        "os._exit(0)\n"
    )
    parent = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180
    )
    child = int(parent.stdout.split()[0])
    started = time.monotonic()
    while time.monotonic() - started < 60 and _alive(child):
        time.sleep(0.05)
    print(f"server ended {time.monotonic() - started:.2f} s after its parent")
    assert not _alive(child), log_path.read_text()[-2000:]
    assert port_is_free(port)
    assert "Parent process" in log_path.read_text()


def test_server_started_from_a_worker_thread_outlives_that_thread(model_store):
    """start_server() in a thread: the server follows the process, not the thread."""
    from helpers.server.process import start_server

    holder: dict = {}
    thread = threading.Thread(
        target=lambda: holder.setdefault(
            "server", start_server(model_store / TOY, TOY, rest_port=0, default_ports=False)
        )
    )
    thread.start()
    thread.join(timeout=180)
    server = holder["server"]
    try:
        time.sleep(1.5)  # a PR_SET_PDEATHSIG tied to the ended thread would have fired by now
        assert server.is_running(), "\n".join(server.log_lines()[-15:])
        assert server.wait_until_available(TOY, timeout=10) == 1
    finally:
        assert server.stop() == 0


def test_sigterm_during_a_call_without_deadline_exits_after_the_grace_period(model_store):
    """A call that would run for hours does not keep a stopping server (and its port) alive."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from helpers.server.app import STOP_GRACE_SECONDS
    from helpers.server.process import start_server

    server = start_server(model_store / TOY, TOY, rest_port=0, default_ports=False)
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_request(
                {"n": np.array(2**31 - 1, np.int32)}, name=TOY, signature="spin"
            )
            future = stub.Predict.future(request)  # no deadline
            time.sleep(0.5)
            assert future.running()
            os.kill(server.pid, signal.SIGTERM)
            code, seconds = _wait_exit(server, timeout=120)
            print(f"exited {seconds:.2f} s after SIGTERM (grace period {STOP_GRACE_SECONDS} s)")
            assert code == 0, "\n".join(server.log_lines()[-15:])
            assert future.exception(timeout=30).code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.CANCELLED,
            )
        with socket.socket() as probe:  # nothing listens any more (TIME_WAIT aside)
            assert probe.connect_ex(("127.0.0.1", server.grpc_port)) != 0
        assert not any("Traceback" in line for line in server.log_lines())
    finally:
        server.stop()


@pytest.mark.parametrize("held", ["127.0.0.1", "::1"])
def test_localhost_refuses_a_port_held_on_either_loopback_address(model_store, held):
    """--host=localhost: a port taken on 127.0.0.1 or on ::1 is a start-up error."""
    from helpers.server.process import free_port

    family = socket.AF_INET6 if ":" in held else socket.AF_INET
    try:
        holder = socket.socket(family, socket.SOCK_STREAM)
        port = free_port()
        holder.bind((held, port))
    except OSError:
        pytest.skip(f"no {held} on this machine")
    with holder:
        holder.listen()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "helpers.server",
                "--host=localhost",
                f"--port={port}",
                f"--model_base_path={model_store / MNIST}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    last = [line for line in result.stdout.splitlines() if line.strip()][-1]
    assert result.returncode == 255  # tensorflow_model_server's main() returns -1
    assert last.startswith("Failed to start server. Error: ")
    assert f"could not bind the gRPC port localhost:{port}: it is in use" in last


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


def test_sigterm_during_a_long_rest_call_exits_within_the_grace_period(model_store):
    import requests

    from helpers.server.app import STOP_GRACE_SECONDS
    from helpers.server.process import start_server

    server = start_server(model_store / TOY, TOY, default_ports=False)
    try:
        url = f"{server.rest_url}/v1/models/{TOY}:predict"
        body = {"signature_name": "spin", "inputs": {"n": 2**31 - 1}}
        outcome: list = []

        def call():
            try:
                outcome.append(requests.post(url, json=body, timeout=120).status_code)
            except requests.RequestException as exc:
                outcome.append(type(exc).__name__)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1.0)  # the call is in the model
        os.kill(server.pid, signal.SIGTERM)
        code, seconds = _wait_exit(server, timeout=120)
        print(f"exited {seconds:.2f} s after SIGTERM in a REST call (grace {STOP_GRACE_SECONDS} s)")
        caller.join(60)
        print(f"the REST caller got: {outcome}")
        assert code == 0, "\n".join(server.log_lines()[-15:])
        assert outcome  # the caller was not left hanging
        assert not any("Traceback" in line for line in server.log_lines())
    finally:
        server.stop()
