"""The behaviours TensorFlow Serving's own model-server tests check, checked here.

TF Serving tests `tensorflow_model_server` with `tensorflow_model_server_test.py` (class
TensorflowModelServerTest, on TensorflowModelServerTestBase): it serves `half_plus_two`
(y = 0.5 x + 2) and a few other tiny models and checks every API on them. Each test below
names the one it counters; the models are built here with TensorFlow (serving_suite.py), in the
folder layout those tests use (version folder `00000123`, so version 123).

Four of TF Serving's tests have no counterpart, as they check what the course does not serve:
testPredictOnTfLite and testPredictWithSignatureDefOnTfLite (TF Lite models; the embedded
server refuses --prefer_tflite_model=true), test_profiler_service_with_valid_trace_request (no
profiler service; --enable_profiler=true is refused) and test_tf_text (a model using TF Text's
custom ops, a library the course does not install). The flags themselves are tested in
test_server_flags.py.

Tests that start their own servers skip when MODEL_SERVER points at an external server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from serving_suite import (
    EXTERNAL,
    EXTERNAL_REASON,
    MONITORING_CONFIG,
    build_checkpoint_model,
    build_half_plus_model,
    build_half_plus_two_tf2,
    build_in_fresh_process,
    build_keras_sequential,
    build_two_signature_model,
    rpc_error,
    tensor_proto,
    write,
)

pytestmark = pytest.mark.skipif(EXTERNAL, reason=EXTERNAL_REASON)

VERSION = 123
VERSION_FOLDER = "00000123"  # TF Serving reads the number, leading zeros and all
RPC_TIMEOUT = 20.0
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

BUILDERS: dict[str, Callable[[Path], object]] = {
    "half_plus_two": lambda path: build_half_plus_model(path, 2.0),
    "half_plus_three": lambda path: build_half_plus_model(path, 3.0),
    "half_plus_two_tf2": build_half_plus_two_tf2,
    "checkpoint": build_checkpoint_model,
    "two_signatures": build_two_signature_model,
    "keras_sequential": build_keras_sequential,
    "keras_mirrored": lambda path: build_in_fresh_process(
        "build_keras_sequential", path, mirrored_cpus=2
    ),
}


# ------------------------------------------------------------------------------ models, servers
@pytest.fixture(scope="module")
def shelf(tmp_path_factory) -> Callable[[str], Path]:
    """`shelf(name)` -> the base path of that model, built on first use (one version, 123)."""
    root = tmp_path_factory.mktemp("upstream-models")
    built: dict[str, Path] = {}

    def base_path(name: str) -> Path:
        if name not in built:
            BUILDERS[name](root / name / VERSION_FOLDER)
            built[name] = root / name
        return built[name]

    return base_path


def _config_text(models: dict[str, Path]) -> str:
    entries = "".join(
        f"config {{ name: '{name}' base_path: '{path}' model_platform: 'tensorflow' }}\n"
        for name, path in models.items()
    )
    return f"model_config_list {{\n{entries}}}\n"


def _start(base_path: Path | None, name: str = "default", flags: tuple[str, ...] = ()):
    """An embedded server on ports the OS picks, REST on, waiting until `name` is available."""
    from helpers.server.process import start_server

    return start_server(
        base_path,
        name,
        default_ports=False,
        extra_flags=list(flags),
        timeout=120,
    )


@pytest.fixture(scope="module")
def single(shelf, tmp_path_factory) -> Iterator[object]:
    """half_plus_two served as `default`, started the way TF Serving's RunServer starts it:
    REST on, --rest_api_timeout_in_ms, --grpc_socket_path, and Prometheus monitoring."""
    folder = tmp_path_factory.mktemp("single")
    monitoring = write(folder / "monitoring.config", MONITORING_CONFIG)
    server = _start(
        shelf("half_plus_two"),
        flags=(
            "--rest_api_timeout_in_ms=5000",
            f"--grpc_socket_path={folder / 'tf-serving.sock'}",
            f"--monitoring_config_file={monitoring}",
        ),
    )
    server.socket_path = folder / "tf-serving.sock"
    yield server
    server.stop()


@pytest.fixture(scope="module")
def zoo(shelf, tmp_path_factory) -> Iterator[object]:
    """One server for the models written with TF2 and Keras APIs (each under its own name)."""
    names = (
        "half_plus_two_tf2",
        "checkpoint",
        "two_signatures",
        "keras_sequential",
        "keras_mirrored",
    )
    config = write(
        tmp_path_factory.mktemp("zoo") / "models.config",
        _config_text({name: shelf(name) for name in names}),
    )
    server = _start(None, names[0], (f"--model_config_file={config}",))
    for name in names[1:]:
        server.wait_until_available(name, timeout=60)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def good_config(shelf, tmp_path_factory) -> Iterator[object]:
    """half_plus_two and half_plus_three from one --model_config_file."""
    models = {name: shelf(name) for name in ("half_plus_two", "half_plus_three")}
    config = write(tmp_path_factory.mktemp("good") / "good_model_config.conf", _config_text(models))
    server = _start(None, "half_plus_two", (f"--model_config_file={config}",))
    server.wait_until_available("half_plus_three", timeout=60)
    yield server
    server.stop()


# ------------------------------------------------------------------------------ requests
def _stubs(target: str):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    return (
        channel,
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )


def _predict(
    target: str,
    model: str = "default",
    *,
    signature: str = "serving_default",
    output_filter: tuple[str, ...] = ("y",),
    shape: tuple[int, ...] = (1,),
    value: float = 2.0,
):
    """Predict with input `x` = `value` (float_val, `shape`), as TF Serving's tests send it."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tensor_proto(np.full(shape, value, np.float32), content=False))
    request.output_filter.extend(output_filter)
    channel, stub, _ = _stubs(target)
    with channel:
        return stub.Predict(request, timeout=RPC_TIMEOUT)


