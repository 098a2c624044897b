"""REST bodies and URLs, the byte-counting relay, the bytes variant of the model, and the
gRPC/REST routes notebook 07 measures, against a live embedded server."""

from __future__ import annotations

import json
import math

import grpc
import numpy as np
import pytest
import requests

from helpers import config, protocols, rest_client
from helpers.wire import ByteCounter

pytest_plugins = ["served_mnist"]


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(1).random((count, 28, 28, 1), dtype=np.float32)


def test_predict_urls():
    base = "http://h:1/"
    assert rest_client.predict_url(base, "m") == "http://h:1/v1/models/m:predict"
    assert rest_client.predict_url(base, "m", version=2).endswith("/m/versions/2:predict")
    assert rest_client.predict_url(base, "m", label="stable").endswith("/m/labels/stable:predict")
    with pytest.raises(ValueError, match="not both"):
        rest_client.predict_url(base, "m", version=1, label="x")


def test_bodies_and_answers():
    x = _images(2)
    assert rest_client.row_body(x, signature_name="s")["signature_name"] == "s"
    assert rest_client.row_body([1, 2], input_key="k")["instances"] == [{"k": 1}, {"k": 2}]
    assert np.asarray(rest_client.columnar_body({"image": x})["inputs"]["image"]).shape == x.shape
    assert rest_client.b64(b"\x00\xff") == {"b64": "AP8="}
    data, headers = rest_client.encode_body({"instances": [1]}, compress=True)
    assert headers["Content-Encoding"] == "gzip" and data[:2] == b"\x1f\x8b"
    assert rest_client.decode_answer(b'{"predictions": [[1, 2]]}').shape == (1, 2)
    assert set(rest_client.decode_answer({"outputs": {"a": [1], "b": [2]}})) == {"a", "b"}
    with pytest.raises(ValueError, match="predictions"):
        rest_client.decode_answer({"error": "x"})
    assert "--data-binary @body.json" in rest_client.curl_command("http://h:1/v1/models/m:predict")


def test_png_bytes_round_trip():
    import io

    from PIL import Image

    pixels = (np.arange(784) % 256).astype(np.uint8).reshape(28, 28)
    decoded = np.asarray(Image.open(io.BytesIO(rest_client.png_bytes(pixels))))
    np.testing.assert_array_equal(decoded, pixels)


def test_routes_agree_and_rest_errors_carry_the_message(served_mnist):
    x = _images(4)
    with grpc.insecure_channel(served_mnist.grpc_target) as channel:
        grpc_route = protocols.grpc_route(channel, config.MODEL_NAME)
        rest_route = protocols.rest_route(served_mnist.rest_url, config.MODEL_NAME)
        gzip_route = protocols.rest_route(served_mnist.rest_url, config.MODEL_NAME, compress=True)
        try:
            expected = grpc_route(x)
            assert expected.shape == (4, 10)
            np.testing.assert_array_equal(rest_route(x), expected)
            np.testing.assert_array_equal(gzip_route(x), expected)
            frame = protocols.interleaved_latency([grpc_route, rest_route], {1: x[:1]}, 2, warmup=1)
            summary = protocols.latency_summary(frame)
            assert list(summary["calls"]) == [2, 2]
            ratios = protocols.ratio_table(summary)
            assert math.isfinite(ratios.loc[1, "p50 REST/gRPC"])
            rate, errors = protocols.throughput(grpc_route, x[:1], concurrency=2, seconds=0.2)
            assert rate > 0 and errors == 0
        finally:
            rest_route.close()
            gzip_route.close()
    with requests.Session() as session, pytest.raises(rest_client.RestError) as caught:
        url = rest_client.predict_url(served_mnist.rest_url, "no_such_model")
        rest_client.predict(session, url, {"instances": [[0.0]]})
    assert caught.value.status == 404 and "no_such_model" in caught.value.message


def test_relay_counts_what_travels(served_mnist):
    x = _images(8)
    body = json.dumps({"instances": x.tolist()}).encode()
    with ByteCounter(served_mnist.rest_url.split("//")[1]) as relay:
        route = protocols.rest_route(relay.url, config.MODEL_NAME)
        try:
            sent, received = protocols.wire_bytes(relay, route, x)
        finally:
            route.close()
    assert len(body) < sent < len(body) + 1000  # the body plus HTTP headers
    assert 8 * 10 * 5 < received < 5000
    with pytest.raises(ValueError, match="host:port"):
        ByteCounter("8500")


def test_bytes_variant_answers_like_the_float_model(served_mnist, tmp_path):
    import tensorflow as tf

    from helpers import export

    source = served_mnist.base_path / "1"
    variant = export.export_bytes_variant(source, base_dir=tmp_path)
    assert variant == tmp_path / export.BYTES_MODEL_NAME / "1"
    pixels = (np.random.default_rng(2).random((3, 28, 28, 1)) * 255).astype(np.uint8)
    from helpers.data import preprocess

    float_model = tf.saved_model.load(str(source)).signatures["serving_default"]
    bytes_model = tf.saved_model.load(str(variant)).signatures
    expected = float_model(image=tf.constant(preprocess(pixels)))["probabilities"].numpy()
    got = bytes_model["serving_default"](pixels=tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_array_equal(got, expected)
    pngs = tf.constant([rest_client.png_bytes(p) for p in pixels])
    from_png = bytes_model[export.PNG_SIGNATURE](image_bytes=pngs)["probabilities"].numpy()
    np.testing.assert_array_equal(from_png, expected)
    with pytest.raises(FileNotFoundError, match="No SavedModel"):
        export.export_bytes_variant(tmp_path / "missing" / "1", base_dir=tmp_path)


def _local_route(send) -> protocols.Route:
    """A route that never leaves this process: its send is the function given."""
    return protocols.Route("local", lambda x: b"request", send, lambda answer: np.zeros(1))


def test_throughput_counts_at_least_min_calls_whatever_the_time():
    calls = []
    route = _local_route(lambda payload: calls.append(payload) or b"answer")
    rate, errors = protocols.throughput(route, _images(1), concurrency=3, seconds=0.0, min_calls=4)
    assert rate > 0 and errors == 0
    assert len(calls) >= 3 + 3 * 4  # a warm-up call per thread, then four timed calls each


def test_throughput_counts_failures_as_errors_not_calls():
    def refuse(payload):
        raise OSError("connection refused")

    rate, errors = protocols.throughput(
        _local_route(refuse), _images(1), concurrency=2, seconds=0.0, min_calls=3
    )
    assert rate == 0 and errors == 2 + 2 * 3
    with pytest.raises(ValueError, match="at least 1"):
        protocols.throughput(_local_route(refuse), _images(1), concurrency=0, seconds=0.1)


def test_embedded_server_steps_times_both_protocols_on_the_routes_bytes():
    x = _images(2)
    with grpc.insecure_channel("localhost:1") as channel:  # nothing is sent: only encode runs
        routes = {
            "gRPC": protocols.grpc_route(channel, config.MODEL_NAME),
            "REST": protocols.rest_route("http://localhost:1", config.MODEL_NAME),
        }
        steps = protocols.embedded_server_steps(routes, x, np.full((2, 10), 0.1), repeats=2)
    assert set(steps) == {"gRPC", "REST"}
    assert all(ms > 0 for step in steps.values() for ms in step.values())
    with pytest.raises(ValueError, match="REST"):
        protocols.embedded_server_steps({"gRPC": routes["gRPC"]}, x, np.zeros((2, 10)))
