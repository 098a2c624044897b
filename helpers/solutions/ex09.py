"""Solutions to notebook 09's exercises (operate in production)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from helpers import client, config
from helpers.compare import PairedComparison, compare_predictions
from helpers.load import BackgroundLoad
from helpers.solutions.ex04 import serve_and_label, wait_until_unloaded


def write_warmup_file(
    version_dir: str | Path,
    images: np.ndarray,
    model_name: str = config.MODEL_NAME,
    *,
    input_key: str = "image",
) -> Path:
    """Exercise 1: `assets.extra/tf_serving_warmup_requests`, one PredictLog per image.

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
    """Exercise 2: judge `candidate` beside `stable` before it serves anyone; count failures.

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
