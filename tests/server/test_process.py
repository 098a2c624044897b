"""The server process: start-up failures, graceful stop, and the Python process API."""

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
from serving_suite import (
    EXTERNAL,
    EXTERNAL_REASON,
    MNIST,
    TOY,
    predict_request,
    rpc_error,
    write,
)

pytestmark = pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)


#: A hang guard, not a speed claim: importing TensorFlow alone takes a minute on a busy laptop.
PROCESS_TIMEOUT = 300


def _run_server(*flags: str, timeout: float = PROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    """Run `python -m helpers.server` to completion (for start-ups that must fail)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "helpers.server", *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _startup_failure(result: subprocess.CompletedProcess) -> str:
    """The one stdout line of a failed start-up, checked as tensorflow_model_server ends one:
    `Failed to start server. Error: ...` on stdout, status 255 (main() returns -1)."""
    assert result.returncode == 255, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("Failed to start server. Error: "), line
    assert "Traceback" not in result.stderr
    return line


def test_unknown_flag_fails_with_one_line():
    result = _run_server("--port=8500", "--model_nme=mnist")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown command line flag 'model_nme' (see --help)"


def test_flag_value_of_the_wrong_kind():
    result = _run_server("--port=eighty", "--model_base_path=/models/mnist")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --port expects an integer, got 'eighty'"


def test_no_model_at_all_is_refused():
    result = _run_server("--port=8500")
    assert _startup_failure(result).startswith(
        "Failed to start server. Error: INVALID_ARGUMENT: Both server_options.model_base_path "
        "and server_options.model_config_file are empty!"
    )


def test_batching_file_without_batching_is_refused(tmp_path):
    params = write(tmp_path / "batching.config", "max_batch_size { value: 8 }")
    result = _run_server("--model_base_path=/m", f"--batching_parameters_file={params}")
    assert _startup_failure(result) == (
        "Failed to start server. Error: INVALID_ARGUMENT: server_options.batching_parameters_file "
        "is set without setting server_options.enable_batching to true."
    )


def test_bad_config_file_fails_with_one_line(tmp_path):
    bad = write(tmp_path / "models.config", "model_config_list { config { title: 'x' } }")
    result = _run_server("--port=8500", f"--model_config_file={bad}")
    assert _startup_failure(result) == (
        f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'"
    )
    assert _last_line(result).endswith(
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:30: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "title".'
    )


def test_missing_ssl_config_file_fails(tmp_path):
    missing = tmp_path / "none"
    result = _run_server("--model_base_path=/m", f"--ssl_config_file={missing}")
    assert _startup_failure(result) == (
        f"Failed to start server. Error: NOT_FOUND: {missing}; No such file or directory"
    )


def _ssl_file(folder, server_key: bytes, server_cert: bytes) -> Path:
    from helpers.certificates import Identity, ssl_config_text

    return write(folder / "ssl.config", ssl_config_text(Identity(server_key, server_cert)))


@pytest.mark.parametrize(
    "spoil, cause",
    [
        (
            lambda key, cert, other: (
                b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
                cert,
            ),
            "SSLConfig server_key is not a usable PEM private key",
        ),
        (
            lambda key, cert, other: (key, cert.replace(b"M", b"x", 40)),
            "SSLConfig server_cert is not a PEM certificate",
        ),
        (
            lambda key, cert, other: (other, cert),
            "SSLConfig server_key does not belong to server_cert",
        ),
    ],
    ids=["key-not-pem", "cert-corrupt", "key-of-another-cert"],
)
def test_a_bad_tls_key_or_certificate_is_named_as_such(model_store, tmp_path, spoil, cause):
    """Not "port in use" (the port is free): the field and what is wrong with it."""
    from helpers.certificates import issue, make_ca
    from helpers.server.process import free_port

    ca = make_ca()
    good = issue(ca, "localhost", dns_names=["localhost"])
    other = issue(ca, "localhost", dns_names=["localhost"])
    config = _ssl_file(tmp_path, *spoil(good.key, good.certificate, other.key))
    port = free_port()
    result = _run_server(
        f"--port={port}", f"--model_base_path={model_store / MNIST}", f"--ssl_config_file={config}"
    )
    line = _startup_failure(result)
    assert line.startswith(
        f"Failed to start server. Error: INVALID_ARGUMENT: Invalid SSL config: {cause}"
    ), line
    assert "in use" not in line


def test_a_too_long_socket_path_is_named_as_such(model_store, tmp_path):
    """Not "folder must be writable" (it is): the path is longer than a UNIX socket allows."""
    from helpers.server.unix_socket import MAX_SOCKET_PATH_BYTES

    path = tmp_path / ("s" * (MAX_SOCKET_PATH_BYTES + 1 - len(str(tmp_path))))
    assert len(str(path)) > MAX_SOCKET_PATH_BYTES
    result = _run_server(
        "--port=0", f"--grpc_socket_path={path}", f"--model_base_path={model_store / MNIST}"
    )
    assert _startup_failure(result) == (
        f"Failed to start server. Error: INVALID_ARGUMENT: could not listen on the UNIX socket "
        f"{path}: the path is {len(str(path))} bytes long and a UNIX socket path holds at most "
        f"{MAX_SOCKET_PATH_BYTES} (choose a shorter --grpc_socket_path, e.g. in /tmp)"
    )


def test_port_taken_is_refused(model_store):
    from helpers.server.process import free_port

    port = free_port()
    with socket.socket() as holder:
        # The holder allows port sharing, as a gRPC server does by default: the embedded
        # server must still refuse (it turns grpc.so_reuseport off), or two servers would
        # silently split the traffic.
        if hasattr(socket, "SO_REUSEPORT"):
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        started = time.monotonic()
        result = _run_server(f"--port={port}", f"--model_base_path={model_store / MNIST}")
        elapsed = time.monotonic() - started
    assert _startup_failure(result) == (
        f"Failed to start server. Error: could not bind the gRPC port 127.0.0.1:{port}: it is in "
        "use by another process (stop that server or choose another --port)"
    )
    assert elapsed < 30


def test_labels_at_start_need_the_allow_flag(model_store, tmp_path):
    config = write(
        tmp_path / "models.config",
        f"""
        model_config_list {{ config {{
          name: 'mnist' base_path: '{model_store / MNIST}' model_platform: 'tensorflow'
          version_labels {{ key: 'stable' value: 1 }}
        }} }}""",
    )
    from helpers.server.process import free_port

    result = _run_server(f"--port={free_port()}", f"--model_config_file={config}")
    assert _startup_failure(result) == (
        "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 1 "
        "of model mnist, which is not currently available for inference"
    )


def test_relative_base_path_is_refused():
    from helpers.server.process import free_port

    result = _run_server(f"--port={free_port()}", "--model_base_path=models/mnist")
    assert _startup_failure(result).endswith(
        "Error: INVALID_ARGUMENT: Expected model default to have an absolute path or URI; "
        "got base_path()=models/mnist"
    )


def test_start_server_reports_a_dead_process_with_its_log(tmp_path):
    from helpers.server.process import ServerStartError, start_server

    with pytest.raises(ServerStartError) as caught:
        start_server(
            extra_flags=[f"--model_config_file={tmp_path / 'missing.config'}"],
            rest_port=0,
            timeout=60,
        )
    message = str(caught.value)
    assert "exited with code 255" in message
    assert "missing.config; No such file or directory" in message


@pytest.fixture(scope="module")
def stoppable(model_store):
    """A server of its own (the tests stop it)."""
    from helpers.server.process import start_server

    server = start_server(model_store / TOY, TOY, rest_port=0, default_ports=False)
    yield server
    server.stop()


def test_process_api_addresses_and_logs(stoppable):
    assert stoppable.grpc_target == f"localhost:{stoppable.grpc_port}"
    assert stoppable.address.grpc_target == stoppable.grpc_target
    assert stoppable.is_running() and stoppable.pid > 0
    assert stoppable.wait_until_available(TOY, timeout=10) == 1
    assert stoppable.wait_for_log("Successfully loaded servable version {name: toy version: 1}")
    assert not stoppable.wait_for_log("a line no server writes", timeout=0.2)


def test_another_server_on_the_port_is_not_mistaken_for_ours(stoppable, model_store):
    """A start that finds the port answered by someone else's server fails; it must never
    report that server's model as its own."""
    from helpers.server.process import ServerStartError, start_server

    with pytest.raises(ServerStartError, match="exited with code 255"):
        start_server(model_store / TOY, TOY, grpc_port=stoppable.grpc_port, rest_port=0)
    assert stoppable.is_running()


def test_graceful_stop_finishes_the_call_in_flight(stoppable):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(stoppable.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    # About 1.2 s on an idle 2-core machine: well inside the 5 s grace period even when the
    # machine is busy (150,000 took 4.6 s idle, and a loaded CI run pushed it past the grace).
    request = predict_request({"n": np.array(40_000, np.int32)}, name=TOY, signature="spin")
    started = time.monotonic()
    future = stub.Predict.future(request, timeout=60)
    time.sleep(0.3)  # the call is running on the server
    assert future.running()
    assert stoppable.stop(timeout=30) == 0
    response = future.result()
    assert "s" in response.outputs
    assert time.monotonic() - started > 0.3
    after = rpc_error(
        stub.Predict, predict_request({"x": np.ones(1, np.float32)}, name=TOY), timeout=5
    )
    assert after.code() == grpc.StatusCode.UNAVAILABLE
    assert stoppable.wait_for_log("Stopping: finishing calls in flight")
    channel.close()


def test_server_exits_when_its_parent_dies(model_store, tmp_path: Path):
    """The --parent_pid watchdog: a parent that dies takes the server with it."""
    from helpers.server.process import free_port

    port = free_port()
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-m', 'helpers.server', '--port={port}',"
        f" '--model_base_path={model_store / TOY}', '--model_name={TOY}',"
        " '--parent_pid=' + str(__import__('os').getpid())],"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(1)\n"
    )
    parent = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=PROCESS_TIMEOUT
    )
    child = int(parent.stdout.split()[0])
    # the watchdog starts after the imports, which a busy machine can make slow
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.2)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return True


