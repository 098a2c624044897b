"""helpers.model: the models, and training that validates on held-out training images."""

from __future__ import annotations

import re

import pytest

from helpers.data import load_mnist
from helpers.model import build_model, train


@pytest.fixture(scope="module")
def small_mnist():
    return load_mnist("offline", train_limit=300, test_limit=100, verbose=False)


def test_training_watches_validation_images_and_tests_once_at_the_end(small_mnist, capsys):
    model = build_model("mlp")
    result = train(model, small_mnist, epochs=2)
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(result.history["val_accuracy"]) == 2
    test_loss, test_accuracy = model.evaluate(small_mnist.test, verbose=0)
    assert result.test_accuracy == pytest.approx(test_accuracy)
    progress_text = capsys.readouterr().err  # a terminal: tqdm's usual stderr bar
    assert "2/2" in progress_text
    # A bar that lost its total shows "0epoch [...]"; a rate such as "3.20epoch/s" is fine.
    assert not re.search(r"(?<![\d.])0epoch", progress_text), progress_text


def test_training_quietly_and_bad_epochs(small_mnist, capsys):
    train(build_model("mlp"), small_mnist, epochs=1, progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        train(build_model("mlp"), small_mnist, epochs=0)


def test_unknown_model_kind():
    with pytest.raises(ValueError, match="use one of mlp, cnn"):
        build_model("resnet")
