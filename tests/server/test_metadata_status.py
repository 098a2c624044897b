"""GetModelMetadata and GetModelStatus, as TF Serving answers them."""

from __future__ import annotations

from serving_suite import MNIST, TOY, own_server_only


def _metadata(predict_stub, name=MNIST, **spec):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return predict_stub.GetModelMetadata(request, timeout=10)


def test_metadata_is_an_any_wrapping_signature_def_map(predict_stub):
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = _metadata(predict_stub)
    assert list(response.metadata) == ["signature_def"]
    any_value = response.metadata["signature_def"]
    assert any_value.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert any_value.Unpack(signature_map)
    signature = signature_map.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert list(signature.inputs) == ["image"]
    assert [d.size for d in signature.inputs["image"].tensor_shape.dim] == [-1, 28, 28, 1]
    assert list(signature.outputs) == ["probabilities"]


def test_metadata_equals_the_saved_models_signature_defs(predict_stub, model_store):
    own_server_only()
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((model_store / MNIST / "1" / "saved_model.pb").read_bytes())
    expected = dict(saved.meta_graphs[0].signature_def)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    _metadata(predict_stub, version=1).metadata["signature_def"].Unpack(signature_map)
    assert dict(signature_map.signature_def) == expected


def test_metadata_model_spec_has_name_and_version_only(predict_stub):
    own_server_only()
    response = _metadata(predict_stub, version_label="stable")
    assert response.model_spec.name == MNIST
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == ""


def test_status_lists_every_version_newest_first(model_stub):
    own_server_only()
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MNIST
    response = model_stub.GetModelStatus(request, timeout=10)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, available),
        (1, available),
    ]
    assert all(s.status.error_code == 0 for s in response.model_version_status)
    assert all(s.status.error_message == "" for s in response.model_version_status)


def test_status_of_one_version(model_stub):
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TOY if not _external() else MNIST
    if not _external():
        request.model_spec.version.value = 1
    response = model_stub.GetModelStatus(request, timeout=10)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert response.model_version_status[0].state == available


def _external() -> bool:
    from serving_suite import EXTERNAL

    return EXTERNAL
