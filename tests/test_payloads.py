"""Payload sizes of MNIST images in JSON and protobuf, and their encode/decode round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from helpers import payloads
from helpers.client import decode_tensor


def digits(count: int, seed: int = 0) -> np.ndarray:
    """MNIST-like images: float32 (N, 28, 28, 1), mostly paper, values k/255 like real pixels."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(count, 28, 28, 1))
    raw[rng.random(raw.shape) < 0.8] = 0
    return (raw / 255).astype(np.float32)


def test_sizes_of_one_image():
    sizes = payloads.payload_sizes(digits(1))
    assert list(sizes) == list(payloads.ENCODINGS)
    # 784 float32 values are 3,136 bytes; the TensorProto adds a few bytes of dtype and shape.
    assert 784 * 4 < sizes["tensor_content"] < 784 * 4 + 40
    assert 784 < sizes["uint8"] < 784 + 40
    # packed repeated float_val costs the same 4 bytes a value, plus one length prefix
    assert abs(sizes["float_val"] - sizes["tensor_content"]) <= 4
    assert sizes["json"] > sizes["json_uint8"] > sizes["tensor_content"] > sizes["uint8"]


def test_batch_sizes_grow_with_the_batch():
    one = payloads.payload_sizes(digits(1))
    many = payloads.payload_sizes(digits(64))
    assert many["tensor_content"] - 64 * 784 * 4 < 40
    assert many["uint8"] - 64 * 784 < 40
    assert many["json"] > 50 * one["json"]


def test_json_is_tf_serving_row_format():
    body = json.loads(payloads.json_payload(digits(2)))
    assert list(body) == ["instances"]
    assert np.asarray(body["instances"]).shape == (2, 28, 28, 1)
    integers = json.loads(payloads.json_uint8_payload(digits(1)))["instances"]
    assert all(isinstance(v, int) for v in np.asarray(integers).ravel().tolist())


def test_float_val_tensor_fields():
    batch = digits(3)
    proto = payloads.float_val_tensor(batch)
    assert proto.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in proto.tensor_shape.dim] == [3, 28, 28, 1]
    assert len(proto.float_val) == 3 * 784 and not proto.tensor_content
    np.testing.assert_array_equal(decode_tensor(proto), batch)


def test_tensor_content_matches_tensorflow():
    import tensorflow as tf

    batch = digits(2)
    proto = payloads.tensor_content_tensor(batch)
    assert proto.dtype == types_pb2.DT_FLOAT and len(proto.tensor_content) == 2 * 784 * 4
    np.testing.assert_array_equal(tf.make_ndarray(proto), batch)
    assert proto.tensor_content == tf.make_tensor_proto(batch).tensor_content


def test_uint8_tensor_holds_raw_pixels():
    batch = digits(2)
    proto = payloads.uint8_tensor(batch)
    assert proto.dtype == types_pb2.DT_UINT8
    decoded = decode_tensor(proto)
    assert decoded.dtype == np.uint8 and decoded.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(decoded, np.rint(batch * 255).astype(np.uint8))


@pytest.mark.parametrize("encoding", payloads.ENCODINGS)
def test_every_encoding_round_trips(encoding):
    batch = digits(4, seed=1)
    decoded = payloads.decode(payloads.encode(batch, encoding), encoding)
    assert decoded.dtype == np.float32 and decoded.shape == batch.shape
    np.testing.assert_allclose(decoded, batch, atol=1e-7)


@pytest.mark.parametrize("encoding", ["json", "float_val", "tensor_content"])
def test_float_encodings_are_exact_for_any_float32(encoding):
    batch = np.random.default_rng(2).random((2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(
        payloads.decode(payloads.encode(batch, encoding), encoding), batch
    )


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (5, 28, 28), (5, 28, 28, 1)])
def test_accepted_shapes_become_a_batch(shape):
    batch = payloads.as_batch(np.zeros(shape, dtype=np.float64))
    assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[1:] == (28, 28, 1)


@pytest.mark.parametrize(
    ("images", "error", "text"),
    [
        (np.zeros((28, 28), dtype=np.uint8), TypeError, "preprocess"),
        (np.zeros((28, 27)), ValueError, r"got shape \(28, 27\)"),
        (np.zeros((0, 28, 28, 1)), ValueError, "N >= 1"),
        (np.full((28, 28), 2.0), ValueError, r"\[0, 1\]"),
        (np.full((28, 28), np.nan), ValueError, r"\[0, 1\]"),
    ],
)
def test_bad_input_gets_a_clear_error(images, error, text):
    with pytest.raises(error, match=text):
        payloads.payload_sizes(images)


def test_unknown_encoding_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown encoding 'xml'; choose one of json"):
        payloads.encode(digits(1), "xml")


def test_measure_payloads_reports_size_and_time():
    results = payloads.measure_payloads(digits(8), repeats=2)
    assert [r.encoding for r in results] == list(payloads.ENCODINGS)
    by_name = {r.encoding: r for r in results}
    assert by_name["uint8"].bytes_per_image == by_name["uint8"].num_bytes / 8
    assert all(r.batch_size == 8 and r.encode_ms > 0 and r.decode_ms > 0 for r in results)
    assert by_name["tensor_content"].num_bytes == len(
        payloads.tensor_content_tensor(digits(8)).SerializeToString()
    )
    with pytest.raises(ValueError, match="repeats"):
        payloads.measure_payloads(digits(1), repeats=0)


def test_serialized_tensor_parses_back():
    wire = payloads.encode(digits(1), "tensor_content")
    assert tensor_pb2.TensorProto.FromString(wire).tensor_shape.dim[0].size == 1
