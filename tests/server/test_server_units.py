"""Unit tests of the server's pure parts: flags, tensor codec, errors, config files, bench table.

These run in-process and need no server; the conformance tests check the same behaviour over
the wire.
"""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest

from helpers.server import flags as flag_module
from helpers.server.errors import ServingError, first_line, truncate


def test_flags_parse_tf_serving_style():
    parsed = flag_module.parse_flags(
        [
            "--port=9000",
            "--rest_api_port=0",
            "--enable_batching",
            "--model_name=m",
            "--enable_model_warmup=false",
            "--grpc_channel_arguments=a=1,b=x",
        ]
    )
    assert (parsed.port, parsed.rest_api_port, parsed.model_name) == (9000, 0, "m")
    assert parsed.enable_batching is True and parsed.enable_model_warmup is False
    assert flag_module.channel_arguments(parsed.grpc_channel_arguments) == [("a", 1), ("b", "x")]


def test_flag_defaults_are_tf_servings():
    defaults = flag_module.Flags()
    assert defaults.port == 8500 and defaults.rest_api_port == 0
    assert defaults.file_system_poll_wait_seconds == 1
    assert defaults.max_num_load_retries == 5
    assert defaults.load_retry_interval_micros == 60_000_000
    assert defaults.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nope=1"], "unknown command line flag 'nope' (see --help)"),
        (["--port"], "--port needs a value: write --port=VALUE"),
        (["--enable_batching=maybe"], "--enable_batching expects true or false, got 'maybe'"),
        (["port=1"], "unexpected argument 'port=1': flags are written --flag=value"),
    ],
)
def test_bad_flags_say_what_is_wrong(argv, message):
    with pytest.raises(flag_module.FlagError) as caught:
        flag_module.parse_flags(argv)
    assert str(caught.value) == message


def test_same_grpc_and_rest_port_is_refused():
    parsed = flag_module.parse_flags(
        ["--port=9000", "--rest_api_port=9000", "--model_base_path=/m"]
    )
    with pytest.raises(flag_module.FlagError, match="cannot be same as grpc_port"):
        flag_module.check_flags(parsed)


def test_errors_keep_the_first_line_and_truncate():
    assert first_line("Bad shape\n\t [[{{node x}}]]") == "Bad shape"
    long = "x" * 2000
    assert truncate(long) == "x" * 1024 + "...TRUNCATED"
    # The error keeps the whole text: only the gRPC front end cuts it (REST never does).
    assert ServingError(grpc.StatusCode.INVALID_ARGUMENT, long).message == long
    error = ServingError(grpc.StatusCode.NOT_FOUND, "gone")
    assert (str(error), error.http_status, error.code_name) == ("gone", 404, "NOT_FOUND")
    assert ServingError(grpc.StatusCode.FAILED_PRECONDITION, "x").http_status == 400


@pytest.mark.parametrize(
    "dtype",
    [
        np.float32,
        np.float64,
        np.int32,
        np.int64,
        np.uint8,
        np.int8,
        np.int16,
        np.bool_,
        np.float16,
        np.complex64,
    ],
)
def test_tensor_codec_round_trips(dtype):
    import tensorflow as tf

    from helpers.server import tensors

    array = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    encoded = tensors.encode(array)
    assert encoded.tensor_content == b""  # typed fields, as TF Serving's AsProtoField
    np.testing.assert_array_equal(tf.make_ndarray(encoded), array)
    np.testing.assert_array_equal(tensors.decode(encoded, "a"), array)
    from_content = tf.make_tensor_proto(array)
    np.testing.assert_array_equal(tensors.decode(from_content, "a"), array)


def test_tensor_codec_strings():
    from helpers.server import tensors

    array = np.array([b"a", b"bc"], dtype=object)
    decoded = tensors.decode(tensors.encode(array), "s")
    assert decoded.tolist() == [b"a", b"bc"]


def test_decoding_a_short_value_list_repeats_the_last_value():
    import tensorflow as tf

    from helpers.server import tensors

    proto = tf.make_tensor_proto(np.zeros((2, 2), np.float32))
    proto.ClearField("tensor_content")
    proto.float_val.extend([1.0, 2.0])
    assert tensors.decode(proto, "a").tolist() == [[1.0, 2.0], [2.0, 2.0]]
    # Tensor::FromProto (FromProtoField) copies the first N values and ignores the rest;
    # tf.io.parse_tensor on the same proto gives [[1, 2], [3, 4]].
    proto.float_val.extend([3.0, 4.0, 5.0])
    assert tensors.decode(proto, "a").tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_config_files_parse_and_fail_in_one_line(tmp_path):
    from helpers.server import config_files

    good = tmp_path / "ssl.config"
    good.write_text('server_key: "k" server_cert: "c" client_verify: true')
    ssl = config_files.read_ssl_config(good)
    assert (ssl.server_key, ssl.client_verify) == ("k", True)
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 16 } allowed_batch_sizes: 8 allowed_batch_sizes: 16"
    )
    assert config_files.read_batching_parameters(batching).max_batch_size.value == 16
    bad = tmp_path / "monitoring.config"
    bad.write_text("prometheus_config { enabled: true }")
    with pytest.raises(config_files.ConfigError) as caught:
        config_files.read_monitoring_config(bad)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"Invalid protobuf file: '{bad}'")


