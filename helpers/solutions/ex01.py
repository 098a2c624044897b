"""Solutions to notebook 01's exercises."""

from __future__ import annotations

import json
from collections import defaultdict

import grpc
import numpy as np

from helpers import payloads
from helpers.digits import digits_grpc, digits_pb2

#: The Python client's default receive limit: 4 MiB (`grpc.max_receive_message_length`).
DEFAULT_MESSAGE_LIMIT = 4 * 1024 * 1024


def candidate_hit_rate(target: str, *, timeout: float = 30.0) -> dict[int, float]:
    """Exercise 1: how often is the true digit among the server's loop-based `candidates`?

    Fetch the server's whole dataset with one server-streaming call, send it straight back
    through one bidirectional call, and compare each answer with the image's label.
    Returns digit -> share of its images whose label is among the candidates.
    """
    with grpc.insecure_channel(target) as channel:
        stub = digits_grpc.DigitsStub(channel)
        dataset = list(stub.StreamDigits(digits_pb2.DigitQuery(), timeout=timeout))
        answers = list(stub.MeasureEach(iter(dataset), timeout=timeout))
    hits: dict[int, list[bool]] = defaultdict(list)
    for image, answer in zip(dataset, answers, strict=True):
        hits[image.label].append(image.label in answer.candidates)
    return {digit: float(np.mean(found)) for digit, found in sorted(hits.items())}


def retrying_channel(
    target: str, *, max_attempts: int = 5, initial_backoff_s: float = 0.1
) -> grpc.Channel:
    """Exercise 2: a channel whose calls gRPC itself retries while the server is UNAVAILABLE.

    The retry policy lives in the channel's service config, so no call site changes. Only
    UNAVAILABLE is retried: an INVALID_ARGUMENT will fail the same way every time.
    """
    policy = {
        "methodConfig": [
            {
                "name": [{"service": "course.digits.Digits"}],
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": f"{initial_backoff_s}s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(policy)),
        # try to reconnect soon after a refused connection (the default waits about 1 s)
        ("grpc.initial_reconnect_backoff_ms", int(initial_backoff_s * 1000)),
    ]
    return grpc.insecure_channel(target, options=options)


def largest_batch(image, encoding: str, limit: int = DEFAULT_MESSAGE_LIMIT) -> int:
    """Exercise 3: the most copies of `image` one message of `encoding` can carry within `limit`.

    Sizes grow by the same amount per image (plus a few bytes of length prefixes), so two
    measurements give a close first guess; exact encodes then settle the last image.
    """
    one = payloads.as_batch(image)[:1]

    def size(count: int) -> int:
        return len(payloads.encode(np.repeat(one, count, axis=0), encoding))

    per_image = size(2) - size(1)
    count = max(0, (limit - (size(1) - per_image)) // per_image)
    while count > 0 and size(count) > limit:
        count -= 1
    while size(count + 1) <= limit:
        count += 1
    return int(count)
