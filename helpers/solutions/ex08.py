"""Solutions to notebook 08's exercises (get ready for production)."""

from __future__ import annotations

import datetime
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from helpers import client, config
from helpers.compare import PairedComparison, compare_predictions
from helpers.load import BackgroundLoad
from helpers.solutions.ex04 import serve_and_label, wait_until_unloaded

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


@dataclass(frozen=True)
class CanaryOutcome:
    """What `canary_first` decided, and what the callers of `stable` saw meanwhile."""

    comparison: PairedComparison  # stable (A) against the candidate (B), on the same images
    outcomes: dict[str, int]  # how the callers' calls ended: {'OK': n, ...}
    answered_by: Counter  # {version: calls it answered}

    @property
    def promoted(self) -> bool:
        """`stable` now points at the candidate (the rule: only on "better")."""
        return self.comparison.better

    @property
    def failed_calls(self) -> int:
        return sum(count for outcome, count in self.outcomes.items() if outcome != "OK")


def canary_first(
    channel: Any,
    base_path: str,
    candidate: int,
    images: np.ndarray,
    labels: np.ndarray,
    model_name: str = config.MODEL_NAME,
    *,
    stable: int = 1,
    callers: int = 2,
    timeout: float = 60.0,
) -> CanaryOutcome:
    """Exercise 5: judge `candidate` beside `stable` before it serves anyone; count failures.

    Callers keep calling the `stable` label throughout. Every config sent keeps `stable`
    pointing at an AVAILABLE version: a config without it, even for a moment (as
    `serve_and_label` sends while loading), fails every call made in between with "Unrecognized
    servable version label". The steps: load the candidate beside `stable`; label it `canary`;
    judge both labels on the same images; move `stable` only on "better"; unload the loser.
    `base_path` is the model folder as the server sees it.
    """

    def send(versions: list[int], labels_now: dict[str, int]) -> None:
        client.reload_config(
            channel,
            client.build_model_config(model_name, base_path, versions=versions, labels=labels_now),
        )

    if candidate == stable:
        raise ValueError(f"the candidate must be another version than stable ({stable})")
    serve_and_label(channel, model_name, base_path, {"stable": stable}, timeout=timeout)
    signature = client.get_signature(channel, model_name, label="stable")
    one_image = client.prepare_images(np.asarray(images)[:1], signature.input)
    request = client.make_predict_request(
        one_image, model_name, signature.input_key, label="stable"
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with BackgroundLoad(lambda: stub.Predict(request, timeout=10), threads=callers) as load:
        both = sorted({stable, candidate})
        send(both, {"stable": stable})
        client.wait_until_available(channel, model_name, version=candidate, timeout=timeout)
        send(both, {"stable": stable, "canary": candidate})
        answers = {
            label: client.predict(channel, images, model_name, label=label).argmax(axis=1)
            for label in ("stable", "canary")
        }
        comparison = compare_predictions(labels, answers["stable"], answers["canary"])
        winner, loser = (candidate, stable) if comparison.better else (stable, candidate)
        send(both, {"stable": winner})
        send([winner], {"stable": winner})
        wait_until_unloaded(channel, model_name, loser, timeout=timeout)
        time.sleep(0.5)  # a few calls on the final config, too
    records = load.records
    return CanaryOutcome(
        comparison=comparison,
        outcomes=load.outcomes(),
        answered_by=Counter(record.version for record in records if record.version is not None),
    )
