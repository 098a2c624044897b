"""Predict over gRPC: answers, model_spec echo, version choice, encodings, output_filter."""

from __future__ import annotations

import numpy as np
import pytest
from serving_suite import (
    MNIST,
    images,
    output_array,
    own_server_only,
    predict_request,
    tensor_proto,
)


def test_predict_returns_probabilities_for_each_image(predict_stub):
    response = predict_stub.Predict(predict_request({"image": images(3)}), timeout=10)
    probabilities = output_array(response.outputs["probabilities"])
    assert probabilities.shape == (3, 10)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_response_uses_typed_float_val_like_tf_serving(predict_stub):
    response = predict_stub.Predict(predict_request(), timeout=10)
    proto = response.outputs["probabilities"]
    assert len(proto.float_val) == 10
    assert proto.tensor_content == b""
    assert [d.size for d in proto.tensor_shape.dim] == [1, 10]


def test_response_echoes_model_spec_with_version_and_default_signature(predict_stub):
    own_server_only()  # the main server serves versions 1 and 2; latest is 2
    response = predict_stub.Predict(predict_request(), timeout=10)
    assert response.model_spec.name == MNIST
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 2


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"version": 1}, 1), ({"label": "stable"}, 1), ({"label": "canary"}, 2), ({}, 2)],
)
def test_version_and_label_choose_the_servable(predict_stub, choice, expected):
    own_server_only()
    response = predict_stub.Predict(predict_request(**choice), timeout=10)
    assert response.model_spec.version.value == expected


def test_versions_hold_different_models(predict_stub):
    own_server_only()
    x = {"image": images(4, seed=3)}
    one = output_array(predict_stub.Predict(predict_request(x, version=1)).outputs["probabilities"])
    two = output_array(predict_stub.Predict(predict_request(x, version=2)).outputs["probabilities"])
    assert not np.allclose(one, two)


def test_tensor_content_and_float_val_requests_agree(predict_stub):
    x = images(2, seed=5)
    request = predict_request({"image": x})
    by_content = predict_stub.Predict(request, timeout=10)
    request.inputs["image"].CopyFrom(tensor_proto(x, content=False))
    by_values = predict_stub.Predict(request, timeout=10)
    np.testing.assert_array_equal(
        output_array(by_content.outputs["probabilities"]),
        output_array(by_values.outputs["probabilities"]),
    )


def test_make_tensor_proto_request_works(predict_stub):
    import tensorflow as tf

    request = predict_request()
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images(1), dtype=tf.float32))
    response = predict_stub.Predict(request, timeout=10)
    assert output_array(response.outputs["probabilities"]).shape == (1, 10)


def test_served_answer_equals_in_process_answer(predict_stub, model_store):
    own_server_only()
    import tensorflow as tf

    x = images(5, seed=9)
    loaded = tf.saved_model.load(str(model_store / MNIST / "1"))
    expected = loaded.signatures["serving_default"](image=tf.constant(x))["probabilities"].numpy()
    response = predict_stub.Predict(predict_request({"image": x}, version=1), timeout=10)
    np.testing.assert_allclose(output_array(response.outputs["probabilities"]), expected, rtol=1e-6)


def test_output_filter_keeps_only_the_named_outputs(predict_stub):
    own_server_only()
    request = predict_request(
        {"x": np.array([1.0, 2.0], np.float32)}, name="toy", output_filter=("y",)
    )
    response = predict_stub.Predict(request, timeout=10)
    assert list(response.outputs) == ["y"]
    np.testing.assert_array_equal(output_array(response.outputs["y"]), [3.0, 5.0])


def test_named_signature_and_scalar_input(predict_stub):
    own_server_only()
    request = predict_request({"n": np.array(3, np.int32)}, name="toy", signature="spin")
    response = predict_stub.Predict(request, timeout=10)
    assert response.model_spec.signature_name == "spin"
    assert output_array(response.outputs["s"]).shape == ()


def test_int_val_request_fills_like_tensorflow(predict_stub):
    """One value for a larger shape is repeated, as TensorFlow's Tensor::FromProto does."""
    own_server_only()
    from tensorflow.core.framework import types_pb2

    request = predict_request({"x": np.zeros(3, np.float32)}, name="toy")
    proto = request.inputs["x"]
    proto.ClearField("tensor_content")
    proto.dtype = types_pb2.DT_FLOAT
    proto.float_val.append(4.0)
    response = predict_stub.Predict(request, timeout=10)
    np.testing.assert_array_equal(output_array(response.outputs["y"]), [9.0, 9.0, 9.0])


def test_batch_of_64_images(predict_stub):
    response = predict_stub.Predict(predict_request({"image": images(64)}), timeout=10)
    assert output_array(response.outputs["probabilities"]).shape == (64, 10)
