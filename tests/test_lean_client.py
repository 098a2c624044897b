"""lean_client/: a TensorFlow-free client that a live server answers like the TensorFlow one."""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from served_mnist import served_mnist  # noqa: F401  (fixture)

from helpers import client, config, lean
from helpers.data import preprocess

LEAN = lean.LEAN_CLIENT


def test_requirements_name_only_grpcio_protobuf_and_numpy():
    lines = [
        line.split("#")[0].strip() for line in (LEAN / "requirements.txt").read_text().splitlines()
    ]
    names = {re.split(r"[<>=!~ ]", line)[0] for line in lines if line}
    assert names == {"grpcio", "protobuf", "numpy"}


def test_shipped_digits_are_small_raw_mnist_pixels():
    digits = np.load(LEAN / "digits.npy")
    assert digits.dtype == np.uint8 and digits.shape[1:] == (28, 28) and 1 <= len(digits) <= 64
    assert (LEAN / "digits.npy").stat().st_size < 64_000


def test_generated_modules_match_the_proto_files(tmp_path):
    import subprocess

    # protoc in a process of its own: it must not share one with TensorFlow's protos
    script = str(LEAN / "compile_protos.py")
    subprocess.run([sys.executable, script, str(tmp_path)], check=True, capture_output=True)
    fresh_files = sorted((tmp_path / "lean_serving").glob("*.py"))
    assert len(fresh_files) >= 3
    for fresh in fresh_files:
        shipped = LEAN / "lean_serving" / fresh.name
        diff = "".join(
            difflib.unified_diff(
                shipped.read_text().splitlines(True), fresh.read_text().splitlines(True)
            )
        )
        assert not diff, (
            f"{shipped.name} is stale: run python lean_client/compile_protos.py\n{diff}"
        )


def test_field_numbers_are_tensorflow_servings():
    """Same bytes as TF Serving's own protos, read back by them."""
    from tensorflow_serving.apis import predict_pb2

    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        f"sys.path.insert(0, {str(LEAN)!r})\n"
        "import numpy as np\n"
        "from lean_serving import predict_pb2\n"
        "from predict import encode\n"
        "spec = predict_pb2.ModelSpec(name='mnist', signature_name='s')\n"
        "r = predict_pb2.PredictRequest(model_spec=spec)\n"
        "r.inputs['image'].CopyFrom(encode(np.arange(6, dtype=np.float32).reshape(1, 2, 3)))\n"
        "sys.stdout.buffer.write(r.SerializeToString())\n"
    )
    import subprocess

    wire = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    request = predict_pb2.PredictRequest.FromString(wire)
    assert (request.model_spec.name, request.model_spec.signature_name) == ("mnist", "s")
    values = client.decode_tensor(request.inputs["image"])
    np.testing.assert_array_equal(values, np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    expected = client.make_predict_request(values, "mnist", "image", signature_name="s")
    assert expected.SerializeToString() == wire


def test_lean_client_without_tensorflow_matches_the_tensorflow_client(served_mnist, tmp_path):  # noqa: F811
    saved = tmp_path / "probabilities.npy"
    digits = lean.run_lean_client(served_mnist.grpc_target, config.MODEL_NAME, probabilities=saved)
    pixels = np.load(LEAN / "digits.npy")
    assert len(digits) == len(pixels) and all(0 <= d <= 9 for d in digits)
    with client.open_channel(served_mnist.grpc_target) as channel:
        expected = client.predict(channel, preprocess(pixels), model_name=config.MODEL_NAME)
    expected = np.asarray(getattr(expected, "probabilities", expected))
    np.testing.assert_array_equal(np.load(saved), expected)
    assert digits == expected.argmax(axis=1).tolist()


def test_lean_client_reports_a_wrong_model_name(served_mnist):  # noqa: F811
    with pytest.raises(RuntimeError, match="NOT_FOUND"):
        lean.run_lean_client(served_mnist.grpc_target, "no_such_model")


def test_tensorflow_cannot_be_imported_where_the_lean_client_runs():
    import subprocess

    code = lean._BLOCK_TENSORFLOW + "import tensorflow\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "import of tensorflow halted" in result.stderr


def test_dependency_closure_of_the_lean_client_has_no_tensorflow():
    names = lean.dependency_closure(lean.LEAN_REQUIREMENTS)
    assert {"grpcio", "protobuf", "numpy"} <= set(names)
    assert not any(name.startswith(("tensorflow", "keras")) for name in names)
    assert lean.installed_bytes(names) < lean.installed_bytes(
        lean.dependency_closure(lean.TENSORFLOW_REQUIREMENTS)
    )


def test_lines_of_code_skip_comments(tmp_path):
    source = Path(tmp_path / "x.py")
    source.write_text("# c\n\nx = 1\n  // d\ny = 2\n")
    assert lean.lines_of_code(source) == 2


def _answer(shape, *, content: bytes = b"", floats=(), dtype: int = 1) -> bytes:
    """A PredictResponse whose `probabilities` claims `shape` and carries what is given."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
    from tensorflow_serving.apis import predict_pb2

    tensor = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
        ),
        tensor_content=content,
        float_val=list(floats),
    )
    response = predict_pb2.PredictResponse()
    response.outputs["probabilities"].CopyFrom(tensor)
    return response.SerializeToString()


@pytest.fixture
def answering_server():
    """A gRPC server whose Predict answers whatever bytes the test puts in `answer[0]`."""
    from concurrent import futures

    import grpc

    answer = [b""]
    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(lambda request, context: answer[0])},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", answer
    server.stop(0)


DIGITS = len(np.load(LEAN / "digits.npy"))


@pytest.mark.parametrize(
    "answer, says",
    [
        # 10 bytes claiming a 1 GiB tensor: refused before anything is allocated.
        (lambda: _answer([2**28, 1], content=b"0123456789"), "but 10 bytes arrived"),
        (lambda: _answer([2**30], floats=[0.5]), "values) but 1 values arrived"),
        (lambda: _answer([DIGITS, 10], floats=[0.1] * 7), "but 7 values arrived"),
        (lambda: _answer([DIGITS, -1], floats=[0.1]), "impossible shape"),
        (lambda: _answer([DIGITS * 10], floats=[0.1] * DIGITS * 10), "expected probabilities"),
        (lambda: _answer([1, 10], floats=[0.1] * 10), "expected probabilities"),
        (lambda: _answer([DIGITS, 10], dtype=7), "float32 and uint8"),
        (lambda: b"", "has no output 'probabilities'"),
    ],
    ids=[
        "10-bytes-for-1GiB",
        "one-value-for-1G",
        "too-few",
        "negative",
        "1-D",
        "wrong-rows",
        "string",
        "no-output",
    ],
)
def test_a_malformed_answer_ends_in_one_error_line(answering_server, answer, says):
    import subprocess

    target, slot = answering_server
    slot[0] = answer()
    result = subprocess.run(
        [sys.executable, str(LEAN / "predict.py"), "--server", target, "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: the server's answer cannot be used"), (
        result.stderr
    )
    assert says in lines[0]
    assert result.stdout == ""


def test_unreadable_digits_end_in_one_error_line(tmp_path):
    import subprocess

    bad = tmp_path / "digits.npy"
    bad.write_bytes(b"not numpy")
    result = subprocess.run(
        [sys.executable, str(LEAN / "predict.py"), "--digits", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: cannot read the digits in {bad}")
    assert len(result.stderr.strip().splitlines()) == 1
