"""Solutions to notebook 08's exercises (get ready for production)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np

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


def write_warmup_file(
    version_dir: str | Path,
    images: np.ndarray,
    model_name: str = config.MODEL_NAME,
    *,
    input_key: str = "image",
) -> Path:
    """Exercise 4: `assets.extra/tf_serving_warmup_requests`, one PredictLog per image.

    TF Serving reads at most 1,000 records, so more images are refused.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    images = np.asarray(images, dtype=np.float32)
    if not 1 <= len(images) <= 1000:
        raise ValueError(f"a warm-up file holds 1 to 1,000 requests; got {len(images)} images")
    path = Path(version_dir) / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in images:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.inputs[input_key].CopyFrom(client.encode_tensor(image[np.newaxis]))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path
