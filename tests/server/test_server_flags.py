"""Every flag the embedded server takes works; every TF Serving flag it cannot honour is refused.

TF Serving's `tensorflow_model_server` has 48 flags (main.cc). The embedded server takes them by
the same names: the ones it implements do what TF Serving's do (checked here and in the other
server tests), and the rest are refused at start-up with the reason, unless their value spells
out what the embedded server does anyway (`--prefer_tflite_model=false`). None is ignored.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from serving_suite import EXTERNAL, EXTERNAL_REASON, TOY, build_toy_model, predict_request

from helpers.server import flags as flag_module
from helpers.server.session_threads import session_threads

MODEL = ["--model_base_path=/models/m"]


def _refused_value(flag: flag_module.Unsupported) -> str:
    """A value of the flag's kind that the embedded server cannot honour."""
    if flag.kind is bool:
        return "false" if True in flag.accepted else "true"
    return {int: "7", float: "0.5", str: "something"}[flag.kind]


@pytest.mark.parametrize("name", sorted(flag_module.UNSUPPORTED))
def test_a_flag_that_cannot_be_honoured_is_refused_with_its_reason(name):
    flag = flag_module.UNSUPPORTED[name]
    value = _refused_value(flag)
    with pytest.raises(flag_module.FlagError) as caught:
        flag_module.parse_flags([f"--{name}={value}", *MODEL])
    assert str(caught.value) == (
        f"--{name}={value} is not supported by the embedded server: {flag.reason}"
    )


@pytest.mark.parametrize(
    "name", sorted(n for n, f in flag_module.UNSUPPORTED.items() if f.accepted)
)
def test_a_value_that_describes_the_embedded_server_is_accepted(name):
    for value in flag_module.UNSUPPORTED[name].accepted:
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        flag_module.check_flags(flag_module.parse_flags([f"--{name}={shown}", *MODEL]))


def test_the_usage_names_every_flag_and_what_is_refused():
    text = flag_module.usage()
    for name in [*flag_module.HELP, *flag_module.UNSUPPORTED]:
        assert f"  --{name}=" in text
    assert "TensorFlow Lite models are not served" in text
    assert "ignored" not in text.lower()


def test_grpc_port_zero_needs_a_socket_path():
    only_socket = flag_module.parse_flags(["--port=0", "--grpc_socket_path=/tmp/s.sock", *MODEL])
    flag_module.check_flags(only_socket)
    with pytest.raises(flag_module.OptionsError) as caught:
        flag_module.check_flags(flag_module.parse_flags(["--port=0", *MODEL]))
    assert str(caught.value) == (
        "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
    )


def test_thread_flags_follow_tf_servings_rules():
    def parsed(*argv: str) -> flag_module.Flags:
        return flag_module.parse_flags([*argv, *MODEL])

    assert session_threads(parsed()) == (0, 0)
    assert session_threads(parsed("--tensorflow_session_parallelism=3")) == (3, 3)
    both = parsed("--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=1")
    assert session_threads(both) == (2, 1)
    every = parsed(
        "--tensorflow_session_parallelism=3",
        "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism=1",
    )
    with pytest.raises(flag_module.OptionsError, match="You cannot configure all"):
        flag_module.check_flags(every)
    with pytest.raises(flag_module.OptionsError, match="must be 0 .automatic. or more"):
        flag_module.check_flags(parsed("--grpc_max_threads=-1"))
    assert flag_module.grpc_threads(parsed()) == 32
    assert flag_module.grpc_threads(parsed(), max_batch_size=64) == 128
    assert flag_module.grpc_threads(parsed("--grpc_max_threads=4"), max_batch_size=64) == 4


def test_thread_flags_reach_every_tensorflow_session():
    """The sessions the server makes (tf.compat.v1.Session without a ConfigProto) run on the
    thread pools the flags ask for. A fresh process: TensorFlow fixes them once it starts."""
    code = (
        "import tensorflow as tf\n"
        "from helpers.server.flags import parse_flags\n"
        "from helpers.server.session_threads import apply_session_threads\n"
        "apply_session_threads(parse_flags(['--tensorflow_intra_op_parallelism=2',"
        " '--tensorflow_inter_op_parallelism=3', '--model_base_path=/m']))\n"
        "config = tf.compat.v1.Session(graph=tf.Graph())._config\n"
        "print(config.intra_op_parallelism_threads, config.inter_op_parallelism_threads)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "3"]


# ------------------------------------------------------------------ the server process
def _run_server(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helpers.server", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


@pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)
def test_the_server_refuses_a_flag_it_cannot_honour_at_start():
    result = _run_server("--prefer_tflite_model=true", *MODEL)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --prefer_tflite_model=true is not supported by the embedded server: "
        "TensorFlow Lite models are not served (export a SavedModel)"
    )


@pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)
def test_the_server_needs_a_grpc_port_or_socket():
    result = _run_server("--port=0", *MODEL)
    assert result.returncode == 255
    assert result.stdout.splitlines() == [
        "Failed to start server. Error: INVALID_ARGUMENT: At least one of "
        "server_options.grpc_port or server_options.grpc_socket_path must be set."
    ]


@pytest.fixture(scope="module")
def socket_only(tmp_path_factory):
    """A server with --port=0 and --grpc_socket_path: gRPC on the UNIX socket alone."""
    from helpers.server.process import ServerProcess, wait_for_model

    folder = tmp_path_factory.mktemp("socket-only")
    build_toy_model(folder / TOY / "1")
    path = folder / "serving.sock"
    args = [
        sys.executable,
        "-m",
        "helpers.server",
        "--port=0",
        f"--grpc_socket_path={path}",
        f"--model_name={TOY}",
        f"--model_base_path={folder / TOY}",
        f"--parent_pid={os.getpid()}",
    ]
    server = ServerProcess(args, 0, 0, TOY)
    try:
        wait_for_model(f"unix:{path}", TOY, None, 120, is_alive=server.is_running)
        yield server, path
    finally:
        server.stop()


@pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)
def test_a_server_on_a_unix_socket_alone(socket_only):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    server, path = socket_only
    with grpc.insecure_channel(f"unix:{path}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_request({"x": np.array([1.0, 2.0], np.float32)}, name=TOY)
        response = stub.Predict(request, timeout=30)
    assert list(response.outputs["y"].float_val) == [3.0, 5.0]
    assert server.wait_for_log(f"Running gRPC ModelServer at UNIX socket {path} ...")
    assert not any("Running gRPC ModelServer at 127.0.0.1" in line for line in server.log_lines())


@pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)
def test_a_socket_path_in_a_missing_folder_is_refused(tmp_path: Path):
    from helpers.server.process import free_port

    missing = tmp_path / "no-such-folder" / "serving.sock"
    result = _run_server(f"--port={free_port()}", f"--grpc_socket_path={missing}", *MODEL)
    assert result.returncode == 255
    assert result.stdout.splitlines() == [
        "Failed to start server. Error: INVALID_ARGUMENT: could not listen on the UNIX socket "
        f"{missing}: the folder {missing.parent} does not exist "
        "(create it or choose another --grpc_socket_path)"
    ]


@pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)
def test_a_second_server_takes_the_socket_path_over(socket_only):
    """As with tensorflow_model_server (gRPC replaces the socket file), which TF Serving's own
    tests rely on: each server they start listens on the same --grpc_socket_path. Last in this
    file: afterwards the path belongs to the second server."""
    from helpers.server.process import ServerProcess, wait_for_model

    first, path = socket_only
    folder = path.parent / TOY
    args = [
        sys.executable,
        "-m",
        "helpers.server",
        "--port=0",
        f"--grpc_socket_path={path}",
        "--model_name=second",
        f"--model_base_path={folder}",
        f"--parent_pid={os.getpid()}",
    ]
    with ServerProcess(args, 0, 0, "second") as second:
        listening = f"Running gRPC ModelServer at UNIX socket {path} ..."
        for _ in range(1200):  # up to 120 s: the second server loads its model, then listens
            if not second.is_running() or any(listening in x for x in second.log_lines()):
                break
            threading.Event().wait(0.1)
        assert any(listening in line for line in second.log_lines()), second.log_lines()[-5:]
        # A new connection to the path reaches the second server (the first one's open
        # connections stay with it, so a channel made before the takeover would not).
        assert wait_for_model(f"unix:{path}", "second", None, 30, is_alive=second.is_running) == 1
        assert first.is_running()
        assert second.wait_for_log(
            f"Another server listens on the UNIX socket {path}: this one takes the path over"
        )
