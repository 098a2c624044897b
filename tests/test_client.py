"""helpers.client: NumPy-only tensor encoding, input checks, and calls to a live server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from helpers import client

# The served_mnist / served_channel fixtures: a trained model behind an embedded server.
pytest_plugins = ["served_mnist"]

# --------------------------------------------------------------------------------------
# encode_tensor / decode_tensor, checked against TensorFlow's own functions
# --------------------------------------------------------------------------------------

NUMERIC_DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
]
SHAPES = [(), (1,), (3, 4), (2, 28, 28, 1), (0, 10)]


def _sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 100, size=shape)
    if np.dtype(dtype).kind == "c":
        return (values + 1j * rng.integers(0, 100, size=shape)).astype(dtype)
    if np.dtype(dtype) == np.bool_:
        return values % 2 == 0
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_keeps_values_dtype_and_shape(dtype, shape):
    array = _sample(dtype, shape)
    decoded = client.decode_tensor(client.encode_tensor(array))
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.float16]
)
def test_numpy_encoding_matches_tensorflow(dtype):
    import tensorflow as tf

    array = _sample(dtype, (2, 3, 4), seed=1)
    ours = client.encode_tensor(array)
    theirs = tf.make_tensor_proto(array)
    assert ours.dtype == theirs.dtype
    assert ours.tensor_shape == theirs.tensor_shape
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)
    np.testing.assert_array_equal(client.decode_tensor(theirs), array)


@pytest.mark.parametrize(
    ("dtype", "field", "values"),
    [
        (types_pb2.DT_FLOAT, "float_val", [0.5, 1.5, 2.5, 3.5]),
        (types_pb2.DT_DOUBLE, "double_val", [0.25, 1.0, 2.0, 3.0]),
        (types_pb2.DT_INT32, "int_val", [1, -2, 3, 4]),
        (types_pb2.DT_UINT8, "int_val", [0, 7, 255, 9]),
        (types_pb2.DT_INT64, "int64_val", [2**40, -1, 0, 5]),
        (types_pb2.DT_BOOL, "bool_val", [True, False, True, True]),
    ],
)
def test_decode_reads_typed_value_fields(dtype, field, values):
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    getattr(proto, field).extend(values)
    decoded = client.decode_tensor(proto)
    assert decoded.shape == (2, 2)
    np.testing.assert_array_equal(decoded.ravel(), np.array(values, dtype=decoded.dtype))


def test_decode_half_and_complex_fields_like_tensorflow():
    import tensorflow as tf

    for array in (
        np.array([[0.5, -1.25], [3.0, 65504.0]], dtype=np.float16),
        np.array([1 + 2j, -3.5j], dtype=np.complex64),
        np.array([1 + 2j, -3.5j], dtype=np.complex128),
    ):
        proto = client.encode_tensor(array)
        field = {np.float16: "half_val", np.complex64: "scomplex_val"}.get(
            array.dtype.type, "dcomplex_val"
        )
        typed = tensor_pb2.TensorProto(dtype=proto.dtype, tensor_shape=proto.tensor_shape)
        if field == "half_val":
            typed.half_val.extend(array.view(np.uint16).ravel().tolist())
        else:
            typed_values = np.stack([array.real, array.imag], axis=-1).ravel()
            getattr(typed, field).extend(typed_values.tolist())
        np.testing.assert_array_equal(client.decode_tensor(typed), tf.make_ndarray(typed))
        np.testing.assert_array_equal(client.decode_tensor(typed), array)


def test_decode_pads_a_short_typed_field_with_its_last_value_like_tensorflow():
    import tensorflow as tf

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=3)
    proto.float_val.extend([1.0, 7.0])
    np.testing.assert_array_equal(client.decode_tensor(proto), tf.make_ndarray(proto))
    np.testing.assert_array_equal(client.decode_tensor(proto), [[1, 7, 7], [7, 7, 7]])


def test_decode_empty_fields_give_zeros():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64)
    proto.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(client.decode_tensor(proto), np.zeros(3, dtype=np.int64))


def test_strings_round_trip_as_bytes():
    array = np.array([["a", "bé"], ["", "xyz"]])
    decoded = client.decode_tensor(client.encode_tensor(array))
    assert decoded.shape == (2, 2)
    assert decoded.tolist() == [[b"a", "bé".encode()], [b"", b"xyz"]]


def test_encode_keeps_float64_so_the_mistake_stays_visible():
    proto = client.encode_tensor(np.zeros((1, 28, 28, 1)))
    assert proto.dtype == types_pb2.DT_DOUBLE
    assert len(proto.tensor_content) == 28 * 28 * 8


def test_encode_uses_little_endian_bytes_whatever_the_array_order():
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    proto = client.encode_tensor(big_endian)
    assert proto.tensor_content == np.arange(6, dtype="<i4").tobytes()
    np.testing.assert_array_equal(client.decode_tensor(proto), big_endian)
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(client.decode_tensor(client.encode_tensor(fortran)), fortran)


def test_encode_rejects_unsupported_dtypes_with_a_hint():
    with pytest.raises(TypeError, match="convert it to one of: .*float32"):
        client.encode_tensor(np.array(["2024-01-01"], dtype="datetime64[D]"))


def test_decode_rejects_corrupt_and_unknown_tensors():
    proto = client.encode_tensor(np.zeros(4, dtype=np.float32))
    proto.tensor_shape.dim[0].size = 3
    with pytest.raises(ValueError, match="4 values but its shape \\(3,\\) needs 3"):
        client.decode_tensor(proto)
    with pytest.raises(TypeError, match="DT_RESOURCE"):
        client.decode_tensor(tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE))


# --------------------------------------------------------------------------------------
# Requests and input checks (no server needed)
# --------------------------------------------------------------------------------------


def test_make_predict_request_sets_spec_and_input():
    images = np.zeros((2, 28, 28, 1), dtype=np.float32)
    request = client.make_predict_request(images, "mnist", "image", label="stable")
    assert request.model_spec.name == "mnist"
    assert request.model_spec.version_label == "stable"
    assert request.model_spec.signature_name == "serving_default"
    assert not request.model_spec.HasField("version")
    np.testing.assert_array_equal(client.decode_tensor(request.inputs["image"]), images)

    numbered = client.make_predict_request(images, "mnist", "image", version=2)
    assert numbered.model_spec.version.value == 2


def test_make_predict_request_accepts_a_ready_tensor_proto():
    import tensorflow as tf

    proto = tf.make_tensor_proto(np.ones((1, 28, 28, 1), dtype=np.float32))
    request = client.make_predict_request(proto, "mnist", "image")
    assert request.inputs["image"] == proto


def test_version_and_label_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        client.make_model_spec("mnist", version=1, label="stable")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((28, 28), np.uint8), r"add a batch dimension with images\[np.newaxis\]"),
        (np.zeros((28, 28, 1), np.float32), r"add a batch dimension"),
        (np.zeros((2, 27, 28), np.uint8), r"got \(2, 27, 28\)\. Reshape it"),
        (np.zeros((2, 28, 28, 3), np.uint8), r"got \(2, 28, 28, 3\)"),
        (np.zeros((0, 28, 28), np.uint8), r"empty batch"),
        (np.full((1, 28, 28), np.nan), r"NaN"),
    ],
)
def test_prepare_images_explains_bad_shapes_in_one_line(images, message):
    with pytest.raises(ValueError, match=message) as caught:
        client.prepare_images(images)
    assert "\n" not in str(caught.value)


def test_prepare_images_refuses_non_numbers():
    with pytest.raises(TypeError, match="must be numbers"):
        client.prepare_images(np.array([["a"] * 28] * 28)[np.newaxis])


def test_prepare_images_fixes_raw_pixels_and_float64():
    from helpers.data import preprocess

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    expected = preprocess(raw)
    for variant in (raw, raw[..., np.newaxis], raw.reshape(3, 784), raw.astype(np.float64)):
        batch = client.prepare_images(variant)
        assert batch.dtype == np.float32 and batch.shape == (3, 28, 28, 1)
        np.testing.assert_allclose(batch, expected)
    scaled64 = expected.astype(np.float64)  # already in [0, 1]: only the dtype changes
    np.testing.assert_allclose(client.prepare_images(scaled64), expected)
    assert client.prepare_images(scaled64).dtype == np.float32


def test_open_channel_accepts_addresses_and_handles():
    from helpers import config

    address = config.ServerAddress("localhost", 1, 2, embedded=False)
    for target in (None, "localhost:1", address):
        channel = client.open_channel(target, max_receive_bytes=10)
        assert isinstance(channel, grpc.Channel)
        channel.close()
    with pytest.raises(TypeError, match="host:port"):
        client.open_channel(8500)


def test_build_model_config_text_is_what_tf_serving_reads():
    server_config = client.build_model_config(
        "mnist", "/models/mnist", versions=[1, 2], labels={"stable": 1, "canary": 2}
    )
    text = client.model_config_text(server_config)
    assert 'base_path: "/models/mnist"' in text
    assert 'model_platform: "tensorflow"' in text
    assert "versions: 1" in text and "versions: 2" in text
    assert 'key: "stable"' in text and "value: 1" in text
    latest = client.build_model_config("mnist", "/m")
    assert not latest.model_config_list.config[0].HasField("model_version_policy")


def test_wait_until_available_gives_up_on_a_port_nobody_listens_on(unused_port):
    channel = client.open_channel(f"localhost:{unused_port}")
    with pytest.raises(TimeoutError, match="was not AVAILABLE after 0.5 s .*UNAVAILABLE"):
        client.wait_until_available(channel, "mnist", timeout=0.5, poll_interval=0.1)
    channel.close()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------
# Against a live embedded server
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_digits():
    from helpers.data import load_offline_arrays

    *_, x_test, y_test = load_offline_arrays()
    return x_test[:64], y_test[:64]  # raw uint8 pixels, (64, 28, 28, 1)


def test_status_and_readiness(served_channel):
    assert client.wait_until_available(served_channel, "mnist", timeout=30) == 1
    assert client.wait_until_available(served_channel, "mnist", version=1, timeout=30) == 1
    rows = client.get_model_status(served_channel, "mnist")
    assert rows == [client.VersionStatus(1, "AVAILABLE", "OK", "")]


def test_waiting_for_a_version_that_never_comes_times_out(served_channel):
    with pytest.raises(TimeoutError, match="version 7 of model 'mnist' was not AVAILABLE"):
        client.wait_until_available(served_channel, "mnist", version=7, timeout=0.5)


def test_signature_comes_from_metadata(served_channel):
    signature = client.get_signature(served_channel, "mnist")
    assert (signature.name, signature.version) == ("serving_default", 1)
    assert signature.method == "tensorflow/serving/predict"
    assert signature.input == client.TensorSpec(
        "image", "serving_default_image:0", "float32", (None, 28, 28, 1)
    )
    assert signature.output_key == "probabilities"
    assert signature.output.shape == (None, 10)
    with pytest.raises(ValueError, match=r"no signature 'predict'; it has \['serving_default'\]"):
        client.get_signature(served_channel, "mnist", "predict")


def test_predict_matches_the_model_in_process(served_mnist, served_channel, test_digits):
    import tensorflow as tf

    raw, labels = test_digits
    served = client.predict(served_channel, raw, "mnist")
    local = tf.saved_model.load(str(served_mnist.base_path / "1")).signatures["serving_default"]
    expected = local(image=tf.constant(raw.astype(np.float32) / 255))["probabilities"].numpy()
    assert served.shape == (64, 10) and served.dtype == np.float32
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert (served.argmax(axis=1) == labels).mean() > 0.8


def test_predict_fixes_raw_and_float64_pixels_and_splits_batches(served_channel, test_digits):
    raw, _ = test_digits
    signature = client.get_signature(served_channel)
    reference = client.predict(served_channel, raw, signature=signature)
    scaled64 = raw / 255.0  # the classic float64 mistake
    for variant in (scaled64, raw[..., 0], raw.reshape(64, 784), raw.astype(np.float64)):
        np.testing.assert_allclose(
            client.predict(served_channel, variant, signature=signature), reference, atol=1e-6
        )
    pieces = client.predict(served_channel, raw, signature=signature, batch_size=10)
    # Batches of 10, not 64: another summing order, so only the last float32 bits may differ.
    np.testing.assert_allclose(pieces, reference, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        client.predict(served_channel, raw, signature=signature, batch_size=0)


def test_predict_by_version_and_label_errors_come_from_the_server(served_channel, test_digits):
    raw, _ = test_digits
    by_version = client.predict(served_channel, raw[:2], version=1)
    assert by_version.shape == (2, 10)
    with pytest.raises(grpc.RpcError) as caught:
        client.predict(
            served_channel,
            raw[:2],
            signature=client.get_signature(served_channel),
            label="production",
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Unrecognized servable version label: production"
    assert client.describe_rpc_error(caught.value) == (
        "INVALID_ARGUMENT: Unrecognized servable version label: production"
    )


def test_predict_refuses_a_single_image_before_sending(served_channel, test_digits):
    raw, _ = test_digits
    with pytest.raises(ValueError, match="add a batch dimension"):
        client.predict(served_channel, raw[0])


def test_raw_make_predict_request_lets_the_server_judge(served_channel, test_digits):
    raw, _ = test_digits
    stub = client._prediction_stub(served_channel)
    request = client.make_predict_request(raw[:2] / 255.0, "mnist", "image")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Expects arg[0] to be float but double is provided"


def test_small_receive_limit_and_its_fix(served_mnist, test_digits):
    raw, _ = test_digits
    small = client.open_channel(served_mnist.grpc_target, max_receive_bytes=1024)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            client.predict(small, raw)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Received message larger than max" in caught.value.details()
        assert client.predict(small, raw, batch_size=8).shape == (64, 10)
    finally:
        small.close()


def test_reload_config_moves_labels_and_reports_refusals(private_served_mnist):
    base = str(private_served_mnist.base_path)
    labelled = client.build_model_config("mnist", base, versions=[1], labels={"stable": 1})
    with client.open_channel(private_served_mnist.grpc_target) as channel:
        client.reload_config(channel, labelled)
        spec_version = client.get_signatures(channel, "mnist", label="stable")
        assert spec_version["serving_default"].version == 1
        with pytest.raises((client.ReloadError, grpc.RpcError)) as caught:
            client.reload_config(
                channel,
                client.build_model_config("mnist", base, versions=[1], labels={"canary": 5}),
            )
        assert "not currently available" in str(
            caught.value.details() if isinstance(caught.value, grpc.RpcError) else caught.value
        )
        client.reload_config(channel, client.build_model_config("mnist", base))
        assert client.wait_until_available(channel, "mnist", timeout=30) == 1


@pytest.fixture(scope="module")
def served_cnn(tmp_path_factory):
    """The embedded server with an (untrained) CNN: notebook 04's version 2 architecture."""
    from helpers.export import export_model
    from helpers.model import build_model
    from helpers.server.process import start_server

    base = tmp_path_factory.mktemp("cnn")
    export_model(build_model("cnn"), "mnist", 1, base_dir=base)
    handle = start_server(base / "mnist", default_ports=False)
    yield handle
    handle.stop()


def test_a_missing_batch_dimension_is_invalid_argument_for_the_cnn_too(served_cnn):
    """Notebook 05 makes this mistake on purpose, whichever model is served."""
    channel = client.open_channel(served_cnn.grpc_target)
    try:
        request = client.make_predict_request(np.zeros((28, 28, 1), np.float32), "mnist", "image")
        with pytest.raises(grpc.RpcError) as caught:
            client._prediction_stub(channel).Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert served_cnn.is_running()
        assert client.predict(channel, np.zeros((1, 28, 28), np.uint8)).shape == (1, 10)
    finally:
        channel.close()
