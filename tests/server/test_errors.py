"""Every error a client can provoke: TF Serving's exact code and message (reference section 6)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from serving_suite import MNIST, images, own_server_only, predict_request, rpc_error, tensor_proto

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_model(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request(name="nope"), timeout=10)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"


def test_unknown_version(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request(version=77), timeout=10)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Servable not found for request: Specific({MNIST}, 77)"


def test_unknown_label(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request(label="nope"), timeout=10)
    assert error.code() == INVALID
    assert error.details() == "Unrecognized servable version label: nope"


def test_missing_model_spec(predict_stub):
    request = predict_request()
    request.ClearField("model_spec")
    error = rpc_error(predict_stub.Predict, request, timeout=10)
    assert (error.code(), error.details()) == (INVALID, "Missing ModelSpec")


def test_empty_model_name(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request(name=""), timeout=10)
    assert (error.code(), error.details()) == (INVALID, "ModelSpec has no name specified.")


def test_wrong_number_of_inputs(predict_stub):
    request = predict_request({"image": images(), "extra": images()})
    error = rpc_error(predict_stub.Predict, request, timeout=10)
    assert error.code() == INVALID
    assert error.details() == (
        "input size does not match signature: 2!=1 len({extra,image}) != len({image}). "
        "Sent extra: {extra}. Missing but required: {}."
    )


def test_no_inputs(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request({}), timeout=10)
    assert error.code() == INVALID
    assert error.details() == (
        "input size does not match signature: 0!=1 len({}) != len({image}). "
        "Sent extra: {}. Missing but required: {image}."
    )


def test_right_count_wrong_name(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request({"flatten_input": images()}))
    assert error.code() == INVALID
    assert error.details() == (
        "Signature input alias: image(feed name: serving_default_image:0) not found in request "
        "and no default value provided. Inputs expected to be in the request {flatten_input}, "
        "or default input alias set: "
    )


def test_float64_sent_to_float32_input(predict_stub):
    request = predict_request({"image": images().astype(np.float64)})
    error = rpc_error(predict_stub.Predict, request, timeout=10)
    assert (error.code(), error.details()) == (
        INVALID,
        "Expects arg[0] to be float but double is provided",
    )


def test_missing_batch_dimension_fails_in_the_first_op(predict_stub):
    request = predict_request({"image": images()[0]})  # (28, 28, 1): no batch dimension
    error = rpc_error(predict_stub.Predict, request, timeout=10)
    assert error.code() == INVALID
    assert error.details().startswith("Input to reshape is a tensor with 784 values")
    assert "[[" not in error.details() and "\n" not in error.details()


def test_raw_uint8_pixels_fail_with_a_dtype_error(predict_stub):
    request = predict_request()
    request.inputs["image"].CopyFrom(tensor_proto(np.zeros((1, 28, 28, 1), np.int32)))
    error = rpc_error(predict_stub.Predict, request, timeout=10)
    assert (error.code(), error.details()) == (
        INVALID,
        "Expects arg[0] to be float but int32 is provided",
    )


def test_unknown_signature(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request(signature="nope"), timeout=10)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "nope" not found.'


def test_bad_output_filter(predict_stub):
    error = rpc_error(predict_stub.Predict, predict_request(output_filter=("dense_1",)))
    assert error.code() == INVALID
    assert error.details() == (
        "output tensor alias not found in signature: dense_1 Outputs expected to be in the set "
        "{probabilities}."
    )


def test_duplicate_output_filter(predict_stub):
    request = predict_request(output_filter=("probabilities", "probabilities"))
    error = rpc_error(predict_stub.Predict, request, timeout=10)
    assert (error.code(), error.details()) == (
        INVALID,
        "duplicate output tensor alias: probabilities",
    )


def test_malformed_tensor(predict_stub):
    request = predict_request()
    request.inputs["image"].tensor_content = b"\x00\x01\x02"
    error = rpc_error(predict_stub.Predict, request, timeout=10)
    assert (error.code(), error.details()) == (INVALID, "tensor parsing error: image")


def test_metadata_without_field(predict_stub):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MNIST
    error = rpc_error(predict_stub.GetModelMetadata, request, timeout=10)
    assert error.code() == INVALID
    assert error.details() == "GetModelMetadataRequest must specify at least one metadata_field"


def test_metadata_other_field(predict_stub):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def", "x"])
    request.model_spec.name = MNIST
    error = rpc_error(predict_stub.GetModelMetadata, request, timeout=10)
    assert (error.code(), error.details()) == (INVALID, "Metadata field x is not supported")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"version": 77}, f"Could not find version 77 of model {MNIST}"),
        ({"name": "nope"}, "Could not find any versions of model nope"),
    ],
)
def test_model_status_not_found(model_stub, spec, message):
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = spec.get("name", MNIST)
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    error = rpc_error(model_stub.GetModelStatus, request, timeout=10)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, message)


def test_client_deadline(predict_stub):
    own_server_only()
    request = predict_request({"n": np.array(30_000, np.int32)}, name="toy", signature="spin")
    error = rpc_error(predict_stub.Predict, request, timeout=0.02)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Whichever side gives up first words it: the client's gRPC library, or the server, which
    # stops the session run at the same deadline (TF Serving's message, from TensorFlow).
    assert error.details() in ("Deadline Exceeded", "Timed out waiting for notification")


def test_no_server_is_unavailable():
    from helpers.server.process import free_port

    with grpc.insecure_channel(f"localhost:{free_port()}") as channel:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        error = rpc_error(stub.Predict, predict_request(), timeout=5)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "failed to connect to all addresses" in error.details()


def test_long_error_messages_are_truncated(predict_stub):
    own_server_only()
    name = "m" * 1500
    error = rpc_error(predict_stub.Predict, predict_request(name=name), timeout=10)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details().endswith("...TRUNCATED")
    assert len(error.details()) == 1024 + len("...TRUNCATED")


def test_grpc_client_on_the_rest_port(server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    port = server.address.rest_port
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        error = rpc_error(stub.Predict, predict_request(), timeout=10)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Trying to connect an http1.x server" in error.details()
