"""Is model B really better than model A? A paired comparison on the same test images.

Two accuracies measured on a few hundred images can differ by a point through luck alone. When
both models answer the *same* images, the images both get right or both get wrong say nothing
about which is better; only the images where they disagree do. McNemar's exact test asks
whether the disagreements split more unevenly than a fair coin would split them, and a
bootstrap interval says how large the accuracy gain plausibly is. A canary is promoted only
when the verdict is "better"; otherwise it is "not better" (or, when the data say so, "worse").

Notebook 04 builds this comparison step by step; later notebooks reuse `compare_predictions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The three verdicts `PairedComparison.verdict` can give.
VERDICTS = ("better", "not better", "worse")


@dataclass(frozen=True)
class PairedComparison:
    """Two models' answers on the same images, and what they say about B against A."""

    n: int  # images both models answered
    both_right: int
    only_a_right: int  # A right, B wrong
    only_b_right: int  # B right, A wrong
    both_wrong: int
    p_value: float  # McNemar's exact test, two-sided
    interval: tuple[float, float]  # bootstrap interval of the accuracy gain (B - A)
    confidence: float  # of the interval, e.g. 0.95
    alpha: float  # the test's significance level, e.g. 0.05
    gains: np.ndarray = field(repr=False, compare=False)  # the bootstrap distribution

    @property
    def accuracy_a(self) -> float:
        return (self.both_right + self.only_a_right) / self.n

    @property
    def accuracy_b(self) -> float:
        return (self.both_right + self.only_b_right) / self.n

    @property
    def gain(self) -> float:
        """Accuracy of B minus accuracy of A, on these images."""
        return (self.only_b_right - self.only_a_right) / self.n

    @property
    def verdict(self) -> str:
        """'better' or 'worse' when McNemar's test finds a real difference, else 'not better'."""
        if self.p_value >= self.alpha or self.only_a_right == self.only_b_right:
            return "not better"
        return "better" if self.only_b_right > self.only_a_right else "worse"

    @property
    def better(self) -> bool:
        """The decision rule: promote B only when this is True."""
        return self.verdict == "better"

    def summary(self, name_a: str = "A", name_b: str = "B") -> str:
        """A few lines for a notebook: both accuracies, the disagreements, the test, the verdict."""
        low, high = self.interval
        return "\n".join(
            [
                f"{name_a}: {self.accuracy_a:.1%}   {name_b}: {self.accuracy_b:.1%}   "
                f"(same {self.n:,} test images)",
                f"only {name_a} right: {self.only_a_right}   only {name_b} right: "
                f"{self.only_b_right}   (both right {self.both_right}, both wrong "
                f"{self.both_wrong})",
                f"gain {self.gain:+.1%}, {self.confidence:.0%} interval "
                f"[{low:+.1%}, {high:+.1%}]; McNemar's exact test p = {self.p_value:.2g}",
                f"verdict: {name_b} is {self.verdict} than {name_a} (rule: p < {self.alpha:g})",
            ]
        )


def _labels(name: str, values, n: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be one label per image, got shape {array.shape}; for probabilities "
            "pass probabilities.argmax(axis=1)."
        )
    if n is not None and len(array) != n:
        raise ValueError(f"{name} has {len(array)} labels but labels has {n}: use the same images.")
    return array


def compare_predictions(
    labels,
    predicted_a,
    predicted_b,
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two models' predicted labels on the same images against the true `labels`.

    McNemar's exact test is a binomial test on the images where exactly one model is right:
    under "no difference" each of them is equally likely to favour A or B. The interval is a
    percentile bootstrap of the per-image gain (+1 B only right, -1 A only right, 0 otherwise).
    """
    from scipy import stats

    truth = _labels("labels", labels)
    if len(truth) == 0:
        raise ValueError("labels is empty: compare the models on at least one image.")
    right_a = _labels("predicted_a", predicted_a, len(truth)) == truth
    right_b = _labels("predicted_b", predicted_b, len(truth)) == truth
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    disagreements = only_a + only_b
    p_value = stats.binomtest(only_b, disagreements, 0.5).pvalue if disagreements else 1.0

    per_image = right_b.astype(np.float64) - right_a.astype(np.float64)
    if disagreements:
        result = stats.bootstrap(
            (per_image,),
            np.mean,
            confidence_level=confidence,
            n_resamples=resamples,
            method="percentile",
            batch=250,  # resamples at a time: bounded memory for 10,000 test images
            random_state=seed,
        )
        interval = (float(result.confidence_interval.low), float(result.confidence_interval.high))
        gains = result.bootstrap_distribution
    else:  # identical right/wrong pattern: every resample gains exactly nothing
        interval, gains = (0.0, 0.0), np.zeros(resamples)
    return PairedComparison(
        n=len(truth),
        both_right=int((right_a & right_b).sum()),
        only_a_right=only_a,
        only_b_right=only_b,
        both_wrong=int((~right_a & ~right_b).sum()),
        p_value=float(p_value),
        interval=interval,
        confidence=confidence,
        alpha=alpha,
        gains=np.asarray(gains),
    )
