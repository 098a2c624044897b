"""The REST server in-process, over a tiny fake model manager: routing, lifecycle, concurrency.

These run without TensorFlow models or a server process, so they pin down the HTTP layer itself:
route parsing, binding errors, graceful stop, and that a slow call never blocks the others.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_status_pb2

from helpers.server.errors import ServingError, deadline_exceeded
from helpers.server.metrics import ServingMetrics
from helpers.server.rest import Route, parse_route, start_rest_server

#: An input value that holds the call until the servable's gate opens.
HOLD = -99.0


class FakeServable:
    """One signature `serving_default`: x float32 [-1] -> y = 2x; x < 0 sleeps |x| seconds,
    and x == HOLD waits until `gate` is set."""

    name, version = "fake", 3

    def __init__(self) -> None:
        self.gate = threading.Event()
        signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        signature.inputs["x"].dtype = types_pb2.DT_FLOAT
        signature.outputs["y"].dtype = types_pb2.DT_FLOAT
        self.signature_defs = {"serving_default": signature}

    def run(self, signature_name, inputs, output_filter=(), *, timeout_in_ms=0):
        """Like a Session run with RunOptions.timeout_in_ms: stops at the timeout."""
        x = inputs["x"]
        if x.size and x.min() == HOLD:
            self.gate.wait(60)
        elif x.size and x.min() < 0:
            seconds = float(-x.min())
            if 0 < timeout_in_ms < seconds * 1000:
                time.sleep(timeout_in_ms / 1000)
                raise deadline_exceeded()
            time.sleep(seconds)
        return {"y": 2 * x}


class FakeManager:
    """The ServerCore surface rest.py uses."""

    def __init__(self) -> None:
        self.fake = FakeServable()

    def servable(self, name, version=None, label=None):
        if name != "fake":
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
            )
        return self.fake

    def status(self, name, version=None, label=None):
        response = get_model_status_pb2.GetModelStatusResponse()
        entry = response.model_version_status.add()
        entry.version, entry.state = 3, get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


@pytest.fixture
def rest():
    server = start_fake_rest()
    yield server
    server.stop()


def start_fake_rest(manager=None, timeout_ms: int = 2000):
    return start_rest_server(
        manager or FakeManager(),
        "127.0.0.1",
        0,
        timeout_ms=timeout_ms,
        monitoring_path="/monitoring/prometheus/metrics",
        serving_metrics=ServingMetrics(),
    )


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


# ----------------------------------------------------------------------------- routes
@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/v1/models/m", Route("status", "m")),
        ("GET", "/v1/models/m/versions/7", Route("status", "m", 7)),
        ("GET", "/v1/models/m/labels/stable", Route("status", "m", None, "stable")),
        ("GET", "/v1/models/m/metadata", Route("metadata", "m")),
        ("GET", "/V1/MODELS/m/versions/2/metadata", Route("metadata", "m", 2)),
        ("GET", "/v1/models/m/METADATA", Route("status", "m")),
        ("POST", "/v1/models/m:predict", Route("predict", "m")),
        ("POST", "/v1/models/m/versions/2:classify", Route("classify", "m", 2)),
        ("POST", "/v1/models/m/labels/canary:regress", Route("regress", "m", None, "canary")),
        ("POST", "/v1/models/my%20model:predict", Route("predict", "my model")),
    ],
)
def test_routes(method, path, route):
    assert parse_route(method, path) == route


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("POST", "/v1/models/m:PREDICT", "Malformed request: POST /v1/models/m:PREDICT"),
        ("POST", "/v1/models/m", "Malformed request: POST /v1/models/m"),
        ("GET", "/v1/models/m:predict", "Malformed request: GET /v1/models/m:predict"),
        ("DELETE", "/v1/models/m", "Malformed request: DELETE /v1/models/m"),
        ("GET", "/v1/models/", "Malformed request: GET /v1/models/"),
        ("GET", "/v1/models", "Missing model name in request."),
        (
            "GET",
            "/v1/models/m/versions/99999999999999999999",
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
    ],
)
def test_route_errors(method, path, message):
    with pytest.raises(ServingError) as caught:
        parse_route(method, path)
    assert (caught.value.message, caught.value.http_status) == (message, 400)


# ----------------------------------------------------------------------------- lifecycle
def test_serves_and_reports_its_port(rest):
    assert rest.port > 0
    reply = requests.post(url(rest, "/v1/models/fake:predict"), json={"instances": [1.5, 2]})
    assert reply.json() == {"predictions": [3.0, 4.0]}
    status = requests.get(url(rest, "/v1/models/fake")).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_busy_port_raises_oserror():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            start_rest_server(FakeManager(), "127.0.0.1", taken.getsockname()[1])


def test_stop_frees_the_port_and_finishes_calls_in_flight():
    server = start_rest_server(FakeManager(), "127.0.0.1", 0, serving_metrics=ServingMetrics())
    port = server.port
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            requests.post, url(server, "/v1/models/fake:predict"), json={"inputs": [-0.5]}
        )
        time.sleep(0.2)
        server.stop()
        assert slow.result(timeout=10).json() == {"outputs": [-1.0]}
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=2)
    server.stop()  # stopping twice is harmless


def test_a_slow_call_does_not_block_others():
    """The held call cannot end before its gate opens: whatever answers first did not wait."""
    manager = FakeManager()
    held = manager.fake
    rest = start_fake_rest(manager, timeout_ms=60_000)  # the held call must not time out
    results = {}

    def slow():
        results["slow"] = requests.post(
            url(rest, "/v1/models/fake:predict"), json={"inputs": [HOLD]}
        ).json()

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert requests.get(url(rest, "/v1/models/fake")).status_code == 200
        fast = requests.post(url(rest, "/v1/models/fake:predict"), json={"inputs": [1.0]}).json()
        assert thread.is_alive() and "slow" not in results  # answered while the other was held
    finally:
        held.gate.set()
        thread.join(timeout=30)
        rest.stop()
    assert fast == {"outputs": [2.0]} and results["slow"] == {"outputs": [2 * HOLD]}


def test_timeout_answers_504(rest):
    reply = requests.post(url(rest, "/v1/models/fake:predict"), json={"inputs": [-3.0]})
    assert (reply.status_code, reply.json()) == (
        504,
        {"error": "Timed out waiting for notification"},
    )


def test_large_bodies_are_accepted():
    values = np.linspace(0, 1, 300_000).tolist()  # several MB of JSON, above aiohttp's 1 MiB
    rest = start_fake_rest(timeout_ms=300_000)  # parsing them on a busy machine takes seconds
    try:
        reply = requests.post(url(rest, "/v1/models/fake:predict"), json={"inputs": values})
    finally:
        rest.stop()
    assert reply.status_code == 200 and len(reply.json()["outputs"]) == 300_000


def test_metrics_route_and_plain_404(rest):
    requests.post(url(rest, "/v1/models/fake:predict"), json={"inputs": [1.0]})
    requests.post(url(rest, "/v1/models/other:predict"), json={"inputs": [1.0]})
    text = requests.get(url(rest, "/monitoring/prometheus/metrics")).text
    assert ':tensorflow:serving:request_count{model_name="fake",status="OK"} 1.0' in text
    assert ':tensorflow:serving:request_count{model_name="other",status="NOT_FOUND"} 1.0' in text
    assert requests.get(url(rest, "/healthz")).status_code == 404


def test_gzip_bombs_inflate_one_at_a_time():
    """Four bombs at once hold one inflated buffer at a time, not four, and that buffer is
    measured a step at a time and refused without being kept (not grown to the cap, or twice it)."""
    import tracemalloc
    import zlib

    from helpers.server.rest import inflate

    limit = 8 * 1024 * 1024
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = compressor.compress(bytes(5 * limit)) + compressor.flush()
    refused = []

    def send() -> None:
        with pytest.raises(ServingError) as caught:
            inflate(bomb, limit)
        refused.append(caught.value.http_status)

    tracemalloc.start()
    try:
        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused == [400] * 4
    assert peak < limit / 2, f"peak {peak / 2**20:.0f} MiB for four {limit / 2**20:.0f} MiB caps"
