"""Hostile and careless REST input: each gets a clear JSON error and the server keeps serving.

The REST server runs in-process over the fake model manager of test_rest_server (no TensorFlow
model, so these are cheap). Every test ends by checking that an ordinary call still works.
Paths go through http.client, which sends them as written (`requests` would resolve `..`).
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import random
import socket
import threading
import time

import pytest
import requests
from test_rest_server import FakeManager

from helpers.server import metrics, rest
from helpers.server.metrics import ServingMetrics
from helpers.server.rest import start_rest_server

PREDICT = "/v1/models/fake:predict"
#: Exact tail of TF Serving's message for a body with both keys (util/json_tensor.cc).
BOTH_KEYS_TAIL = (
    " Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
)


@pytest.fixture
def server():
    handle = start_rest_server(
        FakeManager(),
        "127.0.0.1",
        0,
        timeout_ms=30_000,
        serving_metrics=ServingMetrics(),
        idle_timeout=0.5,
        body_timeout=0.5,
        max_connections=8,
    )
    yield handle
    handle.stop()


@pytest.fixture
def no_tracebacks(caplog):
    """Fails the test if anything logged a traceback (aiohttp, asyncio or the server)."""
    caplog.set_level(logging.DEBUG)
    yield
    with_traceback = [r for r in caplog.records if r.exc_info or r.exc_text]
    assert not with_traceback, [r.getMessage() for r in with_traceback]


def send(server, method: str, path: str, body: bytes = b"", headers=None):
    """(status, headers, body bytes) of one request, path and body sent byte for byte."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def json_error(server, method: str, path: str, body: bytes = b"", headers=None):
    """(status, message) of an error that must be TF Serving's `{"error": ...}` JSON."""
    status, response_headers, data = send(server, method, path, body, headers)
    assert response_headers["Content-Type"] == "application/json", response_headers
    document = json.loads(data.decode("utf-8", "surrogateescape"))
    assert list(document) == ["error"], data[:300]
    return status, document["error"]


def still_serving(server) -> None:
    status, headers, data = send(server, "POST", PREDICT, b'{"inputs": [1.5]}')
    assert (status, json.loads(data)) == (200, {"outputs": [3.0]})
    assert headers["Content-Type"] == "application/json"


def nested(depth: int, leaf: str = "1.0") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


# ----------------------------------------------------------------------------- bodies
def test_invalid_utf8_is_a_json_error(server, no_tracebacks):
    assert json_error(server, "POST", PREDICT, b"\xff\xfe") == (
        400,
        "JSON Parse error: Invalid value. at offset: 0",
    )
    # Bytes that are not UTF-8 inside a string are quoted back as they came (RapidJSON copies).
    status, message = json_error(server, "POST", PREDICT, b'{"inputs": "\xff"}')
    assert (status, message) == (
        400,
        'JSON Value: "\udcff" Type: String is not of expected type: float',
    )
    still_serving(server)


def test_malformed_json(server, no_tracebacks):
    assert json_error(server, "POST", PREDICT, b'{"inputs": [1.0,') == (
        400,
        "JSON Parse error: Invalid value. at offset: 16",
    )
    still_serving(server)


@pytest.mark.parametrize("depth", [65, 500, 10_000])
def test_deeply_nested_arrays(server, no_tracebacks, depth):
    """Parsed without recursion; a tensor deeper than any dtype allows is a parsing error."""
    body = b'{"inputs": ' + nested(depth) + b"}"
    assert json_error(server, "POST", PREDICT, body) == (400, "tensor parsing error: x")
    body = b'{"instances": ' + nested(depth) + b"}"
    assert json_error(server, "POST", PREDICT, body) == (
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "tensor parsing error: x",
    )
    still_serving(server)


def test_deep_nesting_is_quoted_in_256_bytes(server, no_tracebacks):
    body = b'{"instances": 5, "extra": ' + nested(10_000) + b"}"
    status, message = json_error(server, "POST", PREDICT, body)
    assert status == 400
    assert message.startswith('JSON Value: {\n    "instances": 5,\n    "extra": [[[[')
    assert message.endswith(" Excepting 'instances' to be an list/array")
    assert len(message.encode()) < 256 + 100


