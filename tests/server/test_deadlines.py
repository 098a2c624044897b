"""Deadlines reach TensorFlow: the gRPC deadline becomes the Session run's timeout, as in TF
Serving (prediction_service_impl.cc), so an over-deadline run stops and frees its worker."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from serving_suite import TOY, predict_request, rpc_error

from helpers.server.errors import SESSION_RUN_TIMEOUT_MESSAGE, ServingError

#: A spin that would take hours: only a timeout ends it.
FOREVER = np.array(2**31 - 1, np.int32)


@pytest.fixture(scope="module")
def toy_manager(model_store):
    """An in-process model manager serving the toy model."""
    from helpers.server.config_files import single_model_config
    from helpers.server.models import ManagerOptions, ModelManager

    manager = ModelManager(ManagerOptions(file_system_poll_wait_seconds=0))
    manager.start(single_model_config(TOY, str(model_store / TOY)))
    yield manager
    manager.close()


def test_session_run_stops_at_its_timeout(toy_manager):
    servable = toy_manager.servable(TOY)
    started = time.monotonic()
    with pytest.raises(ServingError) as caught:
        servable.run("spin", {"n": FOREVER}, timeout_in_ms=300)
    print(f"run stopped {time.monotonic() - started:.2f} s after it began (timeout 0.3 s)")
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.message == SESSION_RUN_TIMEOUT_MESSAGE
    # The same servable still serves.
    assert servable.run("spin", {"n": np.array(3, np.int32)})["s"] > 0


def test_grpc_deadline_frees_the_only_worker(toy_manager):
    """With one worker thread, a call after an over-deadline one is served: the run stopped."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from helpers.server.grpc_service import add_services

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    add_services(server, toy_manager)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            slow = predict_request({"n": FOREVER}, name=TOY, signature="spin")
            error = rpc_error(stub.Predict, slow, timeout=1)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            started = time.monotonic()
            quick = predict_request({"x": np.array([1.0], np.float32)}, name=TOY)
            response = stub.Predict(quick, timeout=60)
            print(f"next call answered {time.monotonic() - started:.2f} s after the deadline")
            assert list(response.outputs["y"].float_val) == [3.0]
    finally:
        server.stop(0)


def test_timeout_in_ms_follows_the_context():
    from helpers.server.grpc_service import timeout_in_ms

    class Context:
        def __init__(self, remaining):
            self.remaining = remaining

        def time_remaining(self):
            return self.remaining

    assert timeout_in_ms(Context(None)) == 0  # no deadline: no timeout
    assert timeout_in_ms(Context(2.5)) == 2500
    assert timeout_in_ms(Context(-1.0)) == 1  # already late: stop at once, never run unbounded
