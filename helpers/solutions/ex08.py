"""Solutions to notebook 08's exercises (secure and observe)."""

from __future__ import annotations

import datetime
from typing import Any

import grpc

from helpers import client, config

#: Statuses that mean "the model is not there (yet)", not "the server is unreachable".
_NOT_READY_CODES = (grpc.StatusCode.NOT_FOUND,)


def days_left(certificate_pem: bytes, *, now: datetime.datetime | None = None) -> float:
    """Exercise 1: days until the certificate expires (negative once it has)."""
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(certificate_pem)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (certificate.not_valid_after_utc - now).total_seconds() / 86400


def is_ready(channel: Any, model_name: str = config.MODEL_NAME, version: int | None = None) -> bool:
    """Exercise 2: True when the model (or `version`) is AVAILABLE.

    A model the server does not know, or one still loading, is "not ready" (False): the probe
    should keep the server out of rotation. A server that cannot be reached raises: that is a
    liveness problem, not a readiness answer.
    """
    try:
        rows = client.get_model_status(channel, model_name, version=version)
    except grpc.RpcError as error:
        if error.code() in _NOT_READY_CODES:
            return False
        raise
    return any(row.state == "AVAILABLE" for row in rows)


def error_ratio(metrics_text: str, model_name: str = config.MODEL_NAME) -> float:
    """Exercise 3: the share of `model_name`'s counted calls whose status is not OK.

    Reads `:tensorflow:serving:request_count` with prometheus_client's parser; 0.0 when the model
    has not been called yet.
    """
    from prometheus_client.parser import text_string_to_metric_families

    total = failed = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != ":tensorflow:serving:request_count":
            continue
        for sample in family.samples:
            if sample.labels.get("model_name") != model_name:
                continue
            total += sample.value
            if sample.labels.get("status") != "OK":
                failed += sample.value
    return failed / total if total else 0.0
