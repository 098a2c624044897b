"""Notebook 07's exercise solutions (keep-alive measured against a live embedded server)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import config
from helpers.solutions import ex07

pytest_plugins = ["served_mnist"]


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, 28, 28, 1), dtype=np.float32)


def test_rounded_json_sizes_shrink_with_fewer_decimals():
    sizes = ex07.rounded_json_sizes(_images(4), decimals=(None, 3, 1))
    assert list(sizes) == [None, 3, 1]
    assert sizes[None] > sizes[3] > sizes[1] > 4 * 784 * 2


def test_keep_alive_speedup_is_a_finite_positive_ratio(served_mnist):
    ratio = ex07.keep_alive_speedup(served_mnist.rest_url, config.MODEL_NAME, _images(1), calls=5)
    assert math.isfinite(ratio) and ratio > 0


def test_gzip_costs_and_break_even():
    images = np.zeros((8, 28, 28, 1), dtype=np.float32)  # all zeros: gzip shrinks it a lot
    costs = ex07.gzip_costs(images, batch_sizes=(1, 8))
    assert costs[8]["bytes"] > costs[1]["bytes"] > 784 * 4
    assert costs[8]["gzip_bytes"] < costs[8]["bytes"] / 10
    assert ex07.break_even_mbit_per_s(costs[8]) > 0
    with pytest.raises(ValueError, match="at least 16 images"):
        ex07.gzip_costs(images, batch_sizes=(16,))
