"""gRPC server credentials from TF Serving's SSLConfig (--ssl_config_file).

Like TF Serving, the file holds PEM *contents*; `client_verify: true` demands and verifies a
client certificate signed by `custom_ca` (mutual TLS). Only the gRPC port is encrypted.
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
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() if ssl_config.custom_ca else None,
        require_client_auth=bool(ssl_config.client_verify),
    )