def _check_spec(spec, name: str, signature: str, version: int = VERSION) -> None:
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature, version)


def _check_y(response, expected: float, key: str = "y") -> None:
    """One float in the typed field, as TF Serving answers by default (not tensor_content)."""
    from tensorflow.core.framework import types_pb2

    output = response.outputs[key]
    assert output.dtype == types_pb2.DT_FLOAT
    assert list(output.float_val) == [expected]
    assert not output.tensor_content


def _examples(**features: float):
    from tensorflow_serving.apis import input_pb2

    request_input = input_pb2.Input()
    example = request_input.example_list.examples.add()
    for key, value in features.items():
        example.features.feature[key].float_list.value.append(value)
    return request_input


def _multi_inference_request(model: str):
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)):
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.CopyFrom(_examples(x=2.0))
    return request


def _rest(server, path: str, body: dict | None = None) -> requests.Response:
    url = f"{server.rest_url}{path}"
    if body is None:
        return requests.get(url, timeout=RPC_TIMEOUT)
    return requests.post(url, data=json.dumps(body), timeout=RPC_TIMEOUT)


def _rest_json(server, path: str, body: dict | None = None) -> object:
    response = _rest(server, path, body)
    assert response.status_code == 200, response.text
    return response.json()


# Classify/Regress/MultiInference run on the TF1 graph and on the TF2 module alike.
TF1_AND_TF2 = pytest.mark.parametrize(
    ("server_fixture", "model"),
    [("single", "default"), ("zoo", "half_plus_two_tf2")],
    ids=["tf1", "tf2"],
)


# ------------------------------------------------------------------------------ gRPC
def test_get_model_status(single):
    """Counterpart of TensorflowModelServerTest.testGetModelStatus."""
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    channel, _, model_stub = _stubs(single.grpc_target)
    with channel:
        response = model_stub.GetModelStatus(request, timeout=RPC_TIMEOUT)
    (status,) = response.model_version_status
    assert status.version == VERSION
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0