def test_both_keys_end_with_tf_servings_text_whatever_the_body(server, no_tracebacks):
    big = json.dumps([[0.5] * 1000] * 300)  # about 1.5 MB of JSON
    body = f'{{"instances": {big}, "inputs": {big}}}'.encode()
    status, message = json_error(server, "POST", PREDICT, body)
    assert status == 400
    assert message.startswith('JSON Value: {\n    "instances": [[0.5, 0.5, ')
    assert message.endswith(BOTH_KEYS_TAIL)
    assert len(message) < 256 + len(BOTH_KEYS_TAIL) + 50
    assert "TRUNCATED" not in message


def test_long_messages_are_not_truncated(server, no_tracebacks):
    """TF Serving cuts at 1,024 characters on gRPC only; a REST error is written whole."""
    name = "s" * 3000
    body = json.dumps({"signature_name": name, "inputs": [1.0]}).encode()
    assert json_error(server, "POST", PREDICT, body) == (
        400,
        f'Serving signature name: "{name}" not found in signature def',
    )


def test_huge_integer_literals(server, no_tracebacks):
    body = b'{"inputs": [1' + b"0" * 5000 + b"]}"
    assert json_error(server, "POST", PREDICT, body) == (
        400,
        "JSON Parse error: Number too big to be stored in double. at offset: 12",
    )
    # Past 64 bits RapidJSON reads a double: a float input takes it (2**64, doubled: 2**65).
    status, _, data = send(server, "POST", PREDICT, b'{"inputs": [18446744073709551616]}')
    assert status == 200 and json.loads(data)["outputs"] == [3.68934881e19]
    still_serving(server)


def test_nan_and_infinity_round_trip(server, no_tracebacks):
    status, _, data = send(server, "POST", PREDICT, b'{"inputs": [NaN, Infinity, -Infinity]}')
    assert status == 200
    assert data.decode().replace(" ", "").replace("\n", "") == (
        '{"outputs":[NaN,Infinity,-Infinity]}'
    )


def test_strings_where_floats_go(server, no_tracebacks):
    assert json_error(server, "POST", PREDICT, b'{"instances": [1.0, "2.0"]}') == (
        400,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "2.0" Type: String is not of expected type: float',
    )


def test_ragged_arrays(server, no_tracebacks):
    assert json_error(server, "POST", PREDICT, b'{"inputs": [[1.0, 2.0], [3.0]]}') == (
        400,
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
    )
    assert json_error(server, "POST", PREDICT, b'{"inputs": [[1.0], 2.0]}') == (
        400,
        "JSON Value: 2.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
    )


def test_a_wrong_typed_field_in_a_large_body_is_a_quick_400(server, no_tracebacks):
    values = json.dumps([0.25] * 2_000_000)  # about 12 MB
    body = f'{{"signature_name": 5, "inputs": {values}}}'.encode()
    started = time.perf_counter()
    status, message = json_error(server, "POST", PREDICT, body)
    seconds = time.perf_counter() - started
    print(f"\n{len(body) / 1e6:.0f} MB body with 'signature_name': 5 answered in {seconds:.2f} s")
    assert status == 400
    assert message.startswith('JSON Value: {\n    "signature_name": 5,\n    "inputs": [0.25, ')
    assert message.endswith(
        " not formatted correctly. 'signature_name' key must be a string value."
    )


