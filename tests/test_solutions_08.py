"""Notebook 08's exercise solutions (readiness against a live embedded server)."""

from __future__ import annotations

import datetime

import grpc
import pytest

from helpers import certificates
from helpers.solutions import ex08

pytest_plugins = ["served_mnist"]


@pytest.fixture
def unused_port() -> int:
    from helpers.server.process import free_port

    return free_port()


def test_days_left_counts_down_to_expiry():
    ca = certificates.make_ca()
    left = ex08.days_left(ca.certificate)
    assert 0.9 < left <= 1.0
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
    assert ex08.days_left(ca.certificate, now=later) < 0


def test_is_ready_answers_for_a_served_model_and_not_for_a_missing_one(served_channel):
    assert ex08.is_ready(served_channel, "mnist") is True
    assert ex08.is_ready(served_channel, "mnist", version=1) is True
    assert ex08.is_ready(served_channel, "no_such_model") is False
    assert ex08.is_ready(served_channel, "mnist", version=7) is False


def test_is_ready_raises_when_the_server_is_unreachable(unused_port):
    with grpc.insecure_channel(f"localhost:{unused_port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            ex08.is_ready(channel, "mnist")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


METRICS = """\
# HELP :tensorflow:serving:request_count The total number of requests.
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="mnist",status="OK"} 90
:tensorflow:serving:request_count{model_name="mnist",status="INVALID_ARGUMENT"} 10
:tensorflow:serving:request_count{model_name="other",status="NOT_FOUND"} 5
"""


def test_error_ratio_from_prometheus_text():
    assert ex08.error_ratio(METRICS, "mnist") == pytest.approx(0.1)
    assert ex08.error_ratio(METRICS, "other") == 1.0
    assert ex08.error_ratio(METRICS, "unseen") == 0.0
