"""TensorProto <-> NumPy, fast, and the way TF Serving encodes them.

The dtype tables are the client's (helpers.client), so both ends agree on them. Requests are
decoded without TensorFlow's Python helpers: `tensor_content` goes through
`np.frombuffer` (no copy) and typed `*_val` fields through one `np.fromiter`/`np.array` call.
Responses are encoded like TF Serving's default (`Tensor::AsProtoField`, predict_util.cc):
values go in the typed repeated field (`float_val`, `int64_val`, ...), not `tensor_content`.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from helpers.client import DTYPE_TO_NUMPY, NUMPY_TO_DTYPE, VALUE_FIELD, typed_values
from helpers.server.errors import invalid_argument


def decode(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    """Decode a request TensorProto; a malformed one fails like TF Serving's `Tensor::FromProto`.

    `alias` only names the input in the error (`tensor parsing error: <alias>`).
    """
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.tensor_shape.unknown_rank or any(s < 0 for s in shape):
        raise invalid_argument(f"tensor parsing error: {alias}")
    dtype = DTYPE_TO_NUMPY.get(proto.dtype)
    if dtype is None:
        return _decode_with_tensorflow(proto, alias)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if proto.tensor_content and proto.dtype != types_pb2.DT_STRING:
        content = proto.tensor_content
        if len(content) != count * dtype.itemsize:
            raise invalid_argument(f"tensor parsing error: {alias}")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    flat = typed_values(proto, dtype)
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size > count:
        raise invalid_argument(f"tensor parsing error: {alias}")
    # TensorFlow fills the missing tail with the last value given (or zeros when none is).
    out = np.empty(count, dtype=dtype)
    if flat.size:
        out[: flat.size] = flat
        out[flat.size :] = flat[-1]
    else:
        out[:] = b"" if dtype.kind == "O" else 0
    return out.reshape(shape)


def _decode_with_tensorflow(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    """Rare dtypes (bfloat16, quantized...): let TensorFlow decode them."""
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # noqa: BLE001 - any parsing failure is the client's input
        raise invalid_argument(f"tensor parsing error: {alias}") from exc


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


def shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    """A TensorShapeProto for a concrete shape."""
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in shape]
    )


def dtype_name(data_type: int) -> str:
    """`DT_FLOAT` -> `float`, as TensorFlow writes type names in messages."""
    return types_pb2.DataType.Name(data_type)[3:].lower()
