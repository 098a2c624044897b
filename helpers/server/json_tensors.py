"""JSON <-> NumPy for the REST API, following TF Serving's rules (util/json_tensor.cc).

A client written against the real REST API depends on small rules: which JSON values fit
which dtype, how a ragged list fails, how floats are printed (`0.1`, not `0.100000001`), and
the exact error sentences. They live here, free of HTTP and of models, so they can be unit-tested
on their own; `rest.py` only wires them to the model manager.

Numbers follow RapidJSON, the parser TF Serving uses: `1` is an integer, `1.0` is a double,
integers beyond 64 bits become doubles, and `NaN` / `Infinity` are accepted.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2

from helpers.server import json_document
from helpers.server.errors import ServingError
from helpers.tensor_codec import DTYPE_TO_NUMPY

#: The request keys TF Serving reads.
SIGNATURE_KEY = "signature_name"
INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
CONTEXT_KEY = "context"
EXAMPLES_KEY = "examples"
#: Key of a base64 object, `{"b64": "..."}`, and the suffix of aliases answered that way.
B64_KEY = "b64"
BYTES_SUFFIX = "_bytes"

_INT32 = (-(2**31), 2**31)
_UINT32 = (0, 2**32)
_INT64 = (-(2**63), 2**63)
_UINT64 = (0, 2**64)
#: TensorFlow's limit on dimensions (TensorShape::MaxDimensions); a deeper JSON tensor makes
#: TF Serving's `Tensor::FromProto` fail with "tensor parsing error: <alias>".
MAX_TF_DIMENSIONS = 254
#: NumPy's limit (NPY_MAXDIMS); a JSON tensor deeper than this cannot be held here either.
MAX_NUMPY_DIMENSIONS = 64

#: DataType -> NumPy dtype of the tensor a JSON request becomes (the types JSON can carry).
_NUMPY_DTYPE: dict[int, np.dtype] = {
    data_type: DTYPE_TO_NUMPY[data_type]
    for data_type in (
        types_pb2.DT_FLOAT,
        types_pb2.DT_DOUBLE,
        types_pb2.DT_INT32,
        types_pb2.DT_INT16,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT8,
        types_pb2.DT_INT64,
        types_pb2.DT_UINT32,
        types_pb2.DT_UINT64,
        types_pb2.DT_BOOL,
        types_pb2.DT_STRING,
    )
}
_SMALL_INTS = (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8)


def rest_error(code: grpc.StatusCode, message: str) -> ServingError:
    """An error with its whole message: TF Serving cuts details only on gRPC
    (grpc_status_util.cc); its REST front end writes the whole status message
    (MakeJsonFromStatus)."""
    return ServingError(code, message)


def _invalid(message: str) -> ServingError:
    return rest_error(grpc.StatusCode.INVALID_ARGUMENT, message)


def dtype_name(dtype: int) -> str:
    """TensorFlow's `DataTypeString`: `DT_FLOAT` -> `float`."""
    try:
        return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()
    except ValueError:
        return f"unknown dtype enum ({dtype})"


# --------------------------------------------------------------------------------------------
# Writing JSON the way RapidJSON's PrettyWriter does (4-space indent, single-line arrays inside
# each prediction), so a response is the same text, and the same byte count, as TF Serving's.
# --------------------------------------------------------------------------------------------


