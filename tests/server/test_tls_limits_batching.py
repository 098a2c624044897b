"""Production features: TLS and mutual TLS, message-size limits, server-side batching."""

from __future__ import annotations

import datetime
import re
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from serving_suite import (
    EXTERNAL,
    EXTERNAL_REASON,
    MNIST,
    TOY,
    images,
    output_array,
    own_server_only,
    predict_request,
    rpc_error,
    write,
)

# ------------------------------------------------------------------------------ certificates


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem(key=None, cert=None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    if key is not None:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificate(subject: str, key, issuer_cert=None, issuer_key=None, *, ca=False, dns=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    """A throwaway CA, a server certificate for localhost and a client certificate."""
    ca_key = _key()
    ca = _certificate("course test CA", ca_key, ca=True)
    server_key = _key()
    server = _certificate("localhost", server_key, ca, ca_key, dns=("localhost",))
    client_key = _key()
    client = _certificate("course client", client_key, ca, ca_key)
    return {
        "ca": _pem(cert=ca),
        "server_key": _pem(key=server_key),
        "server": _pem(cert=server),
        "client_key": _pem(key=client_key),
        "client": _pem(cert=client),
    }


def _ssl_config(path: Path, pki, *, client_verify: bool) -> Path:
    verify = "true" if client_verify else "false"
    return write(
        path,
        (
            f"server_key: {pki['server_key'].decode()!r}\n"
            f"server_cert: {pki['server'].decode()!r}\n"
            f"custom_ca: {pki['ca'].decode()!r}\n"
            f"client_verify: {verify}\n"
        ).replace("'", '"'),
    )


def _tls_server(model_store, tmp_path_factory, pki, *, client_verify: bool):
    from helpers.server.process import start_server

    folder = tmp_path_factory.mktemp("tls")
    config = _ssl_config(folder / "ssl.config", pki, client_verify=client_verify)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"],
        private_key=pki["client_key"] if client_verify else None,
        certificate_chain=pki["client"] if client_verify else None,
    )
    return start_server(
        model_store / TOY,
        TOY,
        rest_port=0,
        default_ports=False,
        extra_flags=[f"--ssl_config_file={config}"],
        credentials=credentials,
    )


def _toy_predict(channel) -> float:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request({"x": np.array([2.0], np.float32)}, name=TOY)
    return float(stub.Predict(request, timeout=10).outputs["y"].float_val[0])


@pytest.fixture(scope="module")
def tls_server(model_store, tmp_path_factory, pki):
    if EXTERNAL:
        pytest.skip(EXTERNAL_REASON)
    server = _tls_server(model_store, tmp_path_factory, pki, client_verify=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(model_store, tmp_path_factory, pki):
    if EXTERNAL:
        pytest.skip(EXTERNAL_REASON)
    server = _tls_server(model_store, tmp_path_factory, pki, client_verify=True)
    yield server
    server.stop()


def test_tls_call_with_the_ca(tls_server, pki):
    credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"])
    with grpc.secure_channel(tls_server.grpc_target, credentials) as channel:
        assert _toy_predict(channel) == 5.0


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server):
    with grpc.insecure_channel(tls_server.grpc_target) as channel:
        error = rpc_error(_toy_predict, channel)
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_client_that_does_not_trust_the_ca_is_refused(tls_server):
    with grpc.secure_channel(tls_server.grpc_target, grpc.ssl_channel_credentials()) as channel:
        error = rpc_error(_toy_predict, channel)
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_with_certificate(mtls_server, pki):
    credentials = grpc.ssl_channel_credentials(pki["ca"], pki["client_key"], pki["client"])
    with grpc.secure_channel(mtls_server.grpc_target, credentials) as channel:
        assert _toy_predict(channel) == 5.0


def test_mtls_client_without_certificate_is_refused(mtls_server, pki):
    credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"])
    with grpc.secure_channel(mtls_server.grpc_target, credentials) as channel:
        error = rpc_error(_toy_predict, channel)
    assert error.code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------------------ message sizes
BIG = 1_200_000  # floats: the response is ~6 MB as float_val, over the 4 MiB default


def test_response_over_the_client_receive_limit(server, predict_stub):
    own_server_only()
    request = predict_request({"x": np.ones(BIG, np.float32)}, name=TOY)
    error = rpc_error(predict_stub.Predict, request, timeout=60)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The client library words it "[Stream removed (CLIENT: ]Received message larger than max
    # (<n> vs. 4194304)[)]" depending on its version; the sentence and numbers are stable.
    assert re.search(r"Received message larger than max \(\d+ vs\. 4194304\)", error.details())


def test_raising_the_client_receive_limit_fixes_it(server):
    own_server_only()
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(server.grpc_target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_request({"x": np.ones(BIG, np.float32)}, name=TOY)
        response = stub.Predict(request, timeout=60)
    assert output_array(response.outputs["y"]).shape == (BIG,)


def test_server_accepts_requests_over_4_mib(predict_stub):
    """The server raises its receive limit (~2 GB) as TF Serving does."""
    request = predict_request({"image": images(2000)})  # 6.3 MB of tensor_content
    request.output_filter.append("probabilities")
    response = predict_stub.Predict(request, timeout=60)
    assert [d.size for d in response.outputs["probabilities"].tensor_shape.dim] == [2000, 10]


# ------------------------------------------------------------------------------ batching
@pytest.fixture(scope="module")
def batching_server(model_store, tmp_path_factory):
    if EXTERNAL:
        pytest.skip(EXTERNAL_REASON)
    from helpers.server.process import start_server

    folder = tmp_path_factory.mktemp("batching")
    params = write(
        folder / "batching.config",
        """
        max_batch_size { value: 8 }
        batch_timeout_micros { value: 5000 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 1 }
        allowed_batch_sizes: 2
        allowed_batch_sizes: 4
        allowed_batch_sizes: 8
    """,
    )
    server = start_server(
        model_store / MNIST,
        MNIST,
        rest_port=0,
        default_ports=False,
        extra_flags=["--enable_batching", f"--batching_parameters_file={params}"],
    )
    yield server
    server.stop()


def test_batched_results_equal_unbatched_ones(batching_server, predict_stub):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    inputs = [images(1 + i % 3, seed=100 + i) for i in range(24)]
    expected = [
        output_array(
            predict_stub.Predict(predict_request({"image": x}, version=2)).outputs["probabilities"]
        )
        for x in inputs
    ]
    results: dict[int, np.ndarray] = {}
    errors: list[str] = []
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def call(i: int) -> None:
            try:
                response = stub.Predict(predict_request({"image": inputs[i]}), timeout=30)
                results[i] = output_array(response.outputs["probabilities"])
            except grpc.RpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    for i, want in enumerate(expected):
        np.testing.assert_allclose(results[i], want, rtol=1e-5, atol=1e-7)


def test_request_larger_than_the_max_batch_is_refused(batching_server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        error = rpc_error(stub.Predict, predict_request({"image": images(9)}), timeout=10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Task size 9 is larger than maximum input batch size 8"
