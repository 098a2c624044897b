"""Plots more than one notebook draws: learning curves, digits, confusion matrices."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: dict, *, title: str = "Learning curves"):
    """Loss and accuracy per epoch, training against validation, side by side."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], "o-", label="training")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "s--", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """Counts[true, predicted] for integer class labels."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}.")
    counts = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def plot_confusion_matrix(y_true, y_pred, *, ax=None, title: str = "Confusion matrix"):
    """A labelled heat map of the confusion matrix; the diagonal holds the correct answers."""
    plt = _plt()
    counts = confusion_matrix(y_true, y_pred)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(counts, cmap="Blues")
    for (true, pred), n in np.ndenumerate(counts):
        if n:
            color = "white" if n > counts.max() / 2 else "black"
            ax.text(pred, true, str(n), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} (accuracy {accuracy:.1%})")
    return ax


def plot_digits(images, labels=None, predictions=None, probabilities=None, *, ncols: int = 8):
    """A grid of digits; with predictions, each title shows it and wrong ones are red."""
    plt = _plt()
    images = np.asarray(images)
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].reshape(28, 28), cmap="gray_r")
        parts, color = [], "black"
        if predictions is not None:
            parts.append(f"pred {int(predictions[i])}")
            if probabilities is not None:
                parts.append(f"{float(np.max(probabilities[i])):.0%}")
            if labels is not None and int(predictions[i]) != int(labels[i]):
                color = "red"
                parts.append(f"(true {int(labels[i])})")
        elif labels is not None:
            parts.append(f"label {int(labels[i])}")
        ax.set_title(" ".join(parts), fontsize=8, color=color)
    fig.tight_layout()
    return fig
