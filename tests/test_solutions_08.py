"""Notebook 08's exercise solutions (readiness against a live embedded server)."""

from __future__ import annotations

import datetime

import grpc
import numpy as np
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


def test_warmup_file_holds_one_prediction_log_per_image(tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    path = ex08.write_warmup_file(tmp_path / "1", images, "mnist")
    assert path == tmp_path / "1" / "assets.extra" / "tf_serving_warmup_requests"
    records = [
        prediction_log_pb2.PredictionLog.FromString(r)
        for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]
    assert len(records) == 3
    request = records[1].predict_log.request
    assert request.model_spec.name == "mnist"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["image"]), images[1:2])
    with pytest.raises(ValueError, match="1 to 1,000"):
        ex08.write_warmup_file(tmp_path / "2", images[:0], "mnist")