# ----------------------------------------------------------------------------- paths
@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", "/v1/models/..:predict", 404, "Servable not found for request: Latest(..)"),
        ("POST", "/v1/models/%2e%2e:predict", 404, "Servable not found for request: Latest(..)"),
        ("POST", "/v1/models/%2E%2E%2Fetc:predict", 404, "Servable not found for request: "
         "Latest(../etc)"),
        ("GET", "/v1/models/../../etc/passwd", 400,
         "Malformed request: GET /v1/models/../../etc/passwd"),
        ("POST", "/v1/models/fake/versions/-1:predict", 400,
         "Malformed request: POST /v1/models/fake/versions/-1:predict"),
        ("POST", "/v1/models/fake/versions/" + "9" * 5000 + ":predict", 400,
         "Failed to convert version: " + "9" * 5000 + " to numeric."),
        ("GET", "/v1/models/fake/versions/9223372036854775808", 400,
         "Failed to convert version: 9223372036854775808 to numeric."),
        ("POST", "/v1/models/%ff:predict", 404, "Servable not found for request: Latest(\udcff)"),
    ],
)  # fmt: skip
def test_path_tricks(server, no_tracebacks, method, path, status, message):
    assert json_error(server, method, path, b'{"inputs": [1.0]}') == (status, message)
    still_serving(server)


def test_a_long_version_with_leading_zeros_is_still_a_number(server):
    status, _, _ = send(server, "GET", "/v1/models/fake/versions/" + "0" * 40 + "3")
    assert status == 200


# ----------------------------------------------------------------------------- encodings
def test_gzip_bodies_are_inflated(server, no_tracebacks):
    body = gzip.compress(b'{"inputs": [1.5]}')
    status, _, data = send(server, "POST", PREDICT, body, {"Content-Encoding": "gzip"})
    assert (status, json.loads(data)) == (200, {"outputs": [3.0]})


def test_a_gzip_bomb_is_refused(server, no_tracebacks):
    bomb = gzip.compress(b" " * (rest.MAX_INFLATED_BYTES + 1), compresslevel=9)
    print(f"\ngzip bomb: {len(bomb)} bytes on the wire, {rest.MAX_INFLATED_BYTES + 1} inflated")
    assert json_error(server, "POST", PREDICT, bomb, {"Content-Encoding": "gzip"}) == (
        400,
        f"The gzip request body inflates to more than {rest.MAX_INFLATED_BYTES} bytes; "
        "send it uncompressed or split the request",
    )
    still_serving(server)


def test_broken_gzip_is_refused(server, no_tracebacks):
    status, message = json_error(
        server, "POST", PREDICT, b"not gzip at all", {"Content-Encoding": "gzip"}
    )
    assert status == 400 and message.startswith("Failed to uncompress the gzip request body")
    cut = gzip.compress(b'{"inputs": [1.5]}' * 100)[:-20]
    assert json_error(server, "POST", PREDICT, cut, {"Content-Encoding": "gzip"}) == (
        400,
        "Failed to uncompress the gzip request body: it ends before its last block",
    )


def test_inflate_cap_is_exact():
    data = b"x" * 1000
    assert rest.inflate(gzip.compress(data), limit=1000) == data
    with pytest.raises(Exception, match="more than 999 bytes"):
        rest.inflate(gzip.compress(data), limit=999)


@pytest.mark.parametrize("size", [rest._INFLATE_STEP, 3 * rest._INFLATE_STEP + 5])
def test_bodies_of_many_inflate_steps_come_back_whole(size):
    """Inflated a step at a time: zeros (a little input, much output) and random bytes."""
    for data in (bytes(size), random.Random(size).randbytes(size)):
        assert rest.inflate(gzip.compress(data), limit=size) == data
        with pytest.raises(Exception, match=f"more than {size - 1} bytes"):
            rest.inflate(gzip.compress(data), limit=size - 1)


# ----------------------------------------------------------------------------- connections
def raw_connection(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails on the 30 s timeout)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:  # closed before reading what was sent: a reset, not a FIN
        pass
    return received


def test_half_sent_headers_are_timed_out(server, no_tracebacks):
    with raw_connection(server) as sock:
        sock.sendall(b"POST /v1/models/fake:predict HTTP/1.1\r\nHost: x\r\nContent-Le")
        assert closed_by_server(sock) == b""
    still_serving(server)