class _PrettyWriter:
    """A small RapidJSON `PrettyWriter`: same separators, indentation and single-line mode."""

    def __init__(self) -> None:
        self._out: list[str] = []
        self._levels: list[list] = []  # [in_array, value_count]
        self.single_line_arrays = False

    def text(self) -> str:
        return "".join(self._out)

    def _prefix(self) -> None:
        if not self._levels:
            return
        level = self._levels[-1]
        if level[0]:
            if level[1] > 0:
                self._out.append(", " if self.single_line_arrays else ",")
            if not self.single_line_arrays:
                self._out.append("\n" + "    " * len(self._levels))
        else:
            if level[1] > 0:
                self._out.append(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self._out.append("\n")
            if level[1] % 2 == 0:
                self._out.append("    " * len(self._levels))
        level[1] += 1

    def raw(self, token: str) -> None:
        self._prefix()
        self._out.append(token)

    def string(self, value: str) -> None:
        self.raw(json_document.quote(value))

    def start_object(self) -> None:
        self._prefix()
        self._out.append("{")
        self._levels.append([False, 0])

    def end_object(self) -> None:
        count = self._levels.pop()[1]
        if count:
            self._out.append("\n" + "    " * len(self._levels))
        self._out.append("}")

    def start_array(self) -> None:
        self._prefix()
        self._out.append("[")
        self._levels.append([True, 0])

    def end_array(self) -> None:
        count = self._levels.pop()[1]
        if count and not self.single_line_arrays:
            self._out.append("\n" + "    " * len(self._levels))
        self._out.append("]")

    def array_of(self, tokens: list[str]) -> None:
        """An array of scalar tokens in one step: the text of start_array, raw()..., end_array."""
        self.start_array()
        if tokens:
            if self.single_line_arrays:
                self._out.append(", ".join(tokens))
            else:
                indent = "\n" + "    " * len(self._levels)
                self._out.append(indent + ("," + indent).join(tokens))
            self._levels[-1][1] = len(tokens)
        self.end_array()


def format_decimal(value: float, *, double: bool = False) -> str:
    """TF Serving's `WriteDecimal`: `%g`, then full precision only when `%g` does not round-trip.

    float32 values print as their shortest 6-digit form (`0.1`, not `0.100000001`); whole
    numbers get `.0` so every element of a list reads as a decimal.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    if double:
        text = f"{value:g}"
        if float(text) != value:
            text = f"{value:.17g}"
    else:
        value32 = np.float32(value)
        text = f"{float(value32):g}"
        if np.float32(float(text)) != value32:
            text = f"{float(value32):.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


_SPECIAL_DECIMALS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


#: Elements formatted per NumPy call: each call holds the interpreter, so a large output is done
#: in slices that let other requests' threads run in between.
_TOKEN_SLICE = 1 << 16


def decimal_tokens(array: np.ndarray) -> list[str]:
    """`format_decimal` of every element of a float32/float64 array, in C order, vectorised.

    The same text element by element; a large output costs a fraction of the per-value calls.
    """
    flat = array.reshape(-1)
    texts: list[str] = []
    for start in range(0, flat.size, _TOKEN_SLICE):
        texts.extend(_decimal_slice(flat[start : start + _TOKEN_SLICE]))
    return texts


def _decimal_slice(flat: np.ndarray) -> list[str]:
    numbers = flat.astype(np.float64).tolist()
    texts = [f"{number:g}" for number in numbers]
    with np.errstate(over="ignore", invalid="ignore"):
        parsed = np.array(texts, dtype=np.float64).astype(flat.dtype)
        redo = np.flatnonzero((parsed != flat) & ~np.isnan(flat))
    precision = ".17g" if flat.dtype == np.float64 else ".9g"
    for index in redo.tolist():
        texts[index] = format(numbers[index], precision)
    for index, text in enumerate(texts):
        if "." not in text and "e" not in text:
            texts[index] = _SPECIAL_DECIMALS.get(text) or text + ".0"
    return texts


def _is_rapidjson_int(value: Any) -> bool:
    """An integer literal that RapidJSON keeps as an integer (it fits 64 bits)."""
    return type(value) is int and _INT64[0] <= value < _UINT64[1]


#: TF Serving's JsonValueToDebugString: one line per object member, arrays on one line, cut
#: after 256 bytes (util/json_tensor.cc since 2.18).
json_value_to_string = json_document.debug_string
_json_type = json_document.json_type


def error_json(message: str) -> str:
    """The body of every REST error: `{"error": "<message>"}`, pretty-printed like TF Serving."""
    writer = _PrettyWriter()
    writer.start_object()
    writer.string("error")
    writer.string(message)
    writer.end_object()
    return writer.text()


# --------------------------------------------------------------------------------------------
# Reading requests
# --------------------------------------------------------------------------------------------


def parse_request(body: bytes, timeout: float | None = None, *, dense: bool = False) -> dict:
    """Parse a request body as TF Serving's `ParseJson` does (RapidJSON, iterative), or fail
    with its message: a syntax error, or a document that is not an object. A large body's
    parse is bounded by `timeout` seconds (DEADLINE_EXCEEDED past it). `dense=True`: its
    tensors may come as `json_document.DenseArray`s, which only `predict_inputs` takes."""
    try:
        doc = json_document.parse(body, timeout, dense=dense)
    except json_document.JsonParseError as err:
        raise _invalid(err.message) from None
    except json_document.ParseTimeout as err:
        raise rest_error(grpc.StatusCode.DEADLINE_EXCEEDED, str(err)) from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {json_value_to_string(doc)} Is not object")
    return doc


def signature_name_of(doc: dict) -> str:
    """The optional `signature_name` ("" when absent, meaning `serving_default`)."""
    if SIGNATURE_KEY not in doc:
        return ""
    name = doc[SIGNATURE_KEY]
    if not isinstance(name, str):
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def _type_error(value: Any, dtype: int) -> ServingError:
    return _invalid(
        f"JSON Value: {json_value_to_string(value)} Type: {_json_type(value)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def _is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _decode_b64(value: Any) -> bytes:
    if not _is_b64_object(value):
        raise _invalid(
            f"JSON Value: {json_value_to_string(value)} not formatted correctly for base64 data"
        )
    text = value[B64_KEY].strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


def _convert_leaf(value: Any, dtype: int) -> Any:
    """One JSON scalar -> one Python value of `dtype`, or TF Serving's error."""
    kind = type(value)
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if kind is not float and kind is not int:
            raise _type_error(value, dtype)
        return float(value)  # any number, as GetFloat/GetDouble (no precision check since 2.5)
    if dtype in _SMALL_INTS:
        if kind is not int or not _INT32[0] <= value < _INT32[1]:
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_INT64:
        if kind is not int or not _INT64[0] <= value < _INT64[1]:
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_UINT32:
        if kind is not int or not _UINT32[0] <= value < _UINT32[1]:
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_UINT64:
        if kind is not int or not _UINT64[0] <= value < _UINT64[1]:
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_BOOL:
        if kind is not bool:
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if kind is not str:
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogateescape")
    raise rest_error(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_value_to_string(value)} to type: {dtype_name(dtype)}",
    )


