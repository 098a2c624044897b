"""Throwaway TLS certificates for lessons and tests: a private CA, and certificates it signs.

Real deployments get certificates from their organisation's CA (or cert-manager, Vault, a cloud
service); these live for a day, are never written outside a temporary folder, and exist so that
TLS and mutual TLS can be shown on one machine. Keys are ECDSA P-256: quick to make, and
accepted by gRPC's TLS stack.

    ca = make_ca()
    server = issue(ca, "localhost", dns_names=["localhost"])
    client = issue(ca, "course client", client=True)
    text = ssl_config_text(server, custom_ca=ca.certificate)   # TF Serving's --ssl_config_file
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

#: How long a certificate made here stays valid.
VALID_FOR = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """A private key and its certificate, both PEM-encoded (what gRPC and TF Serving read)."""

    key: bytes
    certificate: bytes


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer, public_key):
    from cryptography import x509

    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + VALID_FOR)
    )


def make_ca(common_name: str = "course private CA") -> Identity:
    """A self-signed certificate authority: the one certificate both sides must trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = _new_key()
    certificate = (
        _builder(common_name, _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Identity(_key_pem(key), certificate.public_bytes(serialization.Encoding.PEM))


def issue(
    ca: Identity,
    common_name: str,
    *,
    dns_names: Sequence[str] = (),
    client: bool = False,
) -> Identity:
    """A certificate signed by `ca`: for a server (the host names it answers to in `dns_names`)
    or, with `client=True`, for a client that proves who it is (mutual TLS)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not client and not dns_names:
        raise ValueError(
            "A server certificate needs the host names clients will use: "
            "issue(ca, 'localhost', dns_names=['localhost'])."
        )
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate)
    key = _new_key()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        _builder(common_name, ca_certificate.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
            critical=False,
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    return Identity(_key_pem(key), certificate.public_bytes(serialization.Encoding.PEM))


def describe(certificate_pem: bytes) -> dict[str, str]:
    """What a person checks in a certificate: who, signed by whom, for which names, until when."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    purpose_names = {
        ExtendedKeyUsageOID.SERVER_AUTH: "TLS server",
        ExtendedKeyUsageOID.CLIENT_AUTH: "TLS client",
    }
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = ", ".join(names.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = "(none)"
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        purposes = ", ".join(purpose_names.get(oid, oid.dotted_string) for oid in usage.value)
    except x509.ExtensionNotFound:
        purposes = "(any)"
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "is a CA": str(constraints.value.ca),
        "host names (SAN)": dns,
        "purposes": purposes,
        "valid until": certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"),
    }


def ssl_config_text(
    server: Identity, *, custom_ca: bytes | None = None, client_verify: bool = False
) -> str:
    """TF Serving's SSLConfig (--ssl_config_file) as text: PEM *contents*, not file paths.

    `client_verify=True` makes the server demand a client certificate signed by `custom_ca`.
    """
    from google.protobuf import text_format

    from helpers.server.config_files import config_protos

    if client_verify and not custom_ca:
        raise ValueError("client_verify=True needs custom_ca (the CA that signs client certs)")
    ssl_config = config_protos().SSLConfig(
        server_key=server.key.decode("ascii"),
        server_cert=server.certificate.decode("ascii"),
        custom_ca=custom_ca.decode("ascii") if custom_ca else "",
        client_verify=client_verify,
    )
    return text_format.MessageToString(ssl_config)
