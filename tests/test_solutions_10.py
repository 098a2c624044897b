"""Notebook 10's exercise solutions, against real replicas of the embedded server."""

from __future__ import annotations

import json
import socket
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from helpers import client, config, replicas
from helpers.load import CallRecord
from helpers.solutions import ex10

pytest_plugins = ["served_mnist"]


@pytest.fixture(scope="module")
def fleet(served_mnist):
    started = replicas.start_replicas(2, config.MODEL_NAME, served_mnist.base_path, timeout=180)
    yield started
    replicas.stop_replicas(started)


@pytest.fixture(scope="module")
def request_proto():
    return client.make_predict_request(np.zeros((1, 28, 28, 1), np.float32), "mnist", "image")


def test_equal_clients_spread_by_connection_a_busy_one_does_not(fleet, request_proto):
    assert ex10.clients_through_l4(fleet, request_proto, [5, 5, 5, 5]) == [10, 10]
    assert sorted(ex10.clients_through_l4(fleet, request_proto, [20, 2])) == [2, 20]


def test_service_config_deadline_and_retries_on_a_dead_port():
    parsed = json.loads(ex10.predict_service_config(deadline=1.5, max_attempts=3))
    (method,) = parsed["methodConfig"]
    assert method["timeout"] == "1.5s" and method["retryPolicy"]["maxAttempts"] == 3
    with pytest.raises(ValueError, match="positive"):
        ex10.predict_service_config(deadline=0)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.service_config", ex10.predict_service_config(deadline=1.0))],
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = client.make_predict_request(np.zeros((1, 28, 28, 1), np.float32), "mnist", "image")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request)  # no deadline set by the call: the service config's applies
    elapsed = time.monotonic() - started
    channel.close()
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    print(f"{caught.value.code().name} after {elapsed:.2f} s")


def test_latency_summary():
    records = [
        CallRecord(0.0, 0.010, "OK"),
        CallRecord(0.0, 0.030, "OK"),
        CallRecord(0.0, 0.500, "UNAVAILABLE"),
        CallRecord(0.0, 0.100, "OK", kind="batch"),
    ]
    summary = ex10.latency_summary(records)
    assert summary["predict"]["calls"] == 3 and summary["predict"]["errors"] == 1
    assert summary["predict"]["p50_ms"] == pytest.approx(20.0)
    assert summary["batch"] == {"calls": 1, "p50_ms": 100.0, "p99_ms": 100.0, "errors": 0}
