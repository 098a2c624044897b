"""TF Serving's REST API over HTTP: every route, both request formats, every error row.

The tests talk to a live server with `requests` only, so they run unchanged against the real
TensorFlow Serving: `MODEL_SERVER=localhost:8500:8501 .venv/bin/pytest tests/server`. Tests that
need the suite's own models (two MNIST versions with labels, the toy model, the REST model
below) or a server started with special flags skip, saying why, when the target is external.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from serving_suite import MNIST, TOY, images, output_array, own_server_only, predict_request, write

#: A model made for this file: several inputs and outputs, bytes, every JSON dtype, a slow call.
REST_MODEL = "rest"
#: Timeout of the REST server this file starts (the slow call outlasts it).
TIMEOUT_MS = 300
#: Custom monitoring path of that server (the main server uses the default one).
METRICS_PATH = "/custom/metrics"


def build_rest_model(path: Path) -> Path:
    """A TF1 SavedModel whose signatures exercise the JSON rules end to end.

    - serving_default: a, b float32 [-1, 2] -> total = a + b, product = a * b
    - bytes: payload_bytes string [-1] -> payload_bytes (echo), size int32 [-1]
    - types: i32 int32, i64 int64, flag bool, dbl float64 (all [-1]) -> the same values back
    - ragged_out: x float32 [-1] -> y = x, fixed = [1, 2, 3] (batch sizes disagree)
    - spin: n int32 scalar -> s, after n small matrix products (outlasts the REST timeout)
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    info = v1.saved_model.utils.build_tensor_info
    predict = "tensorflow/serving/predict"
    graph = tf.Graph()
    with graph.as_default():
        a = v1.placeholder(tf.float32, [None, 2], name="a")
        b = v1.placeholder(tf.float32, [None, 2], name="b")
        payload = v1.placeholder(tf.string, [None], name="payload")
        typed = {
            "i32": v1.placeholder(tf.int32, [None], name="i32"),
            "i64": v1.placeholder(tf.int64, [None], name="i64"),
            "flag": v1.placeholder(tf.bool, [None], name="flag"),
            "dbl": v1.placeholder(tf.float64, [None], name="dbl"),
        }
        x = v1.placeholder(tf.float32, [None], name="x")
        n = v1.placeholder(tf.int32, [], name="n")
        matrix = tf.eye(64) * 0.5
        _, spun = tf.while_loop(
            lambda i, m: i < n,
            lambda i, m: (i + 1, tf.matmul(m, matrix) + tf.eye(64)),
            [tf.constant(0), tf.eye(64)],
        )

        def signature(inputs, outputs):
            return v1.saved_model.signature_def_utils.build_signature_def(
                {k: info(v) for k, v in inputs.items()},
                {k: info(v) for k, v in outputs.items()},
                predict,
            )

        signatures = {
            "serving_default": signature(
                {"a": a, "b": b}, {"total": tf.add(a, b), "product": tf.multiply(a, b)}
            ),
            "bytes": signature(
                {"payload_bytes": payload},
                {"payload_bytes": tf.identity(payload), "size": tf.strings.length(payload)},
            ),
            "types": signature(typed, {k: tf.identity(v) for k, v in typed.items()}),
            "ragged_out": signature(
                {"x": x}, {"y": tf.identity(x), "fixed": tf.constant([1.0, 2.0, 3.0])}
            ),
            "spin": signature({"n": n}, {"s": tf.reduce_sum(spun)}),
        }
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
    return path


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory) -> Iterator[object]:
    """An embedded server for the REST model: short REST timeout, custom monitoring path."""
    own_server_only()
    from helpers.server.process import start_server

    folder = tmp_path_factory.mktemp("rest-server")
    build_rest_model(folder / REST_MODEL / "1")
    text = f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}'
    monitoring = write(folder / "monitoring.config", text)
    flags = [f"--monitoring_config_file={monitoring}", f"--rest_api_timeout_in_ms={TIMEOUT_MS}"]
    handle = start_server(folder / REST_MODEL, REST_MODEL, extra_flags=flags, timeout=120)
    yield handle
    handle.stop()


def call(server, method: str, path: str, body=None) -> requests.Response:
    """One HTTP call; `body` is sent as JSON unless it is already bytes/str."""
    data = body if isinstance(body, (bytes, str)) else (None if body is None else json.dumps(body))
    return requests.request(method, server.rest_url + path, data=data, timeout=30)


