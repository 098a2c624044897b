"""The helpers notebooks 08 and 09 are built on: certificates, the wiretap, background load, the
probe model and the server's deadline, the wide model, and the two plots."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from helpers import certificates, client, probe_model
from helpers.load import BackgroundLoad
from helpers.wiretap import HTTP2_PREFACE, Wiretap

pytest_plugins = ["served_mnist"]


# ------------------------------------------------------------------------------ certificates
def test_certificates_chain_to_the_ca():
    ca = certificates.make_ca("test CA")
    server = certificates.issue(ca, "localhost", dns_names=["localhost", "model.internal"])
    person = certificates.issue(ca, "someone", client=True)
    assert certificates.describe(ca.certificate)["is a CA"] == "True"
    facts = certificates.describe(server.certificate)
    assert facts["issuer"] == "CN=test CA" and facts["is a CA"] == "False"
    assert facts["host names (SAN)"] == "localhost, model.internal"
    assert facts["purposes"] == "TLS server"
    assert certificates.describe(person.certificate)["purposes"] == "TLS client"
    assert server.key.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_a_server_certificate_needs_host_names():
    with pytest.raises(ValueError, match="host names"):
        certificates.issue(certificates.make_ca(), "localhost")


def test_ssl_config_text_is_tf_servings_sslconfig():
    from google.protobuf import text_format

    from helpers.server.config_files import config_protos

    ca = certificates.make_ca()
    server = certificates.issue(ca, "localhost", dns_names=["localhost"])
    text = certificates.ssl_config_text(server, custom_ca=ca.certificate, client_verify=True)
    parsed = text_format.Parse(text, config_protos().SSLConfig())
    assert parsed.server_cert == server.certificate.decode()
    assert parsed.custom_ca == ca.certificate.decode() and parsed.client_verify
    with pytest.raises(ValueError, match="custom_ca"):
        certificates.ssl_config_text(server, client_verify=True)


# ------------------------------------------------------------------------------ wiretap and load
def test_wiretap_sees_plaintext_grpc(served_mnist):
    with Wiretap(served_mnist.grpc_target) as tap:
        with grpc.insecure_channel(tap.target) as channel:
            answer = client.predict(channel, np.zeros((1, 28, 28, 1), np.float32), "mnist")
        seen = tap.client_bytes()
    assert answer.shape == (1, 10)
    assert seen.startswith(HTTP2_PREFACE) and b"mnist" in seen


def test_wiretap_refuses_a_target_without_a_port():
    with pytest.raises(ValueError, match="host:port"):
        Wiretap("localhost")


def test_background_load_records_every_call(served_mnist, served_channel):
    import time

    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from helpers.bench import predict_request

    stub = prediction_service_pb2_grpc.PredictionServiceStub(served_channel)
    request = predict_request("mnist", np.zeros((1, 28, 28, 1), np.float32))
    with BackgroundLoad(lambda: stub.Predict(request, timeout=10), threads=2, pause=0.01) as load:
        time.sleep(0.3)
        assert 0.3 <= load.now() < 30
    records = load.records
    assert records and load.outcomes() == {"OK": len(records)}
    assert {r.version for r in records} == {1}  # read from each answer's model_spec
    assert all(0 <= r.started <= r.ended for r in records)
    assert load.outcomes(start=records[-1].started + 1) == {}
    with pytest.raises(ValueError, match="at least 1"):
        BackgroundLoad(lambda: stub.Predict(request, timeout=10), threads=0)


# ------------------------------------------------------------------------------ probe and deadline
@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    from helpers.server.servable import Servable

    path = probe_model.export_probe_model(1, base_dir=tmp_path_factory.mktemp("probe"))
    servable = Servable(probe_model.PROBE_MODEL_NAME, 1, str(path))
    yield servable
    servable.close()


def test_probe_echo_returns_its_input(probe):
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(probe.run("echo", {"x": x})["y"], x)


def test_busy_runs_to_the_end_without_a_deadline(probe):
    for timeout_in_ms in (0, -1):  # RunOptions.timeout_in_ms: 0 or less is no limit
        out = probe.run(
            "busy", {"seconds": np.array([0.05, 0.0], np.float32)}, timeout_in_ms=timeout_in_ms
        )
        assert out["iterations"].shape == (2,) and out["iterations"][0] > 0


def test_a_deadline_stops_the_tensorflow_run(probe):
    """The error comes from TensorFlow's own run timeout: the run was stopped, not abandoned."""
    from helpers.server.errors import ServingError

    with pytest.raises(ServingError) as caught:
        probe.run("busy", {"seconds": np.array([30.0], np.float32)}, timeout_in_ms=200)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "Timed out" in caught.value.message


# ------------------------------------------------------------------------------ model and plots
def test_wide_model_is_heavy_and_mnist_shaped():
    from helpers.model import build_model

    model = build_model("wide_mlp")
    assert model.count_params() > 10_000_000
    assert model.input.name == "image" and tuple(model.output.shape) == (None, 10)


def test_plots_draw_load_curves_and_a_call_timeline():
    import matplotlib

    matplotlib.use("Agg")
    from helpers.load import CallRecord
    from helpers.plots import plot_call_timeline, plot_load_curves

    rows = [
        {"concurrency": c, "req_per_s": 100.0 * c, "p50_ms": 1.0 * c, "p99_ms": 2.0 * c}
        for c in (1, 4, 16)
    ]
    axes = plot_load_curves({"a": rows, "b": rows}, title="t")
    assert len(axes[0].lines) == 2 and len(axes[1].lines) == 4
    repeated = rows + [{**row, "req_per_s": row["req_per_s"] + 10} for row in rows]
    axes = plot_load_curves({"a": repeated}, title="t")
    (median_line, run_dots) = axes[0].lines
    assert list(median_line.get_ydata()) == [105.0, 405.0, 1605.0]  # the median of the runs
    assert len(run_dots.get_xdata()) == 6  # one dot per run
    records = [CallRecord(0.1, 0.2, "OK", 1), CallRecord(0.3, 0.4, "UNAVAILABLE")]
    ax = plot_call_timeline(records, [(0.25, "SIGTERM")])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["failed", "version 1"]
