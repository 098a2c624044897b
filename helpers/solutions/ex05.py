"""Solutions to notebook 05's exercises (call it over gRPC)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from helpers import client, config

#: Codes that may go away by themselves: the server was unreachable, or slow this time.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def predict_with_retry(
    stub: Any,
    request: Any,
    *,
    attempts: int = 3,
    timeout: float = 5.0,
    pause: float = 0.1,
) -> Any:
    """Exercise 1: call Predict, retrying UNAVAILABLE and DEADLINE_EXCEEDED with growing pauses.

    Any other code means the request itself is wrong: retrying it would fail the same way, so it
    is re-raised at once. After the last attempt the last error is re-raised.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1; got {attempts}.")
    for attempt in range(attempts):
        try:
            return stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            time.sleep(pause * 2**attempt)  # 0.1 s, 0.2 s, 0.4 s, ...
    raise AssertionError("unreachable")


def predict_concurrently(
    channel: Any,
    images: Any,
    *,
    model_name: str = config.MODEL_NAME,
    batch_size: int = 64,
    max_workers: int = 4,
    timeout: float = 10.0,
) -> np.ndarray:
    """Exercise 2: split images into batches, send them from a thread pool over one channel.

    `executor.map` returns results in the order of its inputs, so the probabilities come back
    in the images' order whatever order the answers arrive in.
    """
    signature = client.get_signature(channel, model_name, timeout=timeout)
    images = np.asarray(images)
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]

    def one_batch(batch: np.ndarray) -> np.ndarray:
        return client.predict(channel, batch, model_name, signature=signature, timeout=timeout)

    with ThreadPoolExecutor(max_workers=max_workers) as executor:
        return np.concatenate(list(executor.map(one_batch, batches)))


def top_k(probabilities: Any, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 3: the k most probable digits per image and their probabilities, best first."""
    probabilities = np.asarray(probabilities)
    if not 1 <= k <= probabilities.shape[-1]:
        raise ValueError(f"k must be between 1 and {probabilities.shape[-1]}; got {k}.")
    digits = np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]
    return digits, np.take_along_axis(probabilities, digits, axis=-1)
