"""helpers.compare: a paired comparison that can say "not better"."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from helpers.compare import VERDICTS, compare_predictions


def answers(n_both, n_only_a, n_only_b, n_neither):
    """Labels and two models' predictions with the given right/wrong pattern."""
    blocks = [(1, 1)] * n_both + [(1, 0)] * n_only_a + [(0, 1)] * n_only_b + [(0, 0)] * n_neither
    right_a, right_b = (np.array(column, dtype=bool) for column in zip(*blocks, strict=True))
    labels = np.arange(len(blocks)) % 10
    return labels, np.where(right_a, labels, labels + 1), np.where(right_b, labels, labels + 2)


def test_a_clear_gain_is_better_with_an_interval_above_zero():
    comparison = compare_predictions(*answers(900, 9, 43, 48))
    assert (comparison.only_a_right, comparison.only_b_right) == (9, 43)
    assert comparison.p_value == pytest.approx(stats.binomtest(43, 52, 0.5).pvalue)
    assert comparison.gain == pytest.approx(0.034)
    low, high = comparison.interval
    assert 0 < low < comparison.gain < high
    assert comparison.verdict == "better" and comparison.better
    assert "verdict: v2 is better than v1" in comparison.summary("v1", "v2")


def test_a_small_difference_is_not_better():
    # v2 scores 0.8 points more on 500 images: 16 against 12 disagreements is noise.
    comparison = compare_predictions(*answers(450, 12, 16, 22))
    assert comparison.accuracy_b - comparison.accuracy_a == pytest.approx(0.008)
    assert comparison.p_value > 0.05
    assert comparison.interval[0] < 0 < comparison.interval[1]
    assert comparison.verdict == "not better" and not comparison.better


def test_a_clear_loss_is_worse_and_identical_answers_are_not_better():
    assert compare_predictions(*answers(900, 43, 9, 48)).verdict == "worse"
    same = compare_predictions(*answers(90, 0, 0, 10))
    assert (same.p_value, same.interval, same.verdict) == (1.0, (0.0, 0.0), "not better")
    assert set(VERDICTS) == {"better", "not better", "worse"}


def test_bad_inputs_say_what_to_pass():
    labels, a, b = answers(5, 1, 1, 1)
    with pytest.raises(ValueError, match="pass probabilities.argmax"):
        compare_predictions(labels, np.eye(10)[a], b)
    with pytest.raises(ValueError, match="use the same images"):
        compare_predictions(labels, a[:-1], b)
    with pytest.raises(ValueError, match="at least one image"):
        compare_predictions([], [], [])
