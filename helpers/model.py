"""The course's MNIST models: a small dense network (version 1), a small CNN (version 2), and a
wide dense network whose inference costs enough to dominate a served call (notebook 09 measures
batching with it).

All take one named input, `image` (28, 28, 1) float32 in [0, 1], and end in 10 softmax units
named `probabilities`. Naming the input matters: Keras 3 otherwise calls it `keras_tensor_N`
from a process-wide counter, and the key a client must send changes when a cell is re-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from helpers.data import IMAGE_SHAPE, NUM_CLASSES

MODEL_KINDS = ("mlp", "cnn", "wide_mlp")


def build_model(kind: str = "mlp", *, seed: int = 0):
    """A compiled Keras model: 'mlp' (fast, ~97% on full MNIST), 'cnn' (better, slower), or
    'wide_mlp' (three 2048-unit layers, 10 million weights: a stand-in for a model whose
    inference, not the network call, is most of the cost; one image at a time it reads all 40 MB
    of weights for a few multiply-adds each, so a batch shares that cost)."""
    import keras

    if kind not in MODEL_KINDS:
        raise ValueError(f"Unknown model kind {kind!r}: use one of {', '.join(MODEL_KINDS)}.")
    keras.utils.set_random_seed(seed)
    image = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="image")
    if kind == "mlp":
        x = keras.layers.Flatten(name="flatten")(image)
        x = keras.layers.Dense(128, activation="relu", name="hidden")(x)
        x = keras.layers.Dropout(0.2, name="dropout")(x)
    elif kind == "wide_mlp":
        x = keras.layers.Flatten(name="flatten")(image)
        for i in range(3):
            x = keras.layers.Dense(2048, activation="relu", name=f"wide{i + 1}")(x)
    else:
        x = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(image)
        x = keras.layers.MaxPooling2D(name="pool1")(x)
        x = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
        x = keras.layers.MaxPooling2D(name="pool2")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dropout(0.3, name="dropout")(x)
    probabilities = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs=image, outputs=probabilities, name=f"mnist_{kind}")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


@dataclass
class TrainingResult:
    """What training produced: per-epoch curves (training and validation) and the test result."""

    history: dict = field(default_factory=dict)
    test_loss: float = float("nan")
    test_accuracy: float = float("nan")
    seconds: float = 0.0


def train(model, data, *, epochs: int = 5, progress: bool = True) -> TrainingResult:
    """Fit on `data.train`, watch `data.validation` each epoch, then evaluate on the test split.

    The test split is used once, at the end: choosing anything (epochs, a model) by looking at
    it would make its accuracy flattering. Shows one progress bar over epochs
    (`helpers.progress`) instead of Keras' per-batch log.
    """
    import time

    from tqdm.keras import TqdmCallback

    from helpers.progress import progress as progress_bar

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    callbacks = [TqdmCallback(epochs, verbose=0, tqdm_class=progress_bar)] if progress else []
    start = time.perf_counter()
    history = model.fit(
        data.train,
        validation_data=getattr(data, "validation", None),
        epochs=epochs,
        shuffle=False,  # the tf.data pipeline already shuffles every epoch
        verbose=0,
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(data.test, verbose=0)
    return TrainingResult(dict(history.history), float(test_loss), float(test_accuracy), seconds)


def checkpoint_path(kind: str = "mlp"):
    """Where notebook 02 keeps its trained Keras model for notebook 03 to export.

    It sits in `models/keras/`, beside (not inside) the served model folders.
    """
    from helpers import config

    return config.models_dir() / "keras" / f"mnist_{kind}.keras"


def save_trained(model, kind: str = "mlp"):
    """Save a trained model (Keras format) at `checkpoint_path(kind)` and return the path."""
    path = checkpoint_path(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def load_or_train(kind: str = "mlp", *, epochs: int = 5):
    """The model notebook 02 trained, or (when it has not been run) a freshly trained one."""
    import keras

    from helpers import config

    path = checkpoint_path(kind)
    if path.is_file():
        print(f"Loaded the model trained in notebook 02 from {path.name}.")
        return keras.models.load_model(path)
    from helpers.data import load_mnist

    print(f"No trained model at {config.display_path(path)}: training one now ({epochs} epochs).")
    model = build_model(kind)
    result = train(model, load_mnist(), epochs=epochs)
    print(f"Test accuracy: {result.test_accuracy:.3f}")
    save_trained(model, kind)
    return model