def test_idle_connections_are_closed(server, no_tracebacks):
    with raw_connection(server) as sock:
        assert closed_by_server(sock) == b""


def test_a_half_sent_body_is_answered_408_and_closed(server, no_tracebacks):
    with raw_connection(server) as sock:
        sock.sendall(
            b"POST /v1/models/fake:predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"inputs": ['
        )
        reply = closed_by_server(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Content-Type: application/json\r\n" in head
    assert json.loads(body) == {"error": "Timed out reading the request body after 0.5 s"}
    still_serving(server)


def test_connections_beyond_the_limit_are_closed_and_the_port_recovers(server, no_tracebacks):
    held = [raw_connection(server) for _ in range(8)]
    try:
        deadline = time.monotonic() + 30
        while len(server._runner.server.connections) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        with raw_connection(server) as extra:
            assert closed_by_server(extra) == b""
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 30
    while server._runner.server.connections and time.monotonic() < deadline:
        time.sleep(0.01)  # the server notices the closed connections
    still_serving(server)


def test_garbage_bytes_do_not_hurt(server, no_tracebacks):
    for garbage in (b"\x00\xff\x13garbage\r\n\r\n", b"GET /\xff\xfe HTTP/9.9\r\n\r\n"):
        with raw_connection(server) as sock:
            sock.sendall(garbage)
            closed_by_server(sock)
    still_serving(server)


def test_large_bodies_leave_other_callers_served(server):
    """A 12 MB predict parses in a worker thread; small calls meanwhile are all answered."""
    body = json.dumps({"inputs": [0.5] * 2_000_000}).encode()
    done = threading.Event()
    latencies: list[float] = []

    def big() -> None:
        try:
            status, _, _ = send(server, "POST", PREDICT, body)
            assert status == 200
        finally:
            done.set()

    thread = threading.Thread(target=big)
    thread.start()
    while not done.is_set():
        started = time.perf_counter()
        still_serving(server)
        latencies.append(time.perf_counter() - started)
    thread.join()
    latencies.sort()
    print(
        f"\n{len(latencies)} small calls during a {len(body) / 1e6:.0f} MB predict: "
        f"median {latencies[len(latencies) // 2] * 1000:.1f} ms, "
        f"99th percentile {latencies[len(latencies) * 99 // 100] * 1000:.0f} ms, "
        f"slowest {latencies[-1] * 1000:.0f} ms"
    )


# ----------------------------------------------------------------------------- metrics
class NamedManager(FakeManager):
    def model_names(self):
        return ["fake"]


def test_unknown_model_names_share_one_metrics_series():
    serving_metrics = ServingMetrics()
    handle = start_rest_server(
        NamedManager(),
        "127.0.0.1",
        0,
        monitoring_path="/metrics",
        serving_metrics=serving_metrics,
    )
    try:
        with requests.Session() as session:
            for index in range(300):
                session.post(f"http://127.0.0.1:{handle.port}/v1/models/m{index}:predict", data="{")
            session.post(f"http://127.0.0.1:{handle.port}{PREDICT}", data='{"inputs": [1.0]}')
            text = session.get(f"http://127.0.0.1:{handle.port}/metrics").text
    finally:
        handle.stop()
    assert f'model_name="{metrics.UNKNOWN_MODEL_LABEL}",status="INVALID_ARGUMENT"}} 300.0' in text
    assert 'model_name="fake",status="OK"} 1.0' in text
    assert 'model_name="m1"' not in text


def test_without_a_model_list_labels_are_capped():
    serving_metrics = ServingMetrics()
    for index in range(metrics.MAX_MODEL_LABELS + 50):
        serving_metrics.record_request(f"m{index}", "predict", "REST", "NOT_FOUND", 0.001)
    text = serving_metrics.render().decode()
    assert text.count("request_count{") == metrics.MAX_MODEL_LABELS + 1
    assert f'model_name="{metrics.UNKNOWN_MODEL_LABEL}",status="NOT_FOUND"}} 50.0' in text
