"""Solutions to notebook 02's exercises."""

from __future__ import annotations

import numpy as np

from helpers.data import load_mnist, load_offline_arrays, normalize_image
from helpers.model import build_model, train


def compare_models(epochs: int = 3, data=None) -> dict[str, dict[str, float]]:
    """Exercise 1: train the dense network and the CNN; return accuracy and seconds of each."""
    data = data or load_mnist(verbose=False)
    results = {}
    for kind in ("mlp", "cnn"):
        result = train(build_model(kind), data, epochs=epochs, progress=False)
        results[kind] = {"accuracy": result.test_accuracy, "seconds": result.seconds}
    return results


def train_on_sorted_data(epochs: int = 2, *, shuffle: bool = False) -> float:
    """Exercise 2: train on the offline training images sorted by label; return test accuracy.

    Without shuffling, every batch holds one digit only, and each stretch of training pulls the
    model towards the digit it is looking at: it ends up favouring the last digits it saw.
    """
    import tensorflow as tf

    x_train, y_train, x_test, y_test = load_offline_arrays()
    order = np.argsort(y_train, kind="stable")
    train_ds = tf.data.Dataset.from_tensor_slices((x_train[order], y_train[order]))
    train_ds = train_ds.map(normalize_image)
    if shuffle:
        train_ds = train_ds.shuffle(len(order), seed=0)
    test_ds = tf.data.Dataset.from_tensor_slices((x_test, y_test)).map(normalize_image)
    model = build_model("mlp")
    model.fit(train_ds.batch(64), epochs=epochs, shuffle=False, verbose=0)
    return float(model.evaluate(test_ds.batch(256), verbose=0)[1])
