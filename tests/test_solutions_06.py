"""Notebook 06's exercise solutions (the shift experiment against a live embedded server)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.solutions import ex06

pytest_plugins = ["served_mnist"]


def test_per_class_accuracy():
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2])
    accuracy = ex06.per_class_accuracy(labels, predicted)
    assert accuracy.shape == (10,)
    np.testing.assert_allclose(accuracy[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(accuracy[3:]).all()


def test_most_confused_pairs():
    labels = np.array([5, 5, 5, 3, 3, 4, 7])
    predicted = np.array([3, 3, 5, 5, 8, 9, 7])
    assert ex06.most_confused_pairs(labels, predicted, k=2) == [(5, 3, 2), (3, 5, 1)]
    assert ex06.most_confused_pairs(labels, labels) == []


def test_shift_sensitivity_falls_off_as_the_digit_leaves_the_centre(served_channel):
    from helpers.data import load_offline_arrays, preprocess

    *_, x_test, y_test = load_offline_arrays()
    one = preprocess(x_test[np.flatnonzero(y_test == 1)[0]])[0]
    curve = ex06.shift_sensitivity(served_channel, one, shifts=[-10, -2, 0, 2, 10])
    assert list(curve) == [-10, -2, 0, 2, 10]
    assert curve[0] > 0.5  # centred, the model answers as it did unshifted
    assert min(curve[-10], curve[10]) < curve[0]
    with pytest.raises(ValueError, match="smaller than the image"):
        ex06.shift_sensitivity(served_channel, one, shifts=[30])