def _dense_shape(value: Any) -> list[int]:
    """TF Serving's `GetDenseTensorShape`: follow the first element of each list."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list) -> None:
    """TF Serving's `FillTensorProto`: every leaf at depth len(shape), every list the right size."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(
                f"JSON Value: {json_value_to_string(value)} found at incorrect level: "
                f"{level + 1} in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(value, dtype)
            out.append(_decode_b64(value))
        else:
            out.append(_convert_leaf(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    if level == rank - 1 and dtype not in (types_pb2.DT_STRING,):
        for item in value:
            if isinstance(item, (list, dict)):
                _fill(item, level + 1, shape, dtype, out)
            else:
                out.append(_convert_leaf(item, dtype))
        return
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(values: list, shape: list[int], dtype: int) -> np.ndarray:
    """Flat checked values -> the NumPy tensor (small ints wrap like TensorFlow's casts)."""
    numpy_dtype = _NUMPY_DTYPE[dtype]
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in _SMALL_INTS:
        array = np.array(values, dtype=np.int64).astype(numpy_dtype)
    else:
        with np.errstate(over="ignore"):  # a double past float32's range becomes inf
            array = np.array(values, dtype=numpy_dtype)
    return array.reshape(shape)


def _fast_array(value: Any, dtype: int, has_booleans: bool) -> np.ndarray | None:
    """A numeric list NumPy converts on its own, when that provably matches the slow checks.

    NumPy silently turns booleans into numbers and integers into doubles, so this path is
    only taken when the body holds no `true`/`false` and every value passes TF's range checks;
    anything else returns None and goes through `_fill`, which reports the exact error.
    """
    if (
        has_booleans
        or dtype not in _NUMPY_DTYPE
        or dtype in (types_pb2.DT_STRING, types_pb2.DT_BOOL)
    ):
        return None
    try:
        array = _as_array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if list(array.shape) != _dense_shape(value):
        return None
    return _cast_checked(array, dtype)


def _cast_checked(array: np.ndarray, dtype: int) -> np.ndarray | None:
    """`array` (what NumPy read from JSON numbers) as `dtype`, or None when a value might not
    pass TF's type and range checks (the slow path then finds the exact error)."""
    if dtype not in _NUMPY_DTYPE or dtype in (types_pb2.DT_STRING, types_pb2.DT_BOOL):
        return None
    if array.dtype.kind == "f":
        if dtype not in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
            return None
    elif array.dtype.kind == "i":
        if array.size and dtype not in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
            low, high = int(array.min()), int(array.max())
            if dtype in _SMALL_INTS and not (_INT32[0] <= low and high < _INT32[1]):
                return None
            elif dtype in (types_pb2.DT_UINT32, types_pb2.DT_UINT64) and low < 0:
                return None
            elif dtype == types_pb2.DT_UINT32 and high >= _UINT32[1]:
                return None
    else:
        return None
    if dtype in _SMALL_INTS:
        return array.astype(np.int64).astype(_NUMPY_DTYPE[dtype])
    with np.errstate(over="ignore"):  # a double past float32's range becomes inf, as in C++
        return array.astype(_NUMPY_DTYPE[dtype])


#: Top-level elements NumPy converts per call: each call holds the interpreter, so a large list
#: is converted in slices that let other requests' threads run in between.
_ARRAY_SLICE = 256


def _as_array(value: list) -> np.ndarray:
    """`np.asarray(value)` of a nested list, converted slice by slice (same result)."""
    if len(value) <= _ARRAY_SLICE:
        return np.asarray(value)
    parts = [np.asarray(value[i : i + _ARRAY_SLICE]) for i in range(0, len(value), _ARRAY_SLICE)]
    if len({part.shape[1:] for part in parts}) != 1:
        raise ValueError("the slices differ in shape: ragged")
    return np.concatenate(parts)


def _tensor_from_value(
    value: Any, dtype: int, has_booleans: bool, alias: str, *, batched: bool = False
) -> tuple[np.ndarray, int]:
    """One JSON tensor (scalar or nested lists) -> (array, number of leaves).

    `batched`: the value is one instance of a row-format request (its tensor gains a dimension).
    """
    shape = _dense_shape(value)
    if len(shape) + batched > MAX_NUMPY_DIMENSIONS:
        # TF Serving fails past 254 dimensions ("tensor parsing error"); NumPy holds 64. The
        # check comes before any recursion, so no depth of nesting can exhaust the stack.
        raise _invalid(f"tensor parsing error: {alias}")
    fast = _fast_array(value, dtype, has_booleans) if isinstance(value, list) else None
    if fast is not None:
        return fast, fast.size
    values: list = []
    _fill(value, 0, shape, dtype, values)
    return _to_array(values, shape, dtype), len(values)


def _status_text(err: ServingError) -> str:
    """`Status::ToString()` of an inner error, as TF Serving nests it in a longer message."""
    return f"{err.code.name}: {err.message}"


def _rows_to_tensors(
    instances: list, input_types: Mapping[str, int], has_booleans: bool
) -> dict[str, np.ndarray]:
    """Row format (`instances`): one list element per batch item, objects when inputs are named."""
    names = sorted(input_types)
    if not isinstance(instances[0], dict) and len(names) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )

    def is_element_object(value: Any) -> bool:
        return isinstance(value, dict) and not _is_b64_object(value)

    if not is_element_object(instances[0]):
        name = names[0]
        fast = _fast_array(instances, input_types[name], has_booleans)
        if fast is not None and fast.ndim >= 1:
            return {name: fast}

    by_name: dict[str, list[np.ndarray]] = {}
    sizes: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def add_item(item: Any, name: str) -> None:
        if name not in input_types:
            raise _invalid(f"JSON object: does not have named input: {name}")
        array, size = _tensor_from_value(item, input_types[name], has_booleans, name, batched=True)
        if name not in sizes:
            sizes[name], shapes[name] = size, array.shape
        elif sizes[name] != size:
            raise _invalid(f"Expecting tensor size: {sizes[name]} but got: {size}")
        elif shapes[name] != array.shape:
            raise _invalid(
                f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(array.shape)}"
            )
        by_name.setdefault(name, []).append(array)

    objects = is_element_object(instances[0])
    for index, element in enumerate(instances):
        if objects:
            if not is_element_object(element):
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            for key, item in element.items():
                try:
                    add_item(item, key)
                except ServingError as err:
                    raise _invalid(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {_status_text(err)}"
                    ) from None
            if set(element) != set(names):
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_value_to_string(element)} must only have keys: {','.join(names)}"
                )
        else:
            if is_element_object(element):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            try:
                add_item(element, names[0])
            except ServingError as err:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {_status_text(err)}"
                ) from None
    return {name: np.stack(arrays) for name, arrays in by_name.items()}