def test_get_model_metadata(single):
    """Counterpart of TensorflowModelServerTest.testGetModelMetadata."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    channel, stub, _ = _stubs(single.grpc_target)
    with channel:
        response = stub.GetModelMetadata(request, timeout=RPC_TIMEOUT)
    assert (response.model_spec.name, response.model_spec.version.value) == ("default", VERSION)
    assert list(response.metadata) == ["signature_def"]
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert sorted(signatures.signature_def) == [
        "classify_x_to_y",
        "regress_x2_to_y3",
        "regress_x_to_y",
        "regress_x_to_y2",
        "serving_default",
    ]
    assert signatures.signature_def["serving_default"].inputs["x"].name == "x:0"


@TF1_AND_TF2
def test_classify(request, server_fixture, model):
    """Counterpart of TensorflowModelServerTest.testClassify and testClassifyTf2."""
    from tensorflow_serving.apis import classification_pb2

    server = request.getfixturevalue(server_fixture)
    call = classification_pb2.ClassificationRequest()
    call.model_spec.name = model
    call.model_spec.signature_name = "classify_x_to_y"
    call.input.CopyFrom(_examples(x=2.0))
    channel, stub, _ = _stubs(server.grpc_target)
    with channel:
        response = stub.Classify(call, timeout=RPC_TIMEOUT)
    (classification,) = response.result.classifications
    (only_class,) = classification.classes
    assert (only_class.label, only_class.score) == ("", 3.0)
    _check_spec(response.model_spec, model, "classify_x_to_y")


@TF1_AND_TF2
def test_regress(request, server_fixture, model):
    """Counterpart of TensorflowModelServerTest.testRegress and testRegressTf2."""
    from tensorflow_serving.apis import regression_pb2

    server = request.getfixturevalue(server_fixture)
    call = regression_pb2.RegressionRequest()
    call.model_spec.name = model
    call.model_spec.signature_name = "regress_x_to_y"
    call.input.CopyFrom(_examples(x=2.0))
    channel, stub, _ = _stubs(server.grpc_target)
    with channel:
        response = stub.Regress(call, timeout=RPC_TIMEOUT)
    assert [r.value for r in response.result.regressions] == [3.0]
    _check_spec(response.model_spec, model, "regress_x_to_y")


@TF1_AND_TF2
def test_multi_inference(request, server_fixture, model):
    """Counterpart of TensorflowModelServerTest.testMultiInference and testMultiInferenceTf2.

    The TF2 model gives each signature its own input placeholder: TF Serving feeds the
    examples to all of them (it no longer asks for one shared input tensor).
    """
    server = request.getfixturevalue(server_fixture)
    call = _multi_inference_request(model)
    channel, stub, _ = _stubs(server.grpc_target)
    with channel:
        response = stub.MultiInference(call, timeout=RPC_TIMEOUT)
    regression, classification = response.results
    assert regression.regression_result.regressions[0].value == 3.0
    assert classification.classification_result.classifications[0].classes[0].score == 3.0
    for result, task in zip(response.results, call.tasks, strict=True):
        _check_spec(result.model_spec, model, task.model_spec.signature_name)


def test_multi_inference_with_two_regression_heads_on_tf2(zoo):
    """Beyond the upstream test: two heads of the same kind, each with its own placeholder."""
    from tensorflow_serving.apis import inference_pb2

    call = inference_pb2.MultiInferenceRequest()
    for signature in ("regress_x_to_y", "regress_x_to_y2"):
        task = call.tasks.add()
        task.model_spec.name = "half_plus_two_tf2"
        task.model_spec.signature_name = signature
        task.method_name = REGRESS
    call.input.CopyFrom(_examples(x=4.0))
    channel, stub, _ = _stubs(zoo.grpc_target)
    with channel:
        response = stub.MultiInference(call, timeout=RPC_TIMEOUT)
    values = [r.regression_result.regressions[0].value for r in response.results]
    assert values == [4.0, 5.0]


def test_predict_saved_model(single):
    """Counterpart of TensorflowModelServerTest.testPredictSavedModel (and the base's
    _TestPredict): with and without an output filter, the answer is y = 3 at version 123."""
    for output_filter in (("y",), ()):
        response = _predict(single.grpc_target, output_filter=output_filter)
        _check_y(response, 3.0)
        _check_spec(response.model_spec, "default", "serving_default")


def test_predict_over_unix_socket(single):
    """Counterpart of TensorflowModelServerTest.testPredictUDS (--grpc_socket_path)."""
    response = _predict(f"unix:{single.socket_path}", output_filter=())
    _check_y(response, 3.0)
    _check_spec(response.model_spec, "default", "serving_default")


# ------------------------------------------------------------------------------ REST
def test_classify_rest(single):
    """Counterpart of TensorflowModelServerTest.testClassifyREST."""
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert _rest_json(single, "/v1/models/default:classify", body) == {"results": [[["", 3.0]]]}


def test_regress_rest(single):
    """Counterpart of TensorflowModelServerTest.testRegressREST."""
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert _rest_json(single, "/v1/models/default:regress", body) == {"results": [3.0]}


def test_predict_rest(single):
    """Counterpart of TensorflowModelServerTest.testPredictREST (row format)."""
    body = {"instances": [2.0, 3.0, 4.0]}
    assert _rest_json(single, "/v1/models/default:predict", body) == {
        "predictions": [3.0, 3.5, 4.0]
    }


def test_predict_columnar_rest(single):
    """Counterpart of TensorflowModelServerTest.testPredictColumnarREST."""
    body = {"inputs": [2.0, 3.0, 4.0]}
    assert _rest_json(single, "/v1/models/default:predict", body) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(single):
    """Counterpart of TensorflowModelServerTest.testGetStatusREST."""
    assert _rest_json(single, "/v1/models/default") == {
        "model_version_status": [
            {
                "version": str(VERSION),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def _tensor_json(name: str, dtype: str, dims: tuple[int, ...] | None) -> dict:
    """A TensorInfo as TF Serving writes it in JSON (sizes as strings, defaults spelled out)."""
    if dims is None:
        shape = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _signature_json(inputs: dict, outputs: dict, method: str) -> dict:
    return {"inputs": inputs, "outputs": outputs, "method_name": method, "defaults": {}}


def test_get_model_metadata_rest(single):
    """Counterpart of TensorflowModelServerTest.testGetModelMetadataREST: the whole document."""
    examples = _tensor_json("tf_example:0", "DT_STRING", (-1,))
    column = (-1, 1)

    def regress(input_info: dict, output: str) -> dict:
        outputs = {"outputs": _tensor_json(output, "DT_FLOAT", column)}
        return _signature_json({"inputs": input_info}, outputs, REGRESS)

    expected = {
        "model_spec": {"name": "default", "signature_name": "", "version": str(VERSION)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": _signature_json(
                        {"x": _tensor_json("x:0", "DT_FLOAT", column)},
                        {"y": _tensor_json("y:0", "DT_FLOAT", column)},
                        "tensorflow/serving/predict",
                    ),
                    "classify_x_to_y": _signature_json(
                        {"inputs": examples},
                        {"scores": _tensor_json("y:0", "DT_FLOAT", column)},
                        CLASSIFY,
                    ),
                    "regress_x_to_y": regress(examples, "y:0"),
                    "regress_x_to_y2": regress(examples, "y2:0"),
                    "regress_x2_to_y3": regress(_tensor_json("x2:0", "DT_FLOAT", column), "y3:0"),
                }
            }
        },
    }
    assert _rest_json(single, "/v1/models/default/metadata") == expected


def test_prometheus_endpoint(single):
    """Counterpart of TensorflowModelServerTest.testPrometheusEndpoint."""
    response = _rest(single, "/monitoring/prometheus/metrics")
    assert response.status_code == 200
    assert "# TYPE" in response.text


# ------------------------------------------------------------------------------ model config file
def test_good_model_config(good_config):
    """Counterpart of TensorflowModelServerTest.testGoodModelConfig."""
    for name, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
        for output_filter in (("y",), ()):
            response = _predict(good_config.grpc_target, name, output_filter=output_filter)
            _check_y(response, expected)
            _check_spec(response.model_spec, name, "serving_default")


def test_bad_model_config(tmp_path):
    """Counterpart of TensorflowModelServerTest.testBadModelConfig: what tensorflow_model_server
    prints for a config file that is not a text ModelServerConfig, where, and its exit status."""
    from helpers.server.process import free_port

    bad = write(tmp_path / "bad_model_config.txt", "improperly formatted file")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.server",
            f"--port={free_port()}",
            f"--model_config_file={bad}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 255  # main() returns -1
    assert done.stdout.splitlines() == [
        f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'"
    ]
    assert (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: Message type "
        '"tensorflow.serving.ModelServerConfig" has no field named "improperly".'
    ) in done.stderr
    assert "Traceback" not in done.stderr


def _served(target: str, name: str) -> bool:
    """True when `name` answers Predict, False while it is unknown (NOT_FOUND)."""
    try:
        _predict(target, name, output_filter=())
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False
    return True


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.2)):
        if condition():
            return
        done.wait(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _reloading_server(shelf, folder: Path, poll_seconds: int):
    config = write(
        folder / "model_config.txt", _config_text({"half_plus_two": shelf("half_plus_two")})
    )
    flags = (
        f"--model_config_file={config}",
        f"--model_config_file_poll_wait_seconds={poll_seconds}",
    )
    return config, _start(None, "half_plus_two", flags)


def test_model_config_reload(shelf, tmp_path):
    """Counterpart of TensorflowModelServerTest.testModelConfigReload: with a poll period, a
    rewritten --model_config_file is applied (the new model served, the old one unloaded)."""
    config, server = _reloading_server(shelf, tmp_path, 1)
    try:
        _check_y(_predict(server.grpc_target, "half_plus_two", output_filter=()), 3.0)
        config.write_text(_config_text({"half_plus_three": shelf("half_plus_three")}))
        _wait(lambda: _served(server.grpc_target, "half_plus_three"), "half_plus_three")
        _check_y(_predict(server.grpc_target, "half_plus_three", output_filter=()), 4.0)
        _wait(lambda: not _served(server.grpc_target, "half_plus_two"), "half_plus_two to go")
    finally:
        server.stop()


def test_model_config_reload_with_zero_poll_period(shelf, tmp_path):
    """Counterpart of TensorflowModelServerTest.testModelConfigReloadWithZeroPollPeriod: with
    --model_config_file_poll_wait_seconds=0 the file is read once, at start."""
    config, server = _reloading_server(shelf, tmp_path, 0)
    try:
        config.write_text(_config_text({"half_plus_three": shelf("half_plus_three")}))
        threading.Event().wait(3.0)  # three times any poll period a server could be using
        _check_y(_predict(server.grpc_target, "half_plus_two", output_filter=()), 3.0)
        assert not _served(server.grpc_target, "half_plus_three")
        assert not any("changed: reloading" in line for line in server.log_lines())
    finally:
        server.stop()


# ------------------------------------------------------------------------------ flags
def test_good_grpc_channel_args(shelf):
    """Counterpart of TensorflowModelServerTest.testGoodGrpcChannelArgs, and proof the
    arguments reach gRPC: with grpc.max_connection_age_ms=2000 the server closes each
    connection after about two seconds, so an idle channel leaves READY on its own."""
    server = _start(
        shelf("half_plus_two"),
        flags=(
            "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,"
            "grpc.lb_policy_name=grpclb,grpc.so_reuseaddr=1",
        ),
    )
    try:
        _check_y(_predict(server.grpc_target, output_filter=()), 3.0)
        states: list[grpc.ChannelConnectivity] = []
        left_ready = threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            if state != grpc.ChannelConnectivity.READY and grpc.ChannelConnectivity.READY in states:
                left_ready.set()
            states.append(state)

        with grpc.insecure_channel(server.grpc_target) as channel:
            channel.subscribe(watch, try_to_connect=True)
            assert left_ready.wait(30), f"the connection stayed open: {states}"
            channel.unsubscribe(watch)
    finally:
        server.stop()


# ------------------------------------------------------------------------------ TF2 and Keras
def test_tf_saved_model_save(zoo):
    """Counterpart of TensorflowModelServerTest.test_tf_saved_model_save."""
    response = _predict(zoo.grpc_target, "checkpoint", output_filter=())
    _check_y(response, 12.0)
    _check_spec(response.model_spec, "checkpoint", "serving_default")


def test_tf_saved_model_save_multiple_signatures(zoo):
    """Counterpart of TensorflowModelServerTest.test_tf_saved_model_save_multiple_signatures."""
    custom = _predict(zoo.grpc_target, "two_signatures", signature="custom_signature_key")
    _check_y(custom, 2.0)
    _check_spec(custom.model_spec, "two_signatures", "custom_signature_key")
    default = _predict(zoo.grpc_target, "two_signatures")
    _check_y(default, 1.0)
    _check_spec(default.model_spec, "two_signatures", "serving_default")


def _output_key(target: str, model: str) -> str:
    """The serving signature's one output key, read from GetModelMetadata."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    channel, stub, _ = _stubs(target)
    with channel:
        response = stub.GetModelMetadata(request, timeout=RPC_TIMEOUT)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    (key,) = signatures.signature_def["serving_default"].outputs
    return key


