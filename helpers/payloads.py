"""How many bytes one MNIST image (or a batch) takes on the wire, in each common encoding.

Notebook 01 measures and plots these; notebook 07 comes back to them for gRPC against REST.

| encoding          | what travels                                                    |
|-------------------|-----------------------------------------------------------------|
| `json`            | TF Serving's REST row format, `{"instances": [...]}`, floats    |
| `json_uint8`      | the same JSON with raw 0-255 integers instead of floats         |
| `float_val`       | a TensorProto with every value in the repeated `float_val`      |
| `tensor_content`  | a TensorProto with the float32 bytes in `tensor_content`        |
| `uint8`           | a TensorProto of DT_UINT8 raw pixels in `tensor_content`        |

The NumPy-only TensorProto encode/decode lives in `helpers.client` (`encode_tensor`,
`decode_tensor`); this module only builds the payloads and measures them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from helpers.client import decode_tensor, encode_tensor

#: The encodings this module knows, in the order plots show them.
ENCODINGS = ("json", "json_uint8", "float_val", "tensor_content", "uint8")

IMAGE_SHAPE = (28, 28, 1)


def as_batch(images) -> np.ndarray:
    """Images as the model takes them: float32 (N, 28, 28, 1) in [0, 1].

    Accepts one image (28, 28) or (28, 28, 1), or a batch (N, 28, 28) or (N, 28, 28, 1),
    of floats in [0, 1] (use `helpers.data.preprocess` first for raw 0-255 pixels).
    """
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"expected float pixels in [0, 1], got dtype {array.dtype}; "
            "scale raw pixels with helpers.data.preprocess first"
        )
    if array.shape in ((28, 28), IMAGE_SHAPE):
        array = array.reshape(1, *IMAGE_SHAPE)
    elif array.ndim == 3 and array.shape[1:] == (28, 28):
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[1:] != IMAGE_SHAPE or len(array) == 0:
        raise ValueError(
            f"expected 28x28 images as (28, 28), (28, 28, 1), (N, 28, 28) or (N, 28, 28, 1) "
            f"with N >= 1, got shape {np.asarray(images).shape}"
        )
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("expected pixels in [0, 1]; scale raw pixels with helpers.data.preprocess")
    return array.astype(np.float32, copy=False)


def _raw_pixels(images) -> np.ndarray:
    """The raw 0-255 pixels behind float images in [0, 1], shape kept (N, 28, 28, 1)."""
    return np.rint(as_batch(images) * 255).astype(np.uint8)


def json_payload(images) -> bytes:
    """TF Serving's REST row format: `{"instances": [image, ...]}` with float pixels."""
    return json.dumps({"instances": as_batch(images).tolist()}).encode()


def json_uint8_payload(images) -> bytes:
    """The row format with 0-255 integers: the same image in far fewer characters."""
    return json.dumps({"instances": _raw_pixels(images).tolist()}).encode()


def float_val_tensor(images) -> tensor_pb2.TensorProto:
    """A float32 TensorProto with one `float_val` entry per pixel (TF Serving's reply style)."""
    batch = as_batch(images)
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in batch.shape]
        ),
        float_val=batch.ravel().tolist(),
    )


def tensor_content_tensor(images) -> tensor_pb2.TensorProto:
    """A float32 TensorProto whose pixels are raw bytes in `tensor_content`."""
    return encode_tensor(as_batch(images))


def uint8_tensor(images) -> tensor_pb2.TensorProto:
    """A DT_UINT8 TensorProto of raw 0-255 pixels in `tensor_content` (one byte a pixel).

    The course model takes float32, so a server would have to scale these itself (a model
    can do that inside its exported signature).
    """
    return encode_tensor(_raw_pixels(images))


def _decode_json(payload: bytes) -> np.ndarray:
    return np.asarray(json.loads(payload)["instances"], dtype=np.float32)


def _decode_json_uint8(payload: bytes) -> np.ndarray:
    return np.asarray(json.loads(payload)["instances"], dtype=np.float32) / np.float32(255)


def _decode_tensor(payload: bytes) -> np.ndarray:
    return decode_tensor(tensor_pb2.TensorProto.FromString(payload))


def _decode_uint8(payload: bytes) -> np.ndarray:
    return _decode_tensor(payload).astype(np.float32) / np.float32(255)


#: encoding -> (images -> bytes on the wire, bytes -> float32 images)
_CODECS: dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]] = {
    "json": (json_payload, _decode_json),
    "json_uint8": (json_uint8_payload, _decode_json_uint8),
    "float_val": (lambda x: float_val_tensor(x).SerializeToString(), _decode_tensor),
    "tensor_content": (lambda x: tensor_content_tensor(x).SerializeToString(), _decode_tensor),
    "uint8": (lambda x: uint8_tensor(x).SerializeToString(), _decode_uint8),
}


def _codec(encoding: str):
    try:
        return _CODECS[encoding]
    except KeyError:
        raise ValueError(
            f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}"
        ) from None


def encode(images, encoding: str) -> bytes:
    """The bytes that carry `images` in `encoding` (one of ENCODINGS)."""
    return _codec(encoding)[0](as_batch(images))


def decode(payload: bytes, encoding: str) -> np.ndarray:
    """Read `payload` back as float32 images in [0, 1] (the inverse of `encode`)."""
    return _codec(encoding)[1](payload)


def payload_sizes(images, encodings: Sequence[str] = ENCODINGS) -> dict[str, int]:
    """Bytes on the wire of `images` in each encoding (message bytes, not HTTP or gRPC framing)."""
    batch = as_batch(images)
    return {encoding: len(encode(batch, encoding)) for encoding in encodings}


@dataclass(frozen=True)
class PayloadMeasurement:
    """Size and serialisation cost of one batch in one encoding (times: best of N runs)."""

    encoding: str
    batch_size: int
    num_bytes: int
    encode_ms: float
    decode_ms: float

    @property
    def bytes_per_image(self) -> float:
        return self.num_bytes / self.batch_size


def _best_ms(function: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def measure_payloads(
    images, encodings: Sequence[str] = ENCODINGS, *, repeats: int = 5
) -> list[PayloadMeasurement]:
    """Encode and decode `images` in each encoding; check the round trip; time both ways.

    Times are the best of `repeats` runs on this machine, in milliseconds: compare them
    with each other, not with another computer's.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    batch = as_batch(images)
    expected = _raw_pixels(batch)
    results = []
    for encoding in encodings:
        encode_fn, decode_fn = _codec(encoding)
        payload = encode_fn(batch)
        decoded = decode_fn(payload)
        if not np.array_equal(np.rint(decoded * 255).astype(np.uint8), expected):
            raise AssertionError(f"{encoding}: the decoded images differ from the originals")
        results.append(
            PayloadMeasurement(
                encoding=encoding,
                batch_size=len(batch),
                num_bytes=len(payload),
                encode_ms=_best_ms(lambda f=encode_fn: f(batch), repeats),
                decode_ms=_best_ms(lambda f=decode_fn, p=payload: f(p), repeats),
            )
        )
    return results