def _shape_text(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _columns_to_tensors(
    inputs: Any, input_types: Mapping[str, int], has_booleans: bool
) -> dict[str, np.ndarray]:
    """Columnar format (`inputs`): one tensor, or an object of named tensors."""
    names = sorted(input_types)
    if not isinstance(inputs, dict) or _is_b64_object(inputs):
        if len(names) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = names[0]
        return {name: _tensor_from_value(inputs, input_types[name], has_booleans, name)[0]}
    tensors = {}
    for name in names:
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor_from_value(inputs[name], input_types[name], has_booleans, name)[0]
    return tensors


def predict_inputs(
    doc: dict, input_types: Mapping[str, int], *, has_booleans: bool = True
) -> tuple[dict[str, np.ndarray], bool]:
    """A parsed predict request -> (input tensors by alias, row_format).

    `input_types` maps each input alias of the signature to its DataType. `has_booleans=False`
    (the body holds no `true`/`false` token) lets numeric lists take NumPy's fast path.
    """
    dense = _dense_inputs(doc, input_types)
    if dense is not None:
        return dense
    doc = json_document.materialize(doc)
    has_instances, has_inputs = INSTANCES_KEY in doc, INPUTS_KEY in doc
    if has_instances and has_inputs:
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} Not formatted correctly expecting only "
            "one of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = doc[INSTANCES_KEY]
        if not isinstance(instances, list):
            raise _invalid(
                f"JSON Value: {json_value_to_string(doc)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise _invalid(
                f"JSON Value: {json_value_to_string(doc)} No values in 'instances' array"
            )
        return _rows_to_tensors(instances, input_types, has_booleans), True
    if has_inputs:
        return _columns_to_tensors(doc[INPUTS_KEY], input_types, has_booleans), False
    raise _invalid("Missing 'inputs' or 'instances' key")


