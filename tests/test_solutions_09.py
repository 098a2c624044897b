"""Notebook 09's exercise solutions (the warm-up file; a canary on a live embedded server)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import client, config
from helpers.solutions import ex09

pytest_plugins = ["served_mnist"]


def test_warmup_file_holds_one_prediction_log_per_image(tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    path = ex09.write_warmup_file(tmp_path / "1", images, "mnist")
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
        ex09.write_warmup_file(tmp_path / "2", images[:0], "mnist")


@pytest.fixture(scope="module")
def stable_and_candidates(tmp_path_factory):
    """A server on a folder with version 1 untrained, 2 trained and 3 untrained again."""
    from served_mnist import copy_model, trained_version

    from helpers import export
    from helpers.model import build_model
    from helpers.server.process import start_server

    base_path = tmp_path_factory.mktemp("ex09") / "mnist"
    untrained = build_model("mlp")
    export.export_model(untrained, "mnist", 1, base_dir=base_path.parent)
    copy_model(trained_version(config.models_dir() / "client-tests"), base_path, (2,))
    export.export_model(untrained, "mnist", 3, base_dir=base_path.parent)
    handle = start_server(
        base_path,
        extra_flags=["--file_system_poll_wait_seconds=0"],  # only what the config says
        default_ports=False,
        timeout=120,
    )
    channel = client.open_channel(handle.grpc_target)
    yield channel, str(base_path)
    channel.close()
    handle.stop()


def test_canary_first_promotes_a_better_candidate_and_keeps_a_worse_one_out(
    stable_and_candidates,
):
    from helpers.data import load_mnist

    channel, base_path = stable_and_candidates
    mnist = load_mnist("offline", train_limit=64, test_limit=400, verbose=False)
    images, labels = mnist.x_test, mnist.y_test

    better = ex09.canary_first(channel, base_path, 2, images, labels, stable=1)
    assert better.comparison.verdict == "better" and better.promoted
    assert better.failed_calls == 0, better.outcomes
    assert better.outcomes["OK"] > 0 and set(better.answered_by) == {1, 2}
    assert serving(channel) == {2}
    assert answered_by(channel, label="stable") == 2

    worse = ex09.canary_first(channel, base_path, 3, images, labels, stable=2)
    assert worse.comparison.verdict == "worse" and not worse.promoted
    assert worse.failed_calls == 0, worse.outcomes
    assert set(worse.answered_by) == {2}  # the candidate never answered a caller
    assert serving(channel) == {2}
    assert answered_by(channel, label="stable") == 2
    with pytest.raises(ValueError, match="another version than stable"):
        ex09.canary_first(channel, base_path, 2, images, labels, stable=2)


def serving(channel) -> set[int]:
    return {
        row.version for row in client.get_model_status(channel, "mnist") if row.state == "AVAILABLE"
    }


def answered_by(channel, **spec) -> int:
    request = client.make_predict_request(
        np.zeros((1, 28, 28, 1), np.float32), "mnist", "image", **spec
    )
    return client._prediction_stub(channel).Predict(request, timeout=10).model_spec.version.value
