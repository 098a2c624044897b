"""Unit tests of helpers.server.json_tensors: TF Serving's JSON <-> tensor rules, no server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from helpers.server import json_tensors as jt
from helpers.server.errors import ServingError

FLOAT = {"x": types_pb2.DT_FLOAT}
TWO = {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_INT64}


def error_of(call, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as caught:
        call(*args, **kwargs)
    return caught.value


def inputs_of(body: str, types=FLOAT, **kwargs):
    return jt.predict_inputs(jt.parse_request(body.encode()), types, **kwargs)


# ----------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (1.0, "1.0"),
        (3.14159265, "3.14159274"),
        (1e-5, "1e-05"),
        (123456789.0, "123456792.0"),
        (-0.0, "-0.0"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
    ],
)
def test_float32_prints_like_tf_serving(value, text):
    assert jt.format_decimal(value) == text


def test_double_keeps_full_precision():
    assert jt.format_decimal(0.1, double=True) == "0.1"
    assert jt.format_decimal(3.14159265, double=True) == "3.1415926500000002"


def test_json_value_to_string_is_tf_serving_debug_string():
    """TF Serving 2.18+: objects one member a line, arrays on one line (kFormatSingleLineArray)."""
    assert jt.json_value_to_string({"a": [1, 1e-7, 1e21, 100.0]}) == (
        '{\n    "a": [1, 1e-7, 1e21, 100.0]\n}'
    )
    assert jt.json_value_to_string([]) == "[]"
    assert jt.json_value_to_string("é") == '"é"'


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "JSON Parse error: The document is empty"),
        ("{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (
            '{"a" 1}',
            "JSON Parse error: Missing a colon after a name of object member. at offset: 5",
        ),
        (
            '{"a": [1 2]}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9",
        ),
        (
            '{"a": 1 "b": 2}',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8",
        ),
        ("[1]", "JSON Value: [1] Is not object"),
    ],
)
def test_parse_errors_are_tf_serving_sentences(body, message):
    err = error_of(jt.parse_request, body.encode())
    assert (err.message, err.http_status) == (message, 400)


def test_nan_and_infinity_are_accepted():
    arrays, _ = inputs_of('{"inputs": [NaN, Infinity, -Infinity]}')
    assert np.isnan(arrays["x"][0]) and np.isinf(arrays["x"][1:]).all()


def test_signature_name_must_be_a_string():
    err = error_of(jt.signature_name_of, {"signature_name": 3})
    assert err.message == (
        'JSON Value: {\n    "signature_name": 3\n} not formatted correctly. '
        "'signature_name' key must be a string value."
    )
    assert jt.signature_name_of({}) == ""


# ----------------------------------------------------------------------------- row format
def test_row_format_batches_instances():
    arrays, row = inputs_of('{"instances": [[1, 2.5], [3, 4]]}')
    assert row is True
    assert arrays["x"].dtype == np.float32 and arrays["x"].tolist() == [[1, 2.5], [3, 4]]


def test_row_format_named_inputs():
    body = '{"instances": [{"a": [1.5], "b": 2}, {"a": [2.5], "b": 3}]}'
    arrays, _ = inputs_of(body, TWO)
    assert arrays["a"].shape == (2, 1) and arrays["b"].tolist() == [2, 3]
    assert arrays["b"].dtype == np.int64


@pytest.mark.parametrize(
    ("body", "types", "message"),
    [
        (
            '{"instances": 5}',
            FLOAT,
            "JSON Value: {\n    \"instances\": 5\n} Excepting 'instances' to be an list/array",
        ),
        (
            '{"instances": []}',
            FLOAT,
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            '{"instances": [1], "inputs": [1]}',
            FLOAT,
            'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} '
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        ('{"signature_name": ""}', FLOAT, "Missing 'inputs' or 'instances' key"),
        (
            '{"instances": [[1, 2], [1]]}',
            FLOAT,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 2 but got: 1",
        ),
        (
            '{"instances": [[[1, 2], [1]]]}',
            FLOAT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
        (
            '{"instances": [[1, [2]]]}',
            FLOAT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected level: 1 expected < 1",
        ),
        (
            '{"instances": [[1, 2], [3, 4, 5]]}',
            FLOAT,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 2 but got: 3",
        ),
        (
            '{"instances": [["a"]]}',
            FLOAT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        (
            '{"instances": [1, 2]}',
            TWO,
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        (
            '{"instances": [{"a": [1.0]}]}',
            TWO,
            "Failed to process element: 0 of 'instances' list. JSON object: "
            '{\n    "a": [1.0]\n} must only have keys: a,b',
        ),
        (
            '{"instances": [{"a": 1, "b": 1, "c": 1}]}',
            TWO,
            "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON object: does not have named input: c",
        ),
        (
            '{"instances": [{"a": 1, "b": 1}, [1]]}',
            TWO,
            "Expecting object but got list at item 1 of input list",
        ),
        (
            '{"instances": [{"a": 1, "b": 1.5}]}',
            TWO,
            "Failed to process element: 0 key: b of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 1.5 Type: Number is not of expected type: int64",
        ),
    ],
)
def test_row_format_errors(body, types, message):
    err = error_of(inputs_of, body, types)
    assert (err.message, err.http_status) == (message, 400)


# ----------------------------------------------------------------------------- columnar format
def test_columnar_single_and_named_inputs():
    arrays, row = inputs_of('{"inputs": [[1, 2]]}')
    assert row is False and arrays["x"].shape == (1, 2)
    arrays, _ = inputs_of('{"inputs": {"a": [1.5, 2.5], "b": [[1], [2]], "extra": 1}}', TWO)
    assert arrays["a"].tolist() == [1.5, 2.5] and arrays["b"].shape == (2, 1)
    arrays, _ = inputs_of('{"inputs": 7}')
    assert arrays["x"].shape == () and arrays["x"] == 7


@pytest.mark.parametrize(
    ("body", "types", "message"),
    [
        ('{"inputs": "a"}', FLOAT, 'JSON Value: "a" Type: String is not of expected type: float'),
        ('{"inputs": [true]}', FLOAT, "JSON Value: true Type: True is not of expected type: float"),
        ('{"inputs": [null]}', FLOAT, "JSON Value: null Type: Null is not of expected type: float"),
        (
            '{"inputs": [1, 2]}',
            TWO,
            "inputs is a plain value/list, but expecting an object as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        ('{"inputs": {"a": [1.0]}}', TWO, "Missing named input: b in 'inputs' object."),
        (
            '{"inputs": [[1], 2]}',
            FLOAT,
            "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            '{"inputs": [{"x": 1}]}',
            FLOAT,
            'JSON Value: {\n    "x": 1\n} Type: Object is not of expected type: float',
        ),
    ],
)
def test_columnar_errors(body, types, message):
    err = error_of(inputs_of, body, types)
    assert (err.message, err.http_status) == (message, 400)


@pytest.mark.parametrize(
    ("dtype", "good", "bad", "name"),
    [
        (types_pb2.DT_INT32, [1, -2], [2**31], "int32"),
        (types_pb2.DT_INT32, [1], [1.0], "int32"),
        (types_pb2.DT_INT64, [2**62], [2**63], "int64"),
        (types_pb2.DT_UINT32, [2**32 - 1], [-1], "uint32"),
        (types_pb2.DT_BOOL, [True, False], [1], "bool"),
        (types_pb2.DT_DOUBLE, [0.1, 2**53 - 1], ["x"], "double"),
        (types_pb2.DT_STRING, ["abc"], [1], "string"),
    ],
)
def test_each_dtype_accepts_only_its_json_values(dtype, good, bad, name):
    import json

    arrays, _ = jt.predict_inputs({"inputs": good}, {"v": dtype})
    assert arrays["v"].tolist() == [g.encode() if isinstance(g, str) else g for g in good]
    err = error_of(jt.predict_inputs, {"inputs": bad}, {"v": dtype})
    value = json.dumps(bad[0]) if not isinstance(bad[0], float) else "1.0"
    assert err.message.endswith(f"is not of expected type: {name}")
    assert err.message.startswith(f"JSON Value: {value} Type: ")


def test_unsupported_dtype_is_unimplemented():
    err = error_of(jt.predict_inputs, {"inputs": [1.0]}, {"v": types_pb2.DT_HALF})
    assert (err.message, err.http_status) == ("Conversion of JSON Value: 1.0 to type: half", 501)


def test_base64_strings():
    doc = {"inputs": [{"b64": "aGk="}, "plain"]}
    arrays, _ = jt.predict_inputs(doc, {"v": types_pb2.DT_STRING})
    assert arrays["v"].tolist() == [b"hi", b"plain"]
    assert (
        error_of(jt.predict_inputs, {"inputs": [{"b64": "!!"}]}, {"v": types_pb2.DT_STRING}).message
        == "Unable to base64 decode"
    )
    assert error_of(
        jt.predict_inputs, {"inputs": [{"b64": "aGk=", "x": 1}]}, {"v": types_pb2.DT_STRING}
    ).message.endswith("not formatted correctly for base64 data")


def test_fast_and_slow_paths_agree():
    body = '{"instances": [[0.25, 1, 3.5], [4, 5, 6.125]]}'
    fast, _ = inputs_of(body, has_booleans=False)
    slow, _ = inputs_of(body, has_booleans=True)
    np.testing.assert_array_equal(fast["x"], slow["x"])
    assert fast["x"].dtype == slow["x"].dtype == np.float32
    # Any number goes into a float, rounded as GetFloat does (no precision check since 2.5).
    for has_booleans in (False, True):
        arrays, _ = inputs_of('{"inputs": [16777217, 0.5, 1e39]}', has_booleans=has_booleans)
        assert arrays["x"].tolist() == [16777216.0, 0.5, float("inf")]


def test_a_document_ends_after_its_first_value():
    """kParseStopWhenDoneFlag: what follows the first complete value is not read."""
    assert jt.parse_request(b'{"a": 1} x') == {"a": 1}


# ----------------------------------------------------------------------------- responses
def test_row_response_single_output_is_a_list_per_instance():
    text = jt.predict_response({"y": np.array([[0.1, 0.2], [0.3, 1.0]], np.float32)}, True)
    assert text == '{\n    "predictions": [[0.1, 0.2], [0.3, 1.0]\n    ]\n}'


def test_row_response_several_outputs_are_objects():
    import json

    outputs = {
        "p": np.array([[0.5], [0.25]], np.float32),
        "k_bytes": np.array([b"a", b"b"], object),
    }
    doc = json.loads(jt.predict_response(outputs, True))
    assert doc == {
        "predictions": [
            {"k_bytes": {"b64": "YQ=="}, "p": [0.5]},
            {"k_bytes": {"b64": "Yg=="}, "p": [0.25]},
        ]
    }


def test_columnar_response():
    import json

    one = jt.predict_response({"y": np.array([1, 2], np.int64)}, False)
    assert one == '{\n    "outputs": [\n        1,\n        2\n    ]\n}'
    several = json.loads(
        jt.predict_response({"y": np.array([True]), "s": np.array([b"t"], object)}, False)
    )
    assert several == {"outputs": {"s": ["t"], "y": [True]}}


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({}, "Cannot convert empty tensor map to JSON"),
        ({"y": np.float32(1)}, "Tensor name: y has no shape information "),
        ({"y": np.zeros((0, 2), np.float32)}, "Tensor name: y has invalid batch size: 0"),
        (
            {"a": np.zeros(3, np.float32), "b": np.zeros(2, np.float32)},
            "Tensor name: b has inconsistent batch size: 2 expecting: 3",
        ),
        ({"y": np.zeros(2, np.float16)}, "Failed to write JSON value for tensor type: half"),
    ],
)
def test_row_response_errors(outputs, message):
    assert error_of(jt.predict_response, outputs, True).message == message


def test_error_body():
    assert jt.error_json('bad "x"') == '{\n    "error": "bad \\"x\\""\n}'


# ----------------------------------------------------------------------------- classify / regress
def test_examples_become_tf_examples():
    doc = {"context": {"c": "shared"}, "examples": [{"x": 1.5, "n": [1, 2], "b": {"b64": "aGk="}}]}
    request_input = jt.examples_input(doc)
    example = request_input.example_list_with_context.examples[0]
    assert list(example.features.feature["x"].float_list.value) == [1.5]
    assert list(example.features.feature["n"].int64_list.value) == [1, 2]
    assert list(example.features.feature["b"].bytes_list.value) == [b"hi"]
    context = request_input.example_list_with_context.context
    assert list(context.features.feature["c"].bytes_list.value) == [b"shared"]
    plain = jt.examples_input({"examples": [{"x": True}]})
    assert list(plain.example_list.examples[0].features.feature["x"].int64_list.value) == [1]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {},
            "JSON Value: {} When method is classify, key 'examples' is expected and was not found",
        ),
        (
            {"examples": 1},
            "JSON Value: {\n    \"examples\": 1\n} Expecting 'examples' value to be an list/array",
        ),
        (
            {"examples": []},
            "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
        ),
        ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
        (
            {"examples": [{"x": [1, 1.5]}]},
            "Unexpected element type in feature: x expecting type: int64",
        ),
        ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
        ({"examples": [{"x": [[1]]}]}, "Feature: x has element with unexpected JSON type: Array"),
        (
            {"examples": [{"x": 2**63}]},
            "Feature: x has uint64_t element. Only int64_t is supported.",
        ),
    ],
)
def test_examples_errors(doc, message):
    assert error_of(jt.examples_input, doc).message == message


def test_classify_and_regress_results():
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    result = classification_pb2.ClassificationResult()
    classes = result.classifications.add().classes
    classes.add(label="neg", score=0.25)
    classes.add(label="pos", score=0.75)
    assert jt.classify_response(result) == (
        '{\n    "results": [[["neg", 0.25], ["pos", 0.75]]\n    ]\n}'
    )
    regression = regression_pb2.RegressionResult()
    regression.regressions.add(value=3.0)
    regression.regressions.add(value=0.1)
    assert jt.regress_response(regression) == '{\n    "results": [3.0, 0.1]\n}'


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_decimals_match_one_by_one(dtype):
    rng = np.random.default_rng(0)
    scales = 10.0 ** rng.integers(-40, 40, 5000)
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-5, 123456789.0, 0.1, 3.14159265, 9e6, 1e21]
    with np.errstate(over="ignore"):
        values = np.concatenate([rng.standard_normal(5000) * scales, special]).astype(dtype)
    one_by_one = [jt.format_decimal(v, double=dtype == np.float64) for v in values.tolist()]
    assert jt.decimal_tokens(values) == one_by_one


def test_long_lists_convert_in_slices_like_one_call():
    rows = [[1, 2]] * 300 + [[0.5, 1.5]] * 300  # ints in the first slices, floats later
    arrays, _ = inputs_of(json.dumps({"inputs": rows}), has_booleans=False)
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (600, 2)
    assert arrays["x"][0].tolist() == [1.0, 2.0] and arrays["x"][-1].tolist() == [0.5, 1.5]
    ragged = [[1.0, 2.0]] * 400 + [[1.0]] * 200  # each slice is even, the whole is ragged
    err = error_of(inputs_of, json.dumps({"inputs": ragged}), has_booleans=False)
    assert err.message == "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
