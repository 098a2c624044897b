"""helpers.monitoring: what the server counted, read from its Prometheus metrics."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from helpers import client, monitoring

pytest_plugins = ["served_mnist"]


@pytest.fixture(scope="module")
def monitored(served_mnist):
    """A second server on the same model, with the course's monitoring config."""
    from helpers.server.process import start_server

    handle = start_server(
        served_mnist.base_path,
        default_ports=False,
        extra_flags=[monitoring.monitoring_flag()],
        timeout=120,
    )
    yield handle
    handle.stop()


def test_requests_are_counted_by_the_status_the_server_gave(monitored):
    before = monitoring.request_counts(monitored.rest_url)
    with client.open_channel(monitored) as channel:
        signature = client.get_signature(channel)  # metadata calls are not counted: ask it once
        client.predict(channel, np.zeros((2, 28, 28, 1), np.float32), signature=signature)
        with pytest.raises(grpc.RpcError, match="99"):
            client.predict(channel, np.zeros((2, 28, 28, 1)), signature=signature, version=99)
    counted = monitoring.wait_for_requests(monitored.rest_url, before, count=2)
    assert counted == {"OK": 1, "NOT_FOUND": 1}


def test_a_server_without_monitoring_has_no_counts(served_mnist):
    assert monitoring.request_counts(served_mnist.rest_url) is None


def test_counts_that_never_come_time_out(monitored):
    before = monitoring.request_counts(monitored.rest_url)
    with pytest.raises(TimeoutError, match="counted 0 of 1 new requests"):
        monitoring.wait_for_requests(monitored.rest_url, before, timeout=0.3)


def test_new_requests_are_the_growth_by_status():
    before, after = {"OK": 3, "NOT_FOUND": 1}, {"OK": 5, "NOT_FOUND": 1, "DEADLINE_EXCEEDED": 1}
    assert monitoring.new_requests(before, after) == {"OK": 2, "DEADLINE_EXCEEDED": 1}
