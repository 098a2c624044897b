"""TensorProto <-> NumPy, fast, and the way TF Serving encodes them.

Requests are decoded without TensorFlow's Python helpers: `tensor_content` goes through
`np.frombuffer` (no copy) and typed `*_val` fields through one `np.fromiter`/`np.array` call.
Responses are encoded like TF Serving's default (`Tensor::AsProtoField`, predict_util.cc):
values go in the typed repeated field (`float_val`, `int64_val`, ...), not `tensor_content`.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from helpers.server.errors import invalid_argument

#: DataType enum -> NumPy dtype, for the types a course client can send.
NUMPY_DTYPE: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
    types_pb2.DT_STRING: np.dtype(object),
}

#: NumPy dtype -> DataType enum (the reverse, for responses).
DATA_TYPE: dict[np.dtype, int] = {v: k for k, v in NUMPY_DTYPE.items() if k != types_pb2.DT_STRING}

#: Which repeated field holds each DataType's values (TensorProto's layout).
_VALUE_FIELD: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
    types_pb2.DT_STRING: "string_val",
}


def decode(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    """Decode a request TensorProto; a malformed one fails like TF Serving's `Tensor::FromProto`.

    `alias` only names the input in the error (`tensor parsing error: <alias>`).
    """
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.tensor_shape.unknown_rank or any(s < 0 for s in shape):
        raise invalid_argument(f"tensor parsing error: {alias}")
    dtype = NUMPY_DTYPE.get(proto.dtype)
    if dtype is None:
        return _decode_with_tensorflow(proto, alias)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if proto.tensor_content and proto.dtype != types_pb2.DT_STRING:
        content = proto.tensor_content
        if len(content) != count * dtype.itemsize:
            raise invalid_argument(f"tensor parsing error: {alias}")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    field = _VALUE_FIELD[proto.dtype]
    values = getattr(proto, field)
    if proto.dtype == types_pb2.DT_HALF:
        flat = np.array(values, dtype=np.uint16).view(np.float16)
    elif proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        pairs = np.array(values, dtype=np.float64 if dtype.itemsize == 16 else np.float32)
        flat = (pairs[0::2] + 1j * pairs[1::2]).astype(dtype)
    elif proto.dtype == types_pb2.DT_STRING:
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    else:
        flat = np.array(values, dtype=dtype)
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
        data_type = DATA_TYPE.get(array.dtype)
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
            getattr(proto, _VALUE_FIELD[data_type]).extend(pairs.tolist())
        else:
            getattr(proto, _VALUE_FIELD[data_type]).extend(flat.tolist())
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
