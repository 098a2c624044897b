"""Solutions to notebook 05's exercises (call it over gRPC)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from helpers import client, config

#: The one code worth retrying: the call did not reach a working server. DEADLINE_EXCEEDED is
#: not here: the time the caller allowed is spent, and the server was already too slow.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


def predict_with_retry(
    stub: Any,
    request: Any,
    *,
    attempts: int = 3,
    timeout: float = 5.0,
    pause: float = 0.1,
) -> Any:
    """Exercise 1: call Predict, retrying UNAVAILABLE with growing pauses, all within `timeout`.

    `timeout` is one deadline for every attempt together, as gRPC's retryPolicy counts it: each
    attempt gets the time that is left, and no retry starts that the deadline would cut off. Any
    other code is re-raised at once: DEADLINE_EXCEEDED (the time is spent), and the codes that
    say the request itself is wrong (retrying would fail the same way). After the last attempt
    the last error is re-raised.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1; got {attempts}.")
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout}.")
    deadline = time.monotonic() + timeout
    for attempt in range(attempts):
        try:
            return stub.Predict(request, timeout=deadline - time.monotonic())
        except grpc.RpcError as error:
            wait = pause * 2**attempt  # 0.1 s, 0.2 s, 0.4 s, ...
            last = attempt == attempts - 1
            if error.code() not in RETRYABLE or last or time.monotonic() + wait >= deadline:
                raise
            time.sleep(wait)
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