@pytest.mark.parametrize(
    "model",
    ["keras_sequential", "keras_mirrored"],
    ids=["sequential", "mirrored_strategy"],
)
def test_keras_saved_model(zoo, model):
    """Counterpart of TensorflowModelServerTest.test_sequential_keras_saved_model_save and
    test_distrat_sequential_keras_saved_model_save. Keras 3 exports with model.export, whose
    output key is not the last layer's name: the client reads it from the metadata."""
    key = _output_key(zoo.grpc_target, model)
    response = _predict(zoo.grpc_target, model, output_filter=(), shape=(1, 1))
    _check_y(response, 2.0, key)
    _check_spec(response.model_spec, model, "serving_default")


# ------------------------------------------------------------------------------ start-up order
def test_ports_open_only_after_the_initial_models_load(shelf, tmp_path):
    """What TensorflowModelServerTestBase.WaitForServerReady relies on: the first answer on the
    gRPC port (NOT_FOUND `Servable ...` for an unknown model) means the configured models are
    loaded. TF Serving builds its gRPC and REST servers only after ServerCore::Create has
    waited for every initial model, so before that a client's connection is refused."""
    from helpers.server.process import start_server

    base = tmp_path / "default"
    base.mkdir()  # no version yet: TF Serving waits for one, however long it takes
    server = start_server(base, "default", default_ports=False, wait=False)
    try:
        _wait(
            lambda: any("No versions of servable default" in line for line in server.log_lines()),
            "the server to look for versions",
        )
        error = rpc_error(_predict, server.grpc_target, "intentionally_missing_model")
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.rest_url}/v1/models/default", timeout=RPC_TIMEOUT)
        staging = tmp_path / "staging"
        shutil.copytree(shelf("half_plus_two") / VERSION_FOLDER, staging)
        staging.rename(base / VERSION_FOLDER)  # the version appears whole

        def probe() -> bool:  # the readiness probe of TF Serving's test base
            try:
                _predict(server.grpc_target, "intentionally_missing_model")
            except grpc.RpcError as error:
                return "Servable" in (error.details() or "")
            return False

        server.wait_until_listening(timeout=120)  # the log line; it moves a port lost meanwhile
        _wait(probe, "the gRPC port to answer")
        _check_y(_predict(server.grpc_target), 3.0)  # loaded by the time the port answers
        assert _rest_json(server, "/v1/models/default")["model_version_status"][0]["state"] == (
            "AVAILABLE"
        )
    finally:
        server.stop()
