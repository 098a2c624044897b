"""Notebook 05's exercise solutions, against a live embedded server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from helpers import client
from helpers.solutions import ex05

pytest_plugins = ["served_mnist"]


def test_retry_gives_up_on_a_server_that_is_not_there(unused_port):
    import time

    channel = grpc.insecure_channel(f"localhost:{unused_port}")
    stub = client._prediction_stub(channel)
    request = client.make_predict_request(np.zeros((1, 28, 28, 1), np.float32), "mnist", "image")
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        ex05.predict_with_retry(stub, request, attempts=3, timeout=1.0, pause=0.05)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start >= 0.05 + 0.1  # it paused twice, growing
    channel.close()


def test_retry_does_not_retry_a_wrong_request(served_channel):
    calls = []

    class CountingStub:
        def Predict(self, request, timeout):  # noqa: N802 - the RPC's name
            calls.append(request)
            return client._prediction_stub(served_channel).Predict(request, timeout=timeout)

    bad = client.make_predict_request(np.zeros((1, 28, 28, 1)), "mnist", "image")  # float64
    with pytest.raises(grpc.RpcError) as caught:
        ex05.predict_with_retry(CountingStub(), bad, attempts=3)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(calls) == 1
    good = client.make_predict_request(np.zeros((2, 28, 28, 1), np.float32), "mnist", "image")
    reply = ex05.predict_with_retry(CountingStub(), good)
    assert client.decode_tensor(reply.outputs["probabilities"]).shape == (2, 10)


class FailingStub:
    """A stub whose every Predict fails with `code`, counting the calls and the time they got."""

    def __init__(self, code):
        self.code, self.timeouts = code, []

    def Predict(self, request, timeout):  # noqa: N802 - the RPC's name
        self.timeouts.append(timeout)
        error = grpc.RpcError()
        error.code = lambda: self.code
        raise error


def test_retry_leaves_deadline_exceeded_alone():
    stub = FailingStub(grpc.StatusCode.DEADLINE_EXCEEDED)
    with pytest.raises(grpc.RpcError) as caught:
        ex05.predict_with_retry(stub, None, attempts=3, timeout=1.0, pause=0.01)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(stub.timeouts) == 1  # its time is spent: no second attempt


def test_retries_share_one_deadline():
    stub = FailingStub(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError):
        ex05.predict_with_retry(stub, None, attempts=5, timeout=1.0, pause=0.3)
    # Pauses of 0.3 s, 0.6 s, 1.2 s: at most two of them fit in the 1 s deadline, however slow
    # the machine, and each attempt gets only what is left of that one deadline.
    pauses = [0.3 * 2**n for n in range(len(stub.timeouts))]
    assert 1 <= len(stub.timeouts) <= 3
    for attempt, timeout in enumerate(stub.timeouts):
        assert 0 < timeout <= 1.0 - sum(pauses[:attempt])


def test_concurrent_predictions_keep_their_order(served_channel):
    images = np.random.default_rng(0).integers(0, 256, size=(150, 28, 28), dtype=np.uint8)
    together = ex05.predict_concurrently(served_channel, images, batch_size=32, max_workers=4)
    one_call = client.predict(served_channel, images)
    assert together.shape == (150, 10)
    # Other batch sizes make TensorFlow sum in another order: float32 answers then differ in
    # their last bits (2.5e-6 relative seen). Out of order they would differ by tenths.
    np.testing.assert_allclose(together, one_call, rtol=1e-4, atol=1e-6)


def test_top_k():
    probabilities = np.array(
        [[0.1, 0.6, 0.3, 0, 0, 0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0, 0, 0, 0, 0.2, 0.3]]
    )
    digits, values = ex05.top_k(probabilities, k=3)
    assert digits.tolist() == [[1, 2, 0], [0, 9, 8]]
    np.testing.assert_allclose(values, [[0.6, 0.3, 0.1], [0.5, 0.3, 0.2]])
    with pytest.raises(ValueError, match="between 1 and 10"):
        ex05.top_k(probabilities, k=11)


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]
