"""Hostile request tensors over gRPC: refused with INVALID_ARGUMENT from the shape alone (nothing
allocated), and the server keeps serving.

TF Serving answers these with `tensor parsing error: <alias>` (Tensor::FromProto fails in
saved_model/util.cc); the embedded server adds the reason when it has one.
"""

from __future__ import annotations

import socket
import time

import grpc
import numpy as np
import pytest
from serving_suite import EXTERNAL, EXTERNAL_REASON, MNIST, images, predict_request, rpc_error
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from helpers.server import tensors
from helpers.server.errors import ServingError


def _proto(shape, dtype=types_pb2.DT_FLOAT, **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in shape]
        ),
    )
    for name, value in fields.items():
        if name == "tensor_content":
            proto.tensor_content = value
        else:
            getattr(proto, name).extend(value)
    return proto


HOSTILE = {
    "65 dims": _proto([1] * 65, float_val=[1.0]),
    "255 dims": _proto([1] * 255, float_val=[1.0]),
    "2**40 elements": _proto([2**40], float_val=[1.0]),
    "2**40 elements, no values": _proto([2**40]),
    "int64 overflow": _proto([2**32, 2**32, 4], float_val=[1.0]),
    "one float_val for 2**29": _proto([2**29], float_val=[1.0]),
    "negative dim": _proto([-1, 784], float_val=[1.0]),
    "content too short": _proto([1, 28, 28, 1], tensor_content=b"\0" * 100),
    "content too long": _proto([1, 28, 28, 1], tensor_content=b"\0" * (784 * 4 + 4)),
    "content for 2**40": _proto([2**40], tensor_content=b"\0" * 16),
    "no dtype": _proto([1], dtype=types_pb2.DT_INVALID, float_val=[1.0]),
}


@pytest.mark.parametrize("proto", HOSTILE.values(), ids=HOSTILE.keys())
def test_decode_refuses_before_allocating(proto):
    """In-process: each is refused at once; tracemalloc shows nothing big was built."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ServingError) as caught:
            tensors.decode(proto, "image")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("tensor parsing error: image")
    assert peak < 16 * 2**20, f"{peak} bytes allocated while refusing"


def test_single_value_fill_reason_says_what_to_do():
    with pytest.raises(ServingError) as caught:
        tensors.decode(HOSTILE["one float_val for 2**29"], "image")
    assert "float_val holds 1" in caught.value.message
    assert "send every value" in caught.value.message


def test_small_fill_and_big_content_still_decode():
    """What TensorFlow accepts stays accepted: a short float_val fills a small tensor."""
    assert tensors.decode(_proto([3, 2], float_val=[7.0]), "x").tolist() == [[7.0] * 2] * 3
    content = np.arange(784, dtype=np.float32).tobytes()
    assert tensors.decode(_proto([1, 28, 28, 1], tensor_content=content), "x").shape == (
        1,
        28,
        28,
        1,
    )


@pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)
@pytest.mark.parametrize("proto", HOSTILE.values(), ids=HOSTILE.keys())
def test_grpc_answers_invalid_argument_and_keeps_serving(predict_stub, proto):
    request = predict_request(name=MNIST)
    request.inputs["image"].CopyFrom(proto)
    error = rpc_error(predict_stub.Predict, request, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith("tensor parsing error: image")
    good = predict_stub.Predict(predict_request({"image": images()}, name=MNIST), timeout=30)
    assert good.outputs


@pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)
def test_garbage_bytes_on_the_grpc_port_leave_it_serving(server, predict_stub):
    rng = np.random.default_rng(7)
    port = int(server.grpc_target.rsplit(":", 1)[1])
    for size in (1, 24, 4096, 100_000):
        with socket.create_connection(("localhost", port), timeout=10) as sock:
            try:
                sock.sendall(rng.bytes(size))
                sock.settimeout(2)
                sock.recv(1024)  # the server answers with a GOAWAY or just closes
            except OSError:
                pass
    time.sleep(0.2)
    response = predict_stub.Predict(predict_request({"image": images()}, name=MNIST), timeout=30)
    assert response.outputs
