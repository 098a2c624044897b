"""Request TensorProto -> NumPy with TensorFlow's checks; NumPy -> response TensorProto.

The dtype tables and value readers are the course's one codec (`helpers.tensor_codec`), shared
with the client. What this module adds is the server's side of `Tensor::FromProto`
(tensorflow/core/framework/tensor.cc), checked from the shape *before* anything is allocated:

- `TensorShape::IsValid`: at most 254 dimensions, none negative, an element count that fits in
  int64. A proto that fails it, a `tensor_content` whose length is not count x item size, or an
  unknown dtype is refused as TF Serving refuses it: INVALID_ARGUMENT
  `tensor parsing error: <alias>`.
- Typed value fields (`float_val`, ...) are read like `FromProtoField`: extra values are
  ignored, missing ones repeat the last value (zeros when there is none).

Two limits are the embedded server's own, because NumPy and a laptop's memory are not
TensorFlow's: more than 64 dimensions (NumPy's limit), and a tensor that would have to be
*invented* (repeated from a few values) beyond `MAX_FILLED_BYTES`, such as 2**29 floats from one
`float_val`. Both answer INVALID_ARGUMENT with the same prefix and the reason, decided from the
shape alone. Responses are encoded like TF Serving's default (`Tensor::AsProtoField`,
predict_util.cc): values go in the typed repeated field, not `tensor_content`.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from helpers.server.errors import invalid_argument
from helpers.tensor_codec import (
    DTYPE_TO_NUMPY,
    NUMPY_TO_DTYPE,
    VALUE_FIELD,
    shape_proto,
    typed_values,
)

__all__ = [
    "DTYPE_TO_NUMPY",
    "MAX_FILLED_BYTES",
    "NUMPY_TO_DTYPE",
    "decode",
    "dtype_name",
    "encode",
    "shape_proto",
]

#: TensorShape::MaxDimensions() in TensorFlow.
TF_MAX_DIMENSIONS = 254
#: NumPy arrays have at most this many dimensions.
NUMPY_MAX_DIMENSIONS = 64
_INT64_MAX = 2**63 - 1
#: The largest tensor the server builds by repeating the values a request sent (64 MiB).
MAX_FILLED_BYTES = 64 * 2**20


def _parsing_error(alias: str, reason: str = ""):
    """TF Serving's message (saved_model/util.cc GetInputValues), with a reason when it helps."""
    message = f"tensor parsing error: {alias}"
    return invalid_argument(f"{message} ({reason})" if reason else message)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _size_text(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def element_count(proto: tensor_pb2.TensorProto) -> int | None:
    """The shape's element count, or None when TensorShape::IsValid would refuse the shape.

    Works on the proto's integers only (no allocation), overflow checked like TensorFlow's
    MultiplyWithoutOverflow.
    """
    dims = proto.tensor_shape.dim
    if len(dims) > TF_MAX_DIMENSIONS:
        return None
    count = 1
    for dim in dims:
        if dim.size < 0:
            return None
        count *= dim.size
        if count > _INT64_MAX:
            return None
    return count


def decode(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    """Decode a request TensorProto; a malformed one fails like TF Serving's `Tensor::FromProto`.

    `alias` only names the input in the error (`tensor parsing error: <alias>`).
    """
    count = element_count(proto)
    if count is None or proto.dtype == types_pb2.DT_INVALID:
        raise _parsing_error(alias)
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if len(shape) > NUMPY_MAX_DIMENSIONS:
        raise _parsing_error(
            alias,
            f"{len(shape)} dimensions; the embedded server handles at most "
            f"{NUMPY_MAX_DIMENSIONS}, and no model here takes more",
        )
    dtype = DTYPE_TO_NUMPY.get(proto.dtype)
    if dtype is None:
        return _decode_with_tensorflow(proto, alias, count)
    if count == 0:
        return np.empty(shape, dtype=dtype)
    if proto.tensor_content and proto.dtype != types_pb2.DT_STRING:
        content = proto.tensor_content
        if len(content) != count * dtype.itemsize:
            raise _parsing_error(alias)
        flat = np.frombuffer(content, dtype=dtype.newbyteorder("<"))
        return flat.astype(dtype, copy=False).reshape(shape)
    given = len(getattr(proto, VALUE_FIELD[proto.dtype]))
    if proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        given //= 2  # real and imaginary parts are two entries
    if given < count:
        _check_fill(alias, shape, proto, given, count, dtype)
    flat = typed_values(proto, dtype)
    if flat.size >= count:
        return flat[:count].reshape(shape)  # FromProtoField ignores extra values
    # TensorFlow fills the missing tail with the last value given (or zeros when none is).
    out = np.empty(count, dtype=dtype)
    if flat.size:
        out[: flat.size] = flat
        out[flat.size :] = flat[-1]
    else:
        out[:] = b"" if dtype.kind == "O" else 0
    return out.reshape(shape)


def _check_fill(
    alias: str, shape: tuple[int, ...], proto, given: int, count: int, dtype: np.dtype
) -> None:
    """Refuse to invent a huge tensor from a handful of values (decided before allocating)."""
    needed = count * dtype.itemsize
    if needed <= MAX_FILLED_BYTES:
        return
    field = VALUE_FIELD[proto.dtype]
    raise _parsing_error(
        alias,
        f"shape {_shape_text(shape)} needs {count} values but {field} holds {given}; "
        f"repeating them would build {_size_text(needed)}, and the server fills in at most "
        f"{_size_text(MAX_FILLED_BYTES)}: send every value (tensor_content), or fix the shape",
    )


def _decode_with_tensorflow(proto: tensor_pb2.TensorProto, alias: str, count: int) -> np.ndarray:
    """Rare dtypes (bfloat16, quantized...): let TensorFlow decode them."""
    import tensorflow as tf

    try:
        item_size = tf.dtypes.as_dtype(proto.dtype).size
    except TypeError:
        raise _parsing_error(alias) from None
    if not proto.tensor_content and count * max(item_size, 1) > MAX_FILLED_BYTES:
        raise _parsing_error(
            alias,
            f"shape {_shape_text(tuple(d.size for d in proto.tensor_shape.dim))} of "
            f"{types_pb2.DataType.Name(proto.dtype)} would build "
            f"{_size_text(count * max(item_size, 1))} from the values sent",
        )
    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # noqa: BLE001 - any parsing failure is the client's input
        raise _parsing_error(alias) from exc


def encode(
    array: np.ndarray, proto: tensor_pb2.TensorProto | None = None
) -> tensor_pb2.TensorProto:
    """Fill `proto` with `array` as TF Serving's Predict does by default (typed value field)."""
    proto = tensor_pb2.TensorProto() if proto is None else proto
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        proto.dtype = types_pb2.DT_STRING
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()]
        proto.string_val.extend(values)
    else:
        data_type = NUMPY_TO_DTYPE.get(array.dtype)
        if data_type is None:
            import tensorflow as tf

            proto.CopyFrom(tf.make_tensor_proto(array))
            return proto
        proto.dtype = data_type
        flat = array.ravel()
        if data_type == types_pb2.DT_HALF:
            proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
        elif data_type in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
            pairs = np.stack([flat.real, flat.imag], axis=-1).ravel()
            getattr(proto, VALUE_FIELD[data_type]).extend(pairs.tolist())
        else:
            getattr(proto, VALUE_FIELD[data_type]).extend(flat.tolist())
    proto.tensor_shape.CopyFrom(shape_proto(array.shape))
    return proto


def dtype_name(data_type: int) -> str:
    """`DT_FLOAT` -> `float`, as TensorFlow writes type names in messages."""
    return types_pb2.DataType.Name(data_type)[3:].lower()