def _dense_inputs(
    doc: dict, input_types: Mapping[str, int]
) -> tuple[dict[str, np.ndarray], bool] | None:
    """The tensors of a large body whose arrays the parser process sent as DenseArrays, when
    every one of them passes TF's checks as it is; None sends the request the ordinary way
    (which finds any error with TF Serving's words)."""
    names = sorted(input_types)
    if (INSTANCES_KEY in doc) == (INPUTS_KEY in doc):
        return None
    row_format = INSTANCES_KEY in doc
    value = doc[INSTANCES_KEY if row_format else INPUTS_KEY]
    if isinstance(value, json_document.DenseArray):
        columns = {names[0]: value} if len(names) == 1 else {}
    elif not row_format and isinstance(value, dict) and set(names) <= set(value):
        columns = {name: value[name] for name in names}
    else:
        return None
    tensors = {}
    for name, column in columns.items():
        if not isinstance(column, json_document.DenseArray):
            return None
        array = _cast_checked(column.array, input_types[name])
        if array is None:
            return None
        tensors[name] = array
    return (tensors, row_format) if tensors else None


# --------------------------------------------------------------------------------------------
# Writing predict responses
# --------------------------------------------------------------------------------------------


def _value_formatter(name: str, array: np.ndarray) -> Callable[[Any], Any]:
    """How each element of an output prints (TF Serving's `AddSingleValueAndAdvance`).

    Returns a JSON token, or `_Base64` for byte strings of an alias ending in `_bytes`.
    """
    kind, dtype = array.dtype.kind, array.dtype
    if dtype == np.float32:
        return lambda v: format_decimal(v)
    if dtype == np.float64:
        return lambda v: format_decimal(v, double=True)
    if dtype in (np.int32, np.int16, np.int8, np.uint8, np.int64, np.uint32, np.uint64):
        return str
    if kind == "b":
        return lambda v: "true" if v else "false"
    if kind in "OSU":
        as_b64 = name.endswith(BYTES_SUFFIX)

        def string(value: Any) -> Any:
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            if as_b64:
                return _Base64(base64.b64encode(data).decode("ascii"))
            return json_document.quote(data.decode("utf-8", "surrogateescape"))

        return string
    tf_name = {"f2": "half", "c8": "complex64", "c16": "complex128", "u2": "uint16"}.get(
        f"{kind}{dtype.itemsize}", str(dtype)
    )
    raise _invalid(f"Failed to write JSON value for tensor type: {tf_name}")


