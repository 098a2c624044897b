"""Deadlines reach TensorFlow on both ports: the gRPC deadline (prediction_service_impl.cc) and
--rest_api_timeout_in_ms (http_rest_api_handler.cc) become the Session run's timeout, as in TF
Serving, so an over-deadline run stops and frees its worker. Both go through one call path
(helpers.server.calls), which also counts each call once in the metrics."""

from __future__ import annotations

import time
from concurrent import futures
from contextlib import contextmanager

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
    from helpers.server.models import ManagerOptions, ServerCore

    manager = ServerCore(ManagerOptions(file_system_poll_wait_seconds=0))
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
    with one_worker_stub(toy_manager) as stub:
        slow = predict_request({"n": FOREVER}, name=TOY, signature="spin")
        error = rpc_error(stub.Predict, slow, timeout=1)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        started = time.monotonic()
        quick = predict_request({"x": np.array([1.0], np.float32)}, name=TOY)
        response = stub.Predict(quick, timeout=60)
        print(f"next call answered {time.monotonic() - started:.2f} s after the deadline")
        assert list(response.outputs["y"].float_val) == [3.0]


@contextmanager
def one_worker_stub(manager, serving_metrics=None):
    """A PredictionService stub on an in-process gRPC server with a single worker thread."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from helpers.server.grpc_service import add_services

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    add_services(server, manager, serving_metrics)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
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
    assert 2400 < timeout_in_ms(Context(2.5)) <= 2500  # what is left, never more
    assert timeout_in_ms(Context(-1.0)) == 1  # already late: stop at once, never run unbounded
    assert timeout_in_ms(Context(1e9)) == 0  # beyond int32 milliseconds: no timeout


def test_a_rest_deadline_counts_from_the_request():
    from helpers.server.calls import Deadline

    start = time.monotonic()
    assert Deadline.after_ms(None).timeout_in_ms() == 0
    assert Deadline.after_ms(0).timeout_in_ms() == 0
    assert 0 < Deadline.after_ms(1000, start=start).timeout_in_ms() <= 1000
    assert Deadline.after_ms(1000, start=start - 5).timeout_in_ms() == 1  # queued too long


def _count(serving_metrics, model: str, status: str) -> float:
    from helpers.server.metrics import REQUEST_COUNT

    for family in serving_metrics.collect():
        for sample in family.samples:
            if sample.name == REQUEST_COUNT and sample.labels == {
                "model_name": model,
                "status": status,
            }:
                return sample.value
    return 0.0


def test_a_rest_timeout_stops_tensorflow_and_frees_the_only_worker(toy_manager):
    """--rest_api_timeout_in_ms stops the Session run itself, not only the wait for it.

    One REST worker, two calls that would spin for hours (the second waits in the queue):
    both answer 504 with TensorFlow's message; then a quick call is served by that same worker
    (impossible unless both runs stopped), and the process spends almost no CPU after the
    deadline. A busy machine can only lower the CPU this process gets, never raise it, so the
    CPU check cannot fail for a stopped run.
    """
    import requests

    from helpers.server.metrics import ServingMetrics
    from helpers.server.rest import start_rest_server

    timeout_s = 1.0
    serving_metrics = ServingMetrics()
    rest = start_rest_server(
        toy_manager,
        "127.0.0.1",
        0,
        timeout_ms=int(timeout_s * 1000),
        num_threads=1,
        serving_metrics=serving_metrics,
    )
    url = f"http://127.0.0.1:{rest.port}/v1/models/{TOY}:predict"
    spin = {"signature_name": "spin", "inputs": {"n": int(FOREVER)}}
    try:
        cpu_started = time.process_time()
        started = time.monotonic()
        with futures.ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda _: requests.post(url, json=spin, timeout=60), [0, 1]))
        answered = time.monotonic()
        cpu_answered = time.process_time()
        for reply in replies:
            assert (reply.status_code, reply.json()) == (
                504,
                {"error": SESSION_RUN_TIMEOUT_MESSAGE},
            )
        quick = requests.post(url, json={"inputs": {"x": [1.0]}}, timeout=60)
        assert (quick.status_code, quick.json()) == (200, {"outputs": [3.0]})
        quiet_started, cpu_quiet_started = time.monotonic(), time.process_time()
        time.sleep(timeout_s)
        cpu_after = time.process_time() - cpu_quiet_started
        quiet = time.monotonic() - quiet_started
        print(
            f"504s answered {answered - started - timeout_s:+.3f} s after the deadline; "
            f"CPU during the run {cpu_answered - cpu_started:.2f} s, "
            f"after it {cpu_after:.3f} s in {quiet:.2f} s"
        )
        # A run still spinning would use about one core for the whole quiet second.
        assert cpu_after < 0.2 * quiet
        # Each call counted once, with the status its client saw.
        assert _count(serving_metrics, TOY, "DEADLINE_EXCEEDED") == 2
        assert _count(serving_metrics, TOY, "OK") == 1
    finally:
        rest.stop()


def test_queued_grpc_calls_are_counted_once(toy_manager):
    """The gRPC front end counts each call at most once too, on the metrics it was given."""
    from helpers.server.metrics import ServingMetrics

    serving_metrics = ServingMetrics()
    with one_worker_stub(toy_manager, serving_metrics) as stub:
        slow = predict_request({"n": FOREVER}, name=TOY, signature="spin")
        with futures.ThreadPoolExecutor(2) as pool:
            errors = list(pool.map(lambda _: rpc_error(stub.Predict, slow, timeout=1), [0, 1]))
        assert [e.code() for e in errors] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
        quick = predict_request({"x": np.array([1.0], np.float32)}, name=TOY)
        stub.Predict(quick, timeout=60)
        missing = predict_request({"x": np.array([1.0], np.float32)}, name="nope")
        assert rpc_error(stub.Predict, missing).code() == grpc.StatusCode.NOT_FOUND
    assert _count(serving_metrics, TOY, "OK") == 1
    # The first run is stopped by TensorFlow's timeout and counted once. The queued one is
    # counted once too when gRPC hands it to the service, stopped at once (1 ms), but gRPC may
    # also drop it unseen because its deadline passed before a worker was free.
    assert _count(serving_metrics, TOY, "DEADLINE_EXCEEDED") in (1, 2)
    assert _count(serving_metrics, "nope", "NOT_FOUND") == 1


def test_an_unloaded_version_closes_its_session_after_the_last_call(model_store):
    """Unload closes the TensorFlow session, but never under a call still using it."""
    from helpers.server.servable import Servable

    servable = Servable(TOY, 1, str(model_store / TOY / "1"))
    assert servable.acquire()  # a call in flight
    servable.close()  # the version unloads meanwhile
    assert not servable._session._closed
    assert servable.run("", {"x": np.array([1.0], np.float32)})["y"].tolist() == [3.0]
    servable.release()  # the call ends: now the session goes
    assert servable._session._closed
    assert not servable.acquire()  # and no new call can get it


def test_a_failed_warm_up_closes_the_session(model_store):
    from helpers.server.config_files import single_model_config
    from helpers.server.models import ManagerOptions, ServerCore

    loaded = []

    def refuse(servable):
        loaded.append(servable)
        raise RuntimeError("warm-up failed on purpose")

    core = ServerCore(
        ManagerOptions(file_system_poll_wait_seconds=0, max_num_load_retries=0, on_load=refuse)
    )
    with pytest.raises(ServingError):
        core.start(single_model_config(TOY, str(model_store / TOY)))
    core.close()
    assert len(loaded) == 1 and loaded[0]._session._closed


def test_a_call_never_meets_a_closed_session(toy_manager):
    """A version unloaded between lookup and use is looked up again: the call runs on the
    version that serves now, never on a closed session."""
    from helpers.server.calls import Calls, Target

    calls = Calls(toy_manager, "GRPC", _metrics())
    servable = toy_manager.servable(TOY)

    class Retired:
        version = servable.version

        def acquire(self):
            return False

    used, outputs = calls.predict(
        Target(TOY), {"x": np.array([1.0], np.float32)}, servable=Retired()
    )
    assert used is servable and outputs["y"].tolist() == [3.0]


def _metrics():
    from helpers.server.metrics import ServingMetrics

    return ServingMetrics()