def test_batching_options_are_checked_like_tf():
    from helpers.server import config_files
    from helpers.server.batching import BatchingOptions

    params = config_files.config_protos().BatchingParameters()
    params.max_batch_size.value = 8
    params.allowed_batch_sizes.extend([2, 4])
    with pytest.raises(ValueError, match="must equal max_batch_size"):
        BatchingOptions.from_proto(params, 2)
    assert BatchingOptions.from_proto(None, 3).num_batch_threads == 3


def test_bench_table_and_verdicts():
    from helpers.bench import Row, format_table, verdicts

    rows = [
        Row("cold start (process start -> first Predict)", "3.00 s", numbers={"seconds": 3.0}),
        Row("in-process signature call", "p50 0.1 ms", numbers={"p50_ms": 0.1}),
        Row("gRPC Predict, one image", "p50 0.6 ms", numbers={"p50_ms": 0.6}),
        Row("throughput, concurrency  4, no batching", "x", numbers={"req_per_s": 2000.0}),
        Row("throughput, concurrency 16, no batching", "x", numbers={"req_per_s": 2000.0}),
        Row("throughput, concurrency 16, batching", "x", numbers={"req_per_s": 1000.0}),
        Row("sustained 300 req/s for 60 s", "300 req/s", numbers={"errors": 0}),
    ]
    marks = [line.split()[0] for line in verdicts(rows)]
    assert marks == ["[OK]", "[OK]", "[OK]", "[MISS]", "[OK]", "[OK]"]
    table = format_table(rows)
    assert table.splitlines()[0].startswith("measurement")
    assert len(table.splitlines()) == len(rows) + 2


def test_bench_refuses_nonsense_settings(capsys):
    from helpers.bench import main

    with pytest.raises(SystemExit):
        main(["--rate=0"])
    assert "must be positive" in capsys.readouterr().err


def test_method_name_check_when_enabled(model_store):
    """--enable_signature_method_name_check=true: TF Serving's method-name errors."""
    from tensorflow_serving.apis import input_pb2

    from helpers.server.servable import Servable

    servable = Servable("toy", 1, str(model_store / "toy" / "1"), method_check=True)
    request_input = input_pb2.Input()
    request_input.example_list.examples.add()
    with pytest.raises(ServingError) as caught:
        servable.regress("classify", request_input)
    assert caught.value.message == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/classify"
    )
    with pytest.raises(ServingError) as caught:
        servable.classify("", request_input)
    assert caught.value.message == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    assert servable.regress("regress", request_input).regressions[0].value == 1.0


def _warmup_file(folder, request) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    entry.predict_log.request.CopyFrom(request)
    (folder / "assets.extra").mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(folder / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(entry.SerializeToString())


def test_warmup_requests_file_is_replayed_and_a_bad_one_fails(model_store, tmp_path, caplog):
    import logging
    import shutil

    from serving_suite import predict_request

    from helpers.server.servable import Servable

    good = tmp_path / "good"
    shutil.copytree(model_store / "toy" / "1", good)
    _warmup_file(good, predict_request({"x": np.ones(2, np.float32)}, name="toy"))
    with caplog.at_level(logging.INFO, logger="helpers.server"):
        Servable("toy", 1, str(good)).warm_up()
    assert "Number of warmup records read: 1." in caplog.text

    bad = tmp_path / "bad"
    shutil.copytree(model_store / "toy" / "1", bad)
    _warmup_file(bad, predict_request({"x": np.ones(2, np.float64)}, name="toy"))
    with pytest.raises(ServingError, match="Expects arg\\[0\\] to be float but double"):
        Servable("toy", 1, str(bad)).warm_up()


def test_the_server_imports_where_resource_does_not_exist():
    """Windows has no `resource` module: the server must import (and size REST) without it.
    Imported as `python -m helpers.server` imports it (its __main__ first)."""
    code = (
        "import sys; sys.modules['resource'] = None\n"
        "import helpers.server.__main__, helpers.server.grpc_service\n"
        "import helpers.server.rest as rest\n"
        "print(rest.MAX_CONNECTIONS)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "256"


def test_config_messages_come_from_the_one_proto_cache():
    """serving_config.proto is compiled by helpers.protos like every course proto (one cache)."""
    from helpers.protos import load_proto
    from helpers.server.config_files import config_protos

    assert config_protos() is load_proto("serving_config").pb2
    assert config_protos().SSLConfig.DESCRIPTOR.full_name == "course.serving.SSLConfig"