def test_concurrent_clients_get_no_errors(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    errors: list[str] = []
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def client() -> None:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(40):
                try:
                    response = stub.Predict(predict_request(version=1), timeout=10)
                    with lock:
                        results.append(np.array(response.outputs["probabilities"].float_val))
                except grpc.RpcError as exc:
                    errors.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 320
    assert all(np.array_equal(r, results[0]) for r in results)


def test_config_file_is_polled_for_changes(model_store, tmp_path):
    """--model_config_file_poll_wait_seconds: an edited config file is applied by itself."""
    from helpers.server.process import start_server

    def entry(name: str) -> str:
        return (
            f"config {{ name: '{name}' base_path: '{model_store / name}' "
            "model_platform: 'tensorflow' }"
        )

    config = write(tmp_path / "models.config", f"model_config_list {{ {entry(TOY)} }}")
    server = start_server(
        extra_flags=[f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"],
        model_name=TOY,
        rest_port=0,
        default_ports=False,
    )
    try:
        config.write_text(f"model_config_list {{ {entry(TOY)} {entry(MNIST)} }}")
        # A hang guard, not a speed claim (a busy machine once took over 30 s): on failure
        # wait_until_available shows the server's last log lines.
        assert server.wait_until_available(MNIST, timeout=120) == 2
        assert server.wait_for_log("changed: reloading")
    finally:
        server.stop()


def _taken_ports(count: int) -> tuple[list[socket.socket], list[int]]:
    """`count` listening sockets of "another program", and their ports."""
    holders = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    return holders, [holder.getsockname()[1] for holder in holders]


def _picks_first(ports: list[int]):
    """A free_port that hands out `ports` first (free when picked, taken by the time the
    server binds them), then ports the OS picks."""
    from helpers.server import process

    real = process.free_port
    queue = list(ports)
    return lambda host="127.0.0.1": queue.pop(0) if queue else real(host)


def test_a_picked_port_taken_before_the_server_listens_is_picked_again(model_store, monkeypatch):
    """The race a picked port runs: free when picked, bound only once the models load. Both
    ports are lost here, one after the other; each move is logged and the server comes up."""
    from helpers.server import process

    holders, taken = _taken_ports(2)
    monkeypatch.setattr(process, "free_port", _picks_first(taken))
    try:
        with process.start_server(model_store / TOY, TOY, default_ports=False) as server:
            assert server.grpc_port not in taken and server.rest_port not in taken
            assert server.wait_until_available(timeout=10) == 1
            assert f"--port={server.grpc_port}" in server.args
            assert f"--rest_api_port={server.rest_port}" in server.args
            moves = [line for line in server.log_lines() if "another process took" in line]
            assert [move.split(" port ")[0] for move in moves] == [
                "(another process took the gRPC",
                "(another process took the REST",
            ], moves
            for holder, port in zip(holders, taken, strict=True):  # still theirs
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    holder.settimeout(5)
                    holder.accept()[0].close()
    finally:
        for holder in holders:
            holder.close()


def test_a_lost_port_is_not_moved_when_it_was_asked_for_or_moves_run_out(model_store, monkeypatch):
    """A port the caller chose is the caller's to change; and a machine where every pick is
    taken ends in the server's own error, not in endless restarts."""
    from helpers.server import process

    holders, taken = _taken_ports(1)
    monkeypatch.setattr(process, "MAX_PORT_MOVES", 0)
    monkeypatch.setattr(process, "free_port", _picks_first(taken))
    try:
        for ports in ({"grpc_port": taken[0]}, {}):
            with pytest.raises(process.ServerStartError) as caught:
                process.start_server(
                    model_store / TOY, TOY, rest_port=0, default_ports=False, **ports
                )
            message = str(caught.value)
            assert "exited with code 255" in message
            assert f"could not bind the gRPC port 127.0.0.1:{taken[0]}" in message
            monkeypatch.setattr(process, "free_port", _picks_first(taken))
    finally:
        holders[0].close()


def test_a_claimed_default_port_is_not_picked_twice():
    """Two starts at once must not both choose 8500 while the first server is still loading."""
    from helpers.server import process

    port = process.free_port()
    assert process._pick_port(None, port, set()) == port
    assert process._pick_port(None, port, set()) != port  # claimed, though nothing listens yet
    process._release_claim(port)  # what stop() does
    assert process._pick_port(None, port, set()) == port
    process._release_claim(port)


def test_a_claim_holds_across_processes_and_temporary_folders(tmp_path):
    """Another course process (papermill with its own TMPDIR, a JupyterLab kernel) sees the
    claim; once that process ends, crashed or not, the port is free to claim again."""
    from helpers.server import process

    port = process.free_port()
    claim_and_hold = (
        "import sys; from helpers.server import process; "
        f"print(process._claim_default_port({port}), flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", claim_and_hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        assert process._pick_port(None, port, set()) != port
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert process._pick_port(None, port, set()) == port
    process._release_claim(port)


def test_a_burst_of_stop_signals_still_stops_the_server(model_store):
    """Several SIGTERMs at once (a parent's death signal and a stop, a user pressing Ctrl+C
    again) must stop the server, not leave it deadlocked and holding its port."""
    from helpers.server.process import port_is_free, start_server

    server = start_server(model_store / TOY, TOY, rest_port=0, default_ports=False)
    for _ in range(50):
        os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while server.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped_by_itself = not server.is_running()
    server.stop()  # kills it if the signals did not stop it
    assert stopped_by_itself and server.returncode == 0
    assert port_is_free(server.grpc_port)


def test_a_port_is_free_once_nothing_listens_even_with_connections_in_time_wait():
    """A stopped server that closed its clients' connections leaves them in TIME_WAIT on its
    port for a minute; a new server binds over them (SO_REUSEADDR), so the port is free."""
    from helpers.server.process import port_is_free

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    assert not port_is_free(port) and not port_is_free(port, "localhost")
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server closes first: its side of the connection enters TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    assert port_is_free(port)
    with socket.create_server(("127.0.0.1", port)):  # what a server starting there does
        pass


def test_the_server_child_is_started_without_preexec_fn(monkeypatch):
    """preexec_fn is unsafe in a process with threads; the --parent_pid watchdog replaces it."""
    from helpers.server import process as process_module

    seen = {}

    class Refused(Exception):
        pass

    def fake_popen(args, **kwargs):
        seen.update(kwargs, args=args)
        raise Refused

    monkeypatch.setattr(process_module.subprocess, "Popen", fake_popen)
    with pytest.raises(Refused):
        process_module.start_server(model_base_path="/nowhere", wait=False)
    assert "preexec_fn" not in seen
    assert f"--parent_pid={os.getpid()}" in seen["args"]