def ok_json(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def error(response: requests.Response) -> tuple[int, str]:
    """(HTTP status, message) of an error answer, which must be `{"error": "..."}` only."""
    assert response.headers["Content-Type"] == "application/json", response.headers
    body = response.json()
    assert list(body) == ["error"], response.text
    return response.status_code, body["error"]


def mnist_rows(count: int = 2) -> list:
    return images(count).tolist()


# =============================================================================== model status
def test_model_status_lists_versions(server):
    body = ok_json(call(server, "GET", f"/v1/models/{MNIST}"))
    states = body["model_version_status"]
    assert states and all(s["state"] == "AVAILABLE" for s in states)
    assert all(s["status"] == {"error_code": "OK", "error_message": ""} for s in states)
    assert all(isinstance(s["version"], str) for s in states)  # int64 -> JSON string


def test_model_status_of_one_version(server):
    latest = max(
        int(s["version"])
        for s in ok_json(call(server, "GET", f"/v1/models/{MNIST}"))["model_version_status"]
    )
    body = ok_json(call(server, "GET", f"/v1/models/{MNIST}/versions/{latest}"))
    assert [s["version"] for s in body["model_version_status"]] == [str(latest)]


def test_model_status_ignores_a_label_like_tf_serving(server):
    own_server_only()
    everything = ok_json(call(server, "GET", f"/v1/models/{MNIST}"))
    assert ok_json(call(server, "GET", f"/v1/models/{MNIST}/labels/stable")) == everything


# =============================================================================== metadata
def test_metadata_shape_and_field_names(server):
    body = ok_json(call(server, "GET", f"/v1/models/{MNIST}/metadata"))
    assert list(body) == ["model_spec", "metadata"]
    assert body["model_spec"]["name"] == MNIST
    assert body["model_spec"]["signature_name"] == ""
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    image = signature["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    assert image["tensor_shape"]["unknown_rank"] is False
    assert list(signature["outputs"]) == ["probabilities"]


def test_metadata_of_a_version_and_a_label(server):
    own_server_only()
    assert (
        ok_json(call(server, "GET", f"/v1/models/{MNIST}/versions/2/metadata"))["model_spec"][
            "version"
        ]
        == "2"
    )
    assert (
        ok_json(call(server, "GET", f"/v1/models/{MNIST}/labels/stable/metadata"))["model_spec"][
            "version"
        ]
        == "1"
    )


# =============================================================================== predict, MNIST
def test_row_and_columnar_agree_with_grpc(server, predict_stub):
    rows = ok_json(call(server, "POST", f"/v1/models/{MNIST}:predict", {"instances": mnist_rows()}))
    columns = ok_json(call(server, "POST", f"/v1/models/{MNIST}:predict", {"inputs": mnist_rows()}))
    predictions = np.array(rows["predictions"], dtype=np.float32)
    assert predictions.shape == (2, 10)  # one list of 10 probabilities per instance
    np.testing.assert_allclose(predictions, np.array(columns["outputs"]), rtol=1e-6)
    reply = predict_stub.Predict(predict_request({"image": images(2)}), timeout=30)
    np.testing.assert_allclose(predictions, output_array(reply.outputs["probabilities"]), atol=1e-6)


def test_columnar_named_inputs_object(server):
    body = {"signature_name": "serving_default", "inputs": {"image": mnist_rows(1)}}
    outputs = ok_json(call(server, "POST", f"/v1/models/{MNIST}:predict", body))["outputs"]
    assert np.array(outputs).shape == (1, 10)


def test_versions_and_labels_in_the_path(server):
    own_server_only()
    body = {"instances": mnist_rows(1)}
    v1 = ok_json(call(server, "POST", f"/v1/models/{MNIST}/versions/1:predict", body))
    v2 = ok_json(call(server, "POST", f"/v1/models/{MNIST}/versions/2:predict", body))
    stable = ok_json(call(server, "POST", f"/v1/models/{MNIST}/labels/stable:predict", body))
    canary = ok_json(call(server, "POST", f"/v1/models/{MNIST}/labels/canary:predict", body))
    assert stable == v1 and canary == v2 and v1 != v2


def test_floats_print_like_tf_serving(server):
    text = call(server, "POST", f"/v1/models/{MNIST}:predict", {"instances": mnist_rows(1)}).text
    numbers = re.findall(r"-?\d[\d.e+-]*", text)
    assert numbers and all("." in n or "e" in n for n in numbers)  # whole numbers get ".0"
    assert text.startswith('{\n    "predictions": [[')


# =============================================================================== classify / regress
def test_classify_and_regress(server):
    own_server_only()
    classes = ok_json(
        call(
            server,
            "POST",
            f"/v1/models/{TOY}:classify",
            {"signature_name": "classify", "examples": [{"x": 0.0}, {"x": 2.0}]},
        )
    )
    assert [[label for label, _ in row] for row in classes["results"]] == [["neg", "pos"]] * 2
    assert classes["results"][0][1][1] == pytest.approx(0.5)
    values = ok_json(
        call(
            server,
            "POST",
            f"/v1/models/{TOY}:regress",
            {"signature_name": "regress", "examples": [{"x": 1.0}, {"x": 2.5}]},
        )
    )
    assert values == {"results": [3.0, 6.0]}


def test_classify_with_context(server):
    own_server_only()
    body = {"signature_name": "classify", "context": {"x": 2.0}, "examples": [{}, {}]}
    results = ok_json(call(server, "POST", f"/v1/models/{TOY}:classify", body))["results"]
    assert len(results) == 2 and results[0] == results[1]


# =============================================================================== inputs, types
def test_several_inputs_and_outputs_row_format(rest_server):
    body = {"instances": [{"a": [1, 2], "b": [3, 4.5]}, {"a": [0, 1], "b": [1, 1]}]}
    predictions = ok_json(call(rest_server, "POST", f"/v1/models/{REST_MODEL}:predict", body))
    assert predictions == {
        "predictions": [
            {"product": [3.0, 9.0], "total": [4.0, 6.5]},
            {"product": [0.0, 1.0], "total": [1.0, 2.0]},
        ]
    }


def test_several_inputs_and_outputs_columnar(rest_server):
    body = {"inputs": {"a": [[1, 2], [0, 1]], "b": [[3, 4.5], [1, 1]]}}
    outputs = ok_json(call(rest_server, "POST", f"/v1/models/{REST_MODEL}:predict", body))
    assert outputs == {
        "outputs": {"product": [[3.0, 9.0], [0.0, 1.0]], "total": [[4.0, 6.5], [1.0, 2.0]]}
    }


def test_bytes_alias_uses_b64_both_ways(rest_server):
    body = {"signature_name": "bytes", "instances": [{"b64": "aGVsbG8="}, {"b64": "AP8="}]}
    predictions = ok_json(call(rest_server, "POST", f"/v1/models/{REST_MODEL}:predict", body))
    assert predictions == {
        "predictions": [
            {"payload_bytes": {"b64": "aGVsbG8="}, "size": 5},
            {"payload_bytes": {"b64": "AP8="}, "size": 2},
        ]
    }


def test_every_json_dtype_round_trips(rest_server):
    body = {
        "signature_name": "types",
        "instances": [{"i32": -3, "i64": 2**40, "flag": True, "dbl": 0.1}],
    }
    predictions = ok_json(call(rest_server, "POST", f"/v1/models/{REST_MODEL}:predict", body))
    assert predictions == {"predictions": [{"dbl": 0.1, "flag": True, "i32": -3, "i64": 2**40}]}


# =============================================================================== errors
ERROR_ROWS = [
    # (method, path, body, HTTP status, exact message)
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"instances": [1], "inputs": [1]},
        400,
        'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} '
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"instances": 5},
        400,
        "JSON Value: {\n    \"instances\": 5\n} Excepting 'instances' to be an list/array",
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"instances": []},
        400,
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"signature_name": "serving_default"},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"inputs": "seven"},
        400,
        'JSON Value: "seven" Type: String is not of expected type: float',
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"instances": [[[0.5, 0.5], [0.5]]]},
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"instances": [[0.5, 0.5], [0.5]]},
        400,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting tensor size: 2 but got: 1",
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"signature_name": "nope", "instances": [1]},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        {"signature_name": 1, "instances": [1]},
        400,
        'JSON Value: {\n    "signature_name": 1,\n    "instances": [1]\n} '
        "not formatted correctly. 'signature_name' key must be a string value.",
    ),
    (
        "POST",
        f"/v1/models/{MNIST}:predict",
        "{",
        400,
        "JSON Parse error: Missing a name for object member. at offset: 1",
    ),
    ("POST", f"/v1/models/{MNIST}:predict", "", 400, "JSON Parse error: The document is empty"),
    ("POST", f"/v1/models/{MNIST}:predict", "[1]", 400, "JSON Value: [1] Is not object"),
    (
        "POST",
        f"/v1/models/{MNIST}:explode",
        {},
        400,
        f"Malformed request: POST /v1/models/{MNIST}:explode",
    ),
    (
        "GET",
        f"/v1/models/{MNIST}/versions/one",
        None,
        400,
        f"Malformed request: GET /v1/models/{MNIST}/versions/one",
    ),
    ("PUT", f"/v1/models/{MNIST}", "{}", 400, f"Malformed request: PUT /v1/models/{MNIST}"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    (
        "POST",
        "/v1/models/nope:predict",
        {"instances": [1]},
        404,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "POST",
        f"/v1/models/{MNIST}/versions/99:predict",
        {"instances": [1]},
        404,
        f"Servable not found for request: Specific({MNIST}, 99)",
    ),
    (
        "GET",
        f"/v1/models/{MNIST}/versions/99/metadata",
        None,
        404,
        f"Servable not found for request: Specific({MNIST}, 99)",
    ),
    (
        "GET",
        f"/v1/models/{MNIST}/versions/99",
        None,
        404,
        f"Could not find version 99 of model {MNIST}",
    ),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    (
        "POST",
        f"/v1/models/{MNIST}/labels/nope:predict",
        {"instances": [1]},
        400,
        "Unrecognized servable version label: nope",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    ERROR_ROWS,
    ids=[f"{row[0]} {row[1]} {str(row[2])[:30]}" for row in ERROR_ROWS],
)
def test_error_rows(server, method, path, body, status, message):
    assert error(call(server, method, path, body)) == (status, message)


def test_unknown_paths_are_plain_404(server):
    assert call(server, "GET", "/v2/models/mnist").status_code == 404


def test_classify_errors(server):
    assert error(call(server, "POST", f"/v1/models/{MNIST}:classify", {"examples": []})) == (
        400,
        "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
    )
    assert error(call(server, "POST", f"/v1/models/{MNIST}:regress", {"examples": [1]})) == (
        400,
        "Example must be JSON object but got JSON Number",
    )


def test_errors_of_several_inputs(rest_server):
    path = f"/v1/models/{REST_MODEL}:predict"
    assert error(call(rest_server, "POST", path, {"instances": [[1, 2]]})) == (
        400,
        "instances is a plain list, but expecting list of objects as multiple input "
        "tensors required as per tensorinfo_map",
    )
    assert error(call(rest_server, "POST", path, {"inputs": {"a": [[1, 2]]}})) == (
        400,
        "Missing named input: b in 'inputs' object.",
    )
    assert error(call(rest_server, "POST", path, {"instances": [{"a": [1.0, 2.0]}]})) == (
        400,
        "Failed to process element: 0 of 'instances' list. JSON object: "
        '{\n    "a": [1.0, 2.0]\n} must only have keys: a,b',
    )
    status, message = error(
        call(rest_server, "POST", path, {"inputs": {"a": [[1, 2]] * 3, "b": [[1, 2]] * 2}})
    )
    assert status == 400 and message.startswith("Incompatible shapes: [3,2] vs. [2,2]")


def test_type_errors_and_float_rounding(rest_server):
    path = f"/v1/models/{REST_MODEL}:predict"
    body = {
        "signature_name": "types",
        "inputs": {"i32": [1.5], "i64": [1], "flag": [True], "dbl": [1.0]},
    }
    assert error(call(rest_server, "POST", path, body)) == (
        400,
        "JSON Value: 1.5 Type: Number is not of expected type: int32",
    )
    body["inputs"]["i32"], body["inputs"]["flag"] = [1], [1]
    assert error(call(rest_server, "POST", path, body)) == (
        400,
        "JSON Value: 1 Type: Number is not of expected type: bool",
    )
    # Any number fits a float input, rounded to float32 (TF Serving dropped its precision check).
    rounded = {"signature_name": "ragged_out", "inputs": [16777217]}
    outputs = ok_json(call(rest_server, "POST", path, rounded))["outputs"]
    assert outputs["y"] == [16777216.0]
    bad_b64 = {"signature_name": "bytes", "instances": [{"b64": "%%%"}]}
    assert error(call(rest_server, "POST", path, bad_b64)) == (
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Unable to base64 decode",
    )


def test_outputs_that_do_not_fit_row_format(rest_server):
    path = f"/v1/models/{REST_MODEL}:predict"
    assert error(
        call(rest_server, "POST", path, {"signature_name": "ragged_out", "instances": [1.0, 2.0]})
    ) == (400, "Tensor name: y has inconsistent batch size: 2 expecting: 3")
    columns = ok_json(
        call(rest_server, "POST", path, {"signature_name": "ragged_out", "inputs": [1.0, 2.0]})
    )
    assert columns == {"outputs": {"fixed": [1.0, 2.0, 3.0], "y": [1.0, 2.0]}}


def test_rest_api_timeout_in_ms(rest_server):
    body = {"signature_name": "spin", "inputs": 150_000}
    response = call(rest_server, "POST", f"/v1/models/{REST_MODEL}:predict", body)
    assert error(response) == (504, "Timed out waiting for notification")
    # The status route answers while the slow call still runs in its worker thread.
    assert ok_json(call(rest_server, "GET", f"/v1/models/{REST_MODEL}"))


# =============================================================================== monitoring
def test_prometheus_metrics_after_calls(server, predict_stub):
    for _ in range(2):
        ok_json(call(server, "POST", f"/v1/models/{MNIST}:predict", {"instances": mnist_rows(1)}))
    predict_stub.Predict(predict_request(), timeout=30)
    call(server, "POST", "/v1/models/nope:predict", {"instances": [1]})
    response = call(server, "GET", "/monitoring/prometheus/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain"  # TF Serving's, exactly
    text = response.text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert re.search(
        r':tensorflow:serving:request_count\{[^}]*model_name="mnist"[^}]*\} [1-9]', text
    )
    assert ":tensorflow:serving:request_latency_bucket{" in text
    assert re.search(r':tensorflow:serving:request_latency_count\{[^}]*API="Predict"', text)


def test_metrics_of_the_embedded_server_label_rest_calls(server):
    own_server_only()
    ok_json(call(server, "POST", f"/v1/models/{MNIST}:predict", {"instances": mnist_rows(1)}))
    call(server, "POST", "/v1/models/nope:predict", {"instances": [1]})
    text = call(server, "GET", "/monitoring/prometheus/metrics").text
    assert re.search(
        r':tensorflow:serving:request_latency_count\{API="predict",entrypoint="REST",'
        r'model_name="mnist"\} [1-9]',
        text,
    )
    # A model that is not served is counted under one shared label, whatever name was sent.
    assert re.search(
        r':tensorflow:serving:request_count\{model_name="<unknown>",status="NOT_FOUND"\} [1-9]',
        text,
    )
    assert 'model_name="nope"' not in text


def test_custom_monitoring_path(rest_server):
    assert call(rest_server, "GET", METRICS_PATH).status_code == 200
    assert ":tensorflow:serving:request_count" in call(rest_server, "GET", METRICS_PATH).text
    assert call(rest_server, "GET", "/monitoring/prometheus/metrics").status_code == 404


# =============================================================================== large bodies
def test_a_50_mb_body_leaves_grpc_callers_served(server, predict_stub):
    """The body is parsed off the serving threads (and its tensor comes back as one array);
    gRPC calls meanwhile all succeed. A wrong-typed field in a large body has its own test
    (test_rest_troublemakers).

    Prints the gRPC latencies measured while the REST call runs (no timing is asserted).
    """
    own_server_only()
    rows = np.round(images(300, seed=1), 3).tolist()
    text = json.dumps(rows)
    copies = 50_000_000 // len(text) + 1
    body = ('{"instances": [' + ", ".join([text[1:-1]] * copies) + "]}").encode()
    latencies: list[float] = []
    done = threading.Event()
    answer: list[requests.Response] = []
    seconds: list[float] = []

    def rest_call() -> None:
        url = f"{server.rest_url}/v1/models/{MNIST}:predict"
        try:
            started = time.perf_counter()
            answer.append(requests.post(url, data=body, timeout=300))
            seconds.append(time.perf_counter() - started)
        finally:
            done.set()

    thread = threading.Thread(target=rest_call)
    thread.start()
    while not done.is_set():
        started = time.perf_counter()
        reply = predict_stub.Predict(predict_request(), timeout=60)
        latencies.append(time.perf_counter() - started)
        assert reply.outputs
    thread.join()
    predictions = ok_json(answer[0])["predictions"]
    assert len(predictions) == 300 * copies
    latencies.sort()
    print(
        f"\n{len(body) / 1e6:.0f} MB REST body answered in {seconds[0]:.1f} s; "
        f"{len(latencies)} gRPC Predict calls meanwhile, median "
        f"{latencies[len(latencies) // 2] * 1000:.0f} ms, slowest {latencies[-1] * 1000:.0f} ms"
    )
