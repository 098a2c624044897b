"""Solutions to notebook 06's exercises (visualise predictions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from helpers import client, config


def per_class_accuracy(labels: Any, predicted: Any, num_classes: int = 10) -> np.ndarray:
    """Exercise 1: the share of each digit's images answered right (NaN for an absent digit)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    totals = np.bincount(labels, minlength=num_classes).astype(float)
    right = np.bincount(labels[labels == predicted], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, right / totals, np.nan)


def most_confused_pairs(labels: Any, predicted: Any, k: int = 3) -> list[tuple[int, int, int]]:
    """Exercise 2: the k most frequent (true, predicted, count) mistakes, largest first."""
    counts = np.zeros((10, 10), dtype=int)
    np.add.at(counts, (np.asarray(labels), np.asarray(predicted)), 1)
    np.fill_diagonal(counts, 0)
    pairs = [(int(t), int(p), int(counts[t, p])) for t, p in zip(*np.nonzero(counts), strict=True)]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:k]


def shift_sensitivity(
    channel: Any,
    image: Any,
    shifts: Iterable[int] = range(-8, 9, 2),
    *,
    model_name: str = config.MODEL_NAME,
    signature: client.Signature | str = "serving_default",
) -> dict[int, float]:
    """Exercise 3: probability of the unshifted answer as the digit moves sideways.

    Shifted copies are sent as one batch (no re-centring), so the curve shows how much the
    model relies on digits being centred, as all MNIST digits are.
    """
    image = np.asarray(image, dtype=np.float32).reshape(28, 28, 1)
    shifts = list(shifts)
    if any(abs(s) >= 28 for s in shifts):
        raise ValueError("Shifts must be smaller than the image (28 pixels).")
    batch = np.stack([_shift_sideways(image, s) for s in [0, *shifts]])
    probabilities = client.predict(channel, batch, model_name, signature=signature)
    answer = int(probabilities[0].argmax())
    return {s: float(p[answer]) for s, p in zip(shifts, probabilities[1:], strict=True)}


def _shift_sideways(image: np.ndarray, pixels: int) -> np.ndarray:
    """Move an image `pixels` to the right (left if negative), filling with background."""
    shifted = np.zeros_like(image)
    if pixels >= 0:
        shifted[:, pixels:] = image[:, : image.shape[1] - pixels]
    else:
        shifted[:, :pixels] = image[:, -pixels:]
    return shifted
