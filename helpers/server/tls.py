"""gRPC server credentials from TF Serving's SSLConfig (--ssl_config_file).

Like TF Serving, the file holds PEM *contents*; `client_verify: true` demands and verifies a
client certificate signed by `custom_ca` (mutual TLS). Only the gRPC port is encrypted.

gRPC only finds a bad key or certificate when the port is opened, and then says nothing but
"could not bind" (TF Serving: `Failed to BuildAndStart gRPC server`). So the PEM contents are
read here first, with `cryptography`, and a failure names the field and what is wrong with it.
"""

from __future__ import annotations

import grpc


class TLSConfigError(ValueError):
    """The SSLConfig cannot make server credentials."""


def server_credentials(ssl_config) -> grpc.ServerCredentials:
    """`grpc.ssl_server_credentials` for an SSLConfig message."""
    if not ssl_config.server_key or not ssl_config.server_cert:
        raise TLSConfigError("SSLConfig needs both server_key and server_cert (PEM contents)")
    if "-----BEGIN" not in ssl_config.server_cert or "-----BEGIN" not in ssl_config.server_key:
        raise TLSConfigError(
            "SSLConfig server_key and server_cert hold PEM contents, not file paths"
        )
    if ssl_config.client_verify and not ssl_config.custom_ca:
        raise TLSConfigError("SSLConfig client_verify: true needs custom_ca to check clients")
    check_pem(ssl_config.server_key, ssl_config.server_cert, ssl_config.custom_ca)
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() if ssl_config.custom_ca else None,
        require_client_auth=bool(ssl_config.client_verify),
    )


def check_pem(server_key: str, server_cert: str, custom_ca: str = "") -> None:
    """Raise TLSConfigError unless the key, the certificate and the CA (if any) can be read and
    the key belongs to the certificate. Without `cryptography` installed nothing is checked."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        return
    try:
        key = serialization.load_pem_private_key(server_key.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise TLSConfigError(
            f"SSLConfig server_key is not a usable PEM private key ({_reason(exc)}); "
            "it must be an unencrypted key in PEM form"
        ) from None
    try:
        cert = x509.load_pem_x509_certificate(server_cert.encode())
    except ValueError as exc:
        raise TLSConfigError(
            f"SSLConfig server_cert is not a PEM certificate ({_reason(exc)})"
        ) from None
    if custom_ca:
        try:
            x509.load_pem_x509_certificates(custom_ca.encode())
        except ValueError as exc:
            raise TLSConfigError(
                f"SSLConfig custom_ca is not a PEM certificate ({_reason(exc)})"
            ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.PEM
    if key.public_key().public_bytes(encoding, public) != cert.public_key().public_bytes(
        encoding, public
    ):
        raise TLSConfigError(
            "SSLConfig server_key does not belong to server_cert (the certificate was issued "
            "for another key); put the key and certificate of the same pair in the file"
        )


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
