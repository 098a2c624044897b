"""A large REST body's tensors come back from the parser process as arrays (DenseArray).

The parent then holds one buffer instead of millions of Python objects, so other calls are not
stalled while it builds, converts and frees them. The arrays must change nothing a request can
say: every body below is answered exactly as when it is read as plain Python values.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from helpers.server import json_document as jd
from helpers.server import json_tensors as jt
from helpers.server.errors import ServingError

FLOAT = {"x": types_pb2.DT_FLOAT}
A_B = {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_INT64}


def through_the_pipe(body: bytes):
    """The document as the parent gets it from the parser process (packed, pickled, unpacked)."""
    sent = pickle.dumps(jd._pack(jd.parse_here(body)), pickle.HIGHEST_PROTOCOL)
    return jd._unpack(pickle.loads(sent))


@pytest.mark.parametrize(
    "value",
    [[1.5, -0.0, float("nan"), float("inf")], [[1, 2], [3, -(2**63)]], [[[0.25]], [[2e300]]]],
)
def test_lists_of_one_number_kind_become_arrays_and_come_back_exactly(value):
    dense = jd.dense_array(value)
    assert isinstance(dense, jd.DenseArray)
    back = dense.to_list()
    # repr keeps what == hides: -0.0 against 0.0, NaN, and int against float.
    assert repr(back) == repr(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([1, 2.5], "ints and floats mixed: 1 would come back as 1.0"),
        ([1.5, True], "a boolean: NumPy would read it as 1.0"),
        ([1, False], "a boolean: NumPy would read it as 0"),
        ([[1.0], [2.0, 3.0]], "ragged"),
        ([[1.0], 2.0], "a leaf beside a list"),
        ([2**63], "past int64"),
        ([-1, 2**64], "past 64 bits"),
        (["a", "b"], "strings"),
        ([{"b64": "AA=="}], "objects"),
        ([None], "null"),
        ([], "empty"),
        ([[], []], "no leaves"),
        (1.5, "not a list"),
    ],
)
def test_anything_else_stays_python(value, why):
    assert jd.dense_array(value) is None, why


def test_only_the_tensor_members_become_arrays():
    body = (
        b'{"signature_name": "s", "instances": [[1.0, 2.0], [3.0, 4.0]],'
        b' "other": [1.0, 2.0], "inputs": {"a": [1, 2], "b": [1, 2.5]}}'
    )
    doc = through_the_pipe(body)
    assert isinstance(doc["instances"], jd.DenseArray)
    assert isinstance(doc["inputs"]["a"], jd.DenseArray)
    assert doc["inputs"]["b"] == [1, 2.5]
    assert doc["other"] == [1.0, 2.0]
    assert jd.materialize(doc) == jd.parse_here(body)


def test_a_document_with_repeated_keys_is_left_whole():
    body = b'{"instances": [1.0], "instances": [2.0]}'
    doc = through_the_pipe(body)
    assert isinstance(doc, jd.JsonObject)
    assert doc.items() == [("instances", [1.0]), ("instances", [2.0])]


def test_materialize_leaves_deep_documents_alone():
    """Only the top two levels can hold arrays, so no nesting depth can exhaust the stack."""
    deep = b'{"a": ' + b'{"b": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    doc = jd.parse_here(deep)
    assert jd.materialize(doc) is doc


def outcome(doc, types, has_booleans):
    try:
        inputs, row_format = jt.predict_inputs(doc, types, has_booleans=has_booleans)
    except ServingError as err:
        return ("error", err.code, err.message)
    return ("ok", row_format, {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in inputs.items()})


@pytest.mark.parametrize(
    ("body", "types"),
    [
        ('{"instances": [[0.5, 1.5], [2.5, 3.5]]}', FLOAT),
        ('{"instances": [[1, 2], [3, 4]]}', FLOAT),
        ('{"instances": [[1, 2], [3, 4]]}', {"x": types_pb2.DT_INT8}),
        ('{"instances": [[1, 2], [3, 4000000000]]}', {"x": types_pb2.DT_INT32}),
        ('{"instances": [[1, 2], [3, -4]]}', {"x": types_pb2.DT_UINT32}),
        ('{"instances": [[1, 2], [3, 4]]}', {"x": types_pb2.DT_UINT64}),
        ('{"instances": [[0.5, 1.5]]}', {"x": types_pb2.DT_INT64}),
        ('{"instances": [[0.5, 1.5]]}', {"x": types_pb2.DT_STRING}),
        ('{"instances": [[1, 0]]}', {"x": types_pb2.DT_BOOL}),
        ('{"instances": [[1e300]]}', FLOAT),
        ('{"instances": [[1.0, 2.0]]}', {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT}),
        ('{"inputs": [[1.0, 2.0]]}', FLOAT),
        ('{"inputs": [[1.0, 2.0]]}', {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT}),
        ('{"inputs": {"a": [1.0], "b": [2, 3]}}', A_B),
        ('{"inputs": {"a": [1.0], "c": [2]}}', A_B),
        ('{"inputs": {"a": [1.0], "b": [2]}}', {"a": types_pb2.DT_FLOAT}),
        ('{"inputs": {"a": [1.5], "b": [2.5]}}', A_B),
        ('{"instances": [[1.0]], "inputs": [[1.0]]}', FLOAT),
    ],
)
def test_arrays_answer_every_request_as_python_values_do(body, types):
    """Same tensors (dtype, shape, bytes) or the same error, word for word."""
    raw = body.encode()
    booleans = b"true" in raw or b"false" in raw
    plain = outcome(jd.parse_here(raw), types, booleans)
    assert outcome(through_the_pipe(raw), types, booleans) == plain


def test_a_large_body_comes_back_as_one_array_only_when_asked():
    """Through the real parser process: `dense=True` (the predict route) gets a DenseArray;
    every other caller gets the plain document, equal to parsing it here."""
    rows = np.random.default_rng(0).random((700, 28, 28))
    text = '{"instances": ' + str(rows.tolist()) + "}"
    body = text.encode()
    assert len(body) >= jd.PARSE_ELSEWHERE_BYTES
    try:
        dense = jd.parse(body, dense=True)
        assert isinstance(dense["instances"], jd.DenseArray)
        assert dense["instances"].array.shape == (700, 28, 28)
        inputs, row_format = jt.predict_inputs(dense, FLOAT, has_booleans=False)
        np.testing.assert_array_equal(inputs["x"], rows.astype(np.float32))
        assert row_format
        plain = jd.parse(body)
        assert isinstance(plain["instances"], list)
        assert plain == jd.parse_here(body)
    finally:
        jd.stop_parser_process()


def test_a_large_body_with_repeated_keys_parses_in_the_child_too():
    """JsonObject travels by pickle: the child must name it by its module, not `__main__`."""
    filler = "[" + ",".join(["0.5"] * (jd.PARSE_ELSEWHERE_BYTES // 4)) + "]"
    body = ('{"a": 1, "a": 2, "pad": ' + filler + "}").encode()
    try:
        doc = jd.parse(body)
    finally:
        jd.stop_parser_process()
    assert isinstance(doc, jd.JsonObject)
    assert doc["a"] == 1 and [key for key, _ in doc.items()] == ["a", "a", "pad"]
    assert math.isclose(doc["pad"][0], 0.5)


@pytest.mark.parametrize(
    "body",
    [
        b'{"signature_name": 5, "instances": [[1.5, 2.5], [3.5, 4.5]]}',
        b'{"signature_name": 5, "inputs": ' + str([[0.25] * 40] * 40).encode() + b"}",
        b'{"inputs": {"a": ' + str(list(range(300))).encode() + b'}, "x": 1}',
        b'{"instances": [-0.0, 1e300, 2.0]}',
    ],
)
def test_error_messages_quote_arrays_as_they_quote_lists(body):
    """TF Serving quotes the request in some errors (JsonValueToDebugString, 256 bytes)."""
    assert jd.debug_string(through_the_pipe(body)) == jd.debug_string(jd.parse_here(body))
