"""Notebook 02's exercise solutions still run and still make their point."""

from helpers.data import load_mnist
from helpers.solutions import ex02


def test_compare_models_reports_both_kinds():
    data = load_mnist("offline", train_limit=512, test_limit=256, verbose=False)
    results = ex02.compare_models(epochs=1, data=data)
    assert set(results) == {"mlp", "cnn"}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["seconds"] > 0 for r in results.values())


def test_sorted_data_without_shuffle_hurts():
    sorted_accuracy = ex02.train_on_sorted_data(epochs=1)
    shuffled_accuracy = ex02.train_on_sorted_data(epochs=1, shuffle=True)
    assert shuffled_accuracy > sorted_accuracy + 0.1, (sorted_accuracy, shuffled_accuracy)