class _Base64(str):
    """A byte string already base64-encoded, written as `{"b64": "..."}`."""


def _write_tensor(
    writer: _PrettyWriter, flat: list, shape: tuple[int, ...], dim: int, offset: int
) -> int:
    """TF Serving's `AddTensorValues`: nested lists from dimension `dim` on; returns new offset."""
    if dim >= len(shape):
        token = flat[offset]
        if isinstance(token, _Base64):
            writer.start_object()
            writer.string(B64_KEY)
            writer.string(str(token))
            writer.end_object()
        else:
            writer.raw(token)
        return offset + 1
    if dim == len(shape) - 1 and not (flat and isinstance(flat[0], _Base64)):
        writer.array_of(flat[offset : offset + shape[dim]])
        return offset + shape[dim]
    writer.start_array()
    for _ in range(shape[dim]):
        offset = _write_tensor(writer, flat, shape, dim + 1, offset)
    writer.end_array()
    return offset


def _formatted(name: str, array: np.ndarray) -> list:
    """Every element of `array`, in C order, as its JSON token."""
    fmt = _value_formatter(name, array)
    if array.dtype in (np.float32, np.float64):
        return decimal_tokens(array)
    return [fmt(v) for v in array.reshape(-1).tolist()]


def predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> str:
    """Output tensors -> TF Serving's response text: `predictions` (rows) or `outputs` (columns).

    Row format: a single output gives one value (or nested list) per instance; several outputs
    give one object per instance. Columnar: the tensor itself, or an object of tensors.
    """
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    writer = _PrettyWriter()
    writer.start_object()
    several = len(names) > 1
    if row_format:
        batch = 0
        for name in names:
            array = arrays[name]
            if array.ndim == 0:
                raise _invalid(f"Tensor name: {name} has no shape information ")
            if array.shape[0] < 1:
                raise _invalid(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
            if batch and batch != array.shape[0]:
                raise _invalid(
                    f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                    f"expecting: {batch}"
                )
            batch = array.shape[0]
        flats = {name: _formatted(name, arrays[name]) for name in names}
        offsets = dict.fromkeys(names, 0)
        writer.string("predictions")
        writer.start_array()
        for _ in range(batch):
            if several:
                writer.start_object()
            writer.single_line_arrays = True
            for name in names:
                if several:
                    writer.string(name)
                offsets[name] = _write_tensor(
                    writer, flats[name], arrays[name].shape, 1, offsets[name]
                )
            writer.single_line_arrays = False
            if several:
                writer.end_object()
        writer.end_array()
    else:
        writer.string("outputs")
        if several:
            writer.start_object()
        for name in names:
            if several:
                writer.string(name)
            _write_tensor(writer, _formatted(name, arrays[name]), arrays[name].shape, 0, 0)
        if several:
            writer.end_object()
    writer.end_object()
    return writer.text()


# --------------------------------------------------------------------------------------------
# Classify and regress: JSON examples -> tensorflow_serving.Input, results -> JSON
# --------------------------------------------------------------------------------------------


def _add_feature_value(value: Any, name: str, feature: Any) -> None:
    """TF Serving's `AddValueToFeature`: the JSON type picks bytes, float or int64."""

    def check_kind(kind: str) -> None:
        current = feature.WhichOneof("kind")
        if current is not None and current != kind:
            names = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
            raise _invalid(
                f"Unexpected element type in feature: {name} expecting type: {names[current]}"
            )

    if (
        value is None
        or isinstance(value, list)
        or (isinstance(value, dict) and not _is_b64_object(value))
    ):
        raise _invalid(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )
    if value is True or value is False:
        check_kind("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        check_kind("bytes_list")
        feature.bytes_list.value.append(_decode_b64(value))
    elif isinstance(value, str):
        check_kind("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogateescape"))
    elif _is_rapidjson_int(value):
        check_kind("int64_list")
        if value >= _INT64[1]:
            raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        feature.int64_list.value.append(value)
    else:
        check_kind("float_list")
        with np.errstate(over="ignore"):  # GetFloat: a double past float32's range is inf
            feature.float_list.value.append(float(np.float32(value)))


def _example_from_json(value: Any, example: Any) -> None:
    """TF Serving's `MakeExampleFromJsonObject`: one JSON object -> one tf.train.Example."""
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        feature.Clear()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)


