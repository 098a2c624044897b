"""Classify, Regress and MultiInference on tf.Example input (the toy model's signatures)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from serving_suite import MNIST, TOY, own_server_only, rpc_error

pytestmark = pytest.mark.usefixtures("toy_model_served")


@pytest.fixture(scope="module")
def toy_model_served(server):
    own_server_only()  # the toy model is this suite's own


def _input(values, context=None):
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import input_pb2

    def example(x):
        ex = example_pb2.Example()
        if x is not None:
            ex.features.feature["x"].float_list.value.append(x)
        return ex

    request_input = input_pb2.Input()
    if context is None:
        request_input.example_list.examples.extend(example(v) for v in values)
    else:
        request_input.example_list_with_context.context.CopyFrom(example(context))
        request_input.example_list_with_context.examples.extend(example(v) for v in values)
    return request_input


def _request(kind, signature, values, name=TOY):
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    message = {
        "classify": classification_pb2.ClassificationRequest,
        "regress": regression_pb2.RegressionRequest,
    }[kind]()
    message.model_spec.name = name
    message.model_spec.signature_name = signature
    message.input.CopyFrom(_input(values))
    return message


def test_classify_returns_labels_and_scores(predict_stub):
    response = predict_stub.Classify(_request("classify", "classify", [0.0, 2.0]), timeout=10)
    assert response.model_spec.name == TOY
    assert response.model_spec.signature_name == "classify"
    assert response.model_spec.version.value == 1
    first, second = response.result.classifications
    assert [c.label for c in first.classes] == ["neg", "pos"]
    assert [c.score for c in first.classes] == pytest.approx([0.5, 0.5])
    assert second.classes[1].score == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_regress_returns_one_value_per_example(predict_stub):
    response = predict_stub.Regress(_request("regress", "regress", [1.0, -1.0, 0.5]), timeout=10)
    assert [r.value for r in response.result.regressions] == pytest.approx([3.0, -1.0, 2.0])
    assert response.model_spec.signature_name == "regress"


def test_context_features_apply_to_every_example(predict_stub):
    request = _request("regress", "regress", [])
    request.input.CopyFrom(_input([None, None], context=4.0))
    response = predict_stub.Regress(request, timeout=10)
    assert [r.value for r in response.result.regressions] == pytest.approx([9.0, 9.0])


def test_multi_inference_runs_both_heads(predict_stub):
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (
        ("classify", "tensorflow/serving/classify"),
        ("regress", "tensorflow/serving/regress"),
    ):
        task = request.tasks.add()
        task.model_spec.name = TOY
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.CopyFrom(_input([1.0]))
    response = predict_stub.MultiInference(request, timeout=10)
    classification, regression = response.results
    assert classification.model_spec.signature_name == "classify"
    assert [c.label for c in classification.classification_result.classifications[0].classes] == [
        "neg",
        "pos",
    ]
    assert regression.regression_result.regressions[0].value == pytest.approx(3.0)
    assert regression.model_spec.version.value == 1


def test_classify_on_a_predict_signature_is_refused(predict_stub):
    # --enable_signature_method_name_check is off by default, so TF Serving looks at the
    # signature's shape: the MNIST signature has no "inputs" tensor of serialized examples.
    error = rpc_error(predict_stub.Classify, _request("classify", "", [1.0], name=MNIST))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("No classification inputs found in SignatureDef: ")
    assert 'key: "image"' in error.details()


def test_regress_on_a_classify_signature_is_refused(predict_stub):
    error = rpc_error(predict_stub.Regress, _request("regress", "classify", [1.0]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Expected one output Tensor."


def test_unknown_signature_in_classify(predict_stub):
    error = rpc_error(predict_stub.Classify, _request("classify", "nope", [1.0]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "No signature was found with the name: nope"


def test_empty_input_is_refused(predict_stub):
    error = rpc_error(predict_stub.Regress, _request("regress", "regress", []))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


def test_multi_inference_unsupported_method(predict_stub):
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name = TOY
    task.model_spec.signature_name = "serving_default"
    task.method_name = "tensorflow/serving/predict"
    request.input.CopyFrom(_input([1.0]))
    error = rpc_error(predict_stub.MultiInference, request, timeout=10)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == "Unsupported signature method_name: tensorflow/serving/predict"


def test_predict_on_a_classify_signature_runs_it(predict_stub):
    """TF Serving's Predict also accepts classify/regress signatures, fed tensors directly."""
    from serving_suite import predict_request

    example = _input([1.0]).example_list.examples[0].SerializeToString()
    request = predict_request(name=TOY, signature="regress", inputs={})
    request.inputs["inputs"].dtype = 7  # DT_STRING
    request.inputs["inputs"].tensor_shape.dim.add().size = 1
    request.inputs["inputs"].string_val.append(example)
    response = predict_stub.Predict(request, timeout=10)
    assert list(response.outputs["outputs"].float_val) == pytest.approx([3.0])
