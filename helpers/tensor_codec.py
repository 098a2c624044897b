"""TensorProto <-> NumPy with NumPy alone: the one tensor codec of the course.

The gRPC client (`helpers.client`) and the embedded server (`helpers.server.tensors`) both read
and write TensorProtos through these tables and functions, so the two ends cannot disagree on a
dtype or a value field. The module is neutral: it imports neither the client nor the server.

`encode_tensor` packs an array's bytes into `tensor_content` (the fast path); `decode_tensor`
reads `tensor_content` or the typed `float_val`, `int_val`, ... fields, like TensorFlow's
`Tensor::FromProto`. No `tf.make_tensor_proto` / `tf.make_ndarray` is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

__all__ = [
    "DTYPE_TO_NUMPY",
    "NUMPY_TO_DTYPE",
    "VALUE_FIELD",
    "decode_tensor",
    "dtype_name",
    "encode_tensor",
    "shape_proto",
    "typed_values",
]


DTYPE_TO_NUMPY: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
    types_pb2.DT_STRING: np.dtype(object),
}
NUMPY_TO_DTYPE: dict[np.dtype, int] = {
    v: k for k, v in DTYPE_TO_NUMPY.items() if k != types_pb2.DT_STRING
}

# Where a TensorProto keeps its values when `tensor_content` is empty (tensor.proto).
# The embedded server reads and writes TensorProtos with these same tables.
VALUE_FIELD: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
    types_pb2.DT_STRING: "string_val",
}


def dtype_name(dtype_enum: int) -> str:
    """NumPy-style name of a TensorFlow `DataType` enum value, e.g. DT_FLOAT -> "float32"."""
    if dtype_enum == types_pb2.DT_STRING:
        return "string"
    if dtype_enum in DTYPE_TO_NUMPY:
        return DTYPE_TO_NUMPY[dtype_enum].name
    return types_pb2.DataType.Name(dtype_enum).removeprefix("DT_").lower()


def encode_tensor(values: Any, dtype: Any = None) -> tensor_pb2.TensorProto:
    """Pack an array into a `TensorProto` with NumPy alone.

    Numbers travel as raw little-endian bytes in `tensor_content` (one copy, no per-value
    encoding: the fast path TF Serving itself uses); strings and bytes go in `string_val`.
    The array keeps its dtype: float64 stays float64 (cast first if the model wants float32).
    """
    array = np.asarray(values) if dtype is None else np.asarray(values, dtype=dtype)
    proto = tensor_pb2.TensorProto()
    proto.tensor_shape.CopyFrom(shape_proto(array.shape))
    if array.dtype.kind in "SUO":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(
            item.encode("utf-8") if isinstance(item, str) else bytes(item)
            for item in array.reshape(-1).tolist()
        )
        return proto
    native = array.dtype.newbyteorder("=")
    if native not in NUMPY_TO_DTYPE:
        supported = ", ".join(sorted(d.name for d in NUMPY_TO_DTYPE))
        raise TypeError(
            f"Cannot encode an array of dtype {array.dtype}; convert it to one of: {supported}."
        )
    proto.dtype = NUMPY_TO_DTYPE[native]
    proto.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return proto


def decode_tensor(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Turn a `TensorProto` back into a NumPy array, with NumPy alone.

    Reads `tensor_content` when it is set, otherwise the typed value field (`float_val`,
    `int_val`, ...). Like TensorFlow, a typed field shorter than the shape is padded with
    its last value (TF Serving may send one value for a tensor of identical values).
    """
    if proto.dtype not in DTYPE_TO_NUMPY:
        name = types_pb2.DataType.Name(proto.dtype) if proto.dtype else "DT_INVALID"
        raise TypeError(f"Cannot decode a tensor of type {name} with NumPy.")
    dtype = DTYPE_TO_NUMPY[proto.dtype]
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    count = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content:
        flat = np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype)
    else:
        flat = typed_values(proto, dtype)
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size == 0:
        if proto.dtype == types_pb2.DT_STRING:
            return np.full(shape, b"", dtype=object)
        return np.zeros(shape, dtype=dtype)
    if flat.size < count:
        return np.concatenate([flat, np.repeat(flat[-1:], count - flat.size)]).reshape(shape)
    raise ValueError(
        f"The tensor holds {flat.size} values but its shape {shape} needs {count}: "
        "the message is corrupt."
    )


def typed_values(proto: tensor_pb2.TensorProto, dtype: np.dtype) -> np.ndarray:
    """The values of a TensorProto's typed field (`float_val`, ...) as a flat array."""
    values = getattr(proto, VALUE_FIELD[proto.dtype])
    if proto.dtype == types_pb2.DT_STRING:
        return np.array(list(values), dtype=object)
    if proto.dtype == types_pb2.DT_HALF:  # half_val holds the 16-bit patterns as ints
        return np.array(values, dtype=np.uint16).view(np.float16)
    if proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        # (real, imaginary) pairs; an odd last entry is ignored, as TensorFlow does.
        pairs = np.array(values[: len(values) // 2 * 2], dtype=np.float64).reshape(-1, 2)
        return (pairs[:, 0] + 1j * pairs[:, 1]).astype(dtype)
    return np.array(values, dtype=dtype)


def shape_proto(shape: Iterable[int]) -> tensor_shape_pb2.TensorShapeProto:
    """A TensorShapeProto for a concrete shape."""
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(size)) for size in shape]
    )