def examples_input(doc: dict) -> Any:
    """A parsed classify/regress request -> `tensorflow_serving.Input` (with context if given)."""
    from tensorflow_serving.apis import input_pb2

    request_input = input_pb2.Input()
    has_context = CONTEXT_KEY in doc
    if has_context:
        _example_from_json(doc[CONTEXT_KEY], request_input.example_list_with_context.context)
    if EXAMPLES_KEY not in doc:
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} When method is classify, key 'examples' "
            "is expected and was not found"
        )
    examples = doc[EXAMPLES_KEY]
    if not isinstance(examples, list):
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} Expecting 'examples' value to be an "
            "list/array"
        )
    if not examples:
        raise _invalid(
            f"JSON Value: {json_value_to_string(doc)} 'examples' value is an empty array"
        )
    target = (
        request_input.example_list_with_context.examples
        if has_context
        else request_input.example_list.examples
    )
    for value in examples:
        _example_from_json(value, target.add())
    return request_input


def classify_response(result: Any) -> str:
    """A `ClassificationResult` -> `{"results": [[[label, score], ...], ...]}`."""
    if not result.classifications:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    writer = _PrettyWriter()
    writer.start_object()
    writer.string("results")
    writer.start_array()
    for classifications in result.classifications:
        writer.single_line_arrays = True
        writer.start_array()
        for item in classifications.classes:
            writer.start_array()
            writer.string(item.label)
            writer.raw(format_decimal(item.score))
            writer.end_array()
        writer.end_array()
        writer.single_line_arrays = False
    writer.end_array()
    writer.end_object()
    return writer.text()


def regress_response(result: Any) -> str:
    """A `RegressionResult` -> `{"results": [value, ...]}`."""
    if not result.regressions:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    writer = _PrettyWriter()
    writer.start_object()
    writer.string("results")
    writer.single_line_arrays = True
    writer.start_array()
    for regression in result.regressions:
        writer.raw(format_decimal(regression.value))
    writer.end_array()
    writer.end_object()
    return writer.text()
