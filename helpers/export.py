"""Export versioned SavedModels that TF Serving (or the embedded server) can serve.

Layout: `models/<name>/<version>/saved_model.pb` (+ `variables/`), the folder layout of
`--model_base_path`. A server polls that folder, so a version must appear whole: the export is
written to a hidden temporary folder beside it and renamed into place in one step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers import config

SERVING_SIGNATURE = "serving_default"
INPUT_KEY = "image"
OUTPUT_KEY = "probabilities"

#: The variant of the course model that takes bytes: raw uint8 pixels, or PNG files.
BYTES_MODEL_NAME = "mnist_bytes"
PIXELS_KEY = "pixels"
PNG_SIGNATURE = "png"
PNG_KEY = "image_bytes"


def _base(name: str, base_dir: str | os.PathLike | None) -> Path:
    if base_dir:
        return Path(base_dir).expanduser().resolve() / name
    return config.model_base_path(name)


def list_versions(name: str = config.MODEL_NAME, base_dir: str | os.PathLike | None = None):
    """The numeric version folders of a model, sorted (hidden temporary folders are not)."""
    base = _base(name, base_dir)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version(name: str = config.MODEL_NAME, base_dir: str | os.PathLike | None = None):
    """The highest version number of a model, or None when it has none yet."""
    versions = list_versions(name, base_dir)
    return versions[-1] if versions else None


def _write_saved_model(model, path: Path) -> None:
    """Write `model` as a SavedModel: serving_default takes `image`, returns `probabilities`."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image):
        return {OUTPUT_KEY: model(image, training=False)}

    archive.add_endpoint(
        name=SERVING_SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32, name=INPUT_KEY)],
    )
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # no "Assets written to <temporary folder>" lines
    try:
        archive.write_out(str(path), verbose=False)
    finally:
        logger.setLevel(level)


def _check_version(version) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive whole number, got {version!r}.")


def _export_atomically(
    write: Callable[[Path], None],
    name: str,
    version: int,
    base_dir: str | os.PathLike | None,
    overwrite: bool,
) -> Path:
    """Run `write(folder)` beside `<base>/<name>/<version>/`, then rename the result into place.

    Refuses to replace an existing version unless `overwrite=True`.
    """
    _check_version(version)
    base = _base(name, base_dir)
    target = base / str(version)
    if target.exists() and not overwrite:
        free = (latest_version(name, base_dir) or 0) + 1
        raise FileExistsError(
            f"{config.display_path(target)} already exists: export as version={free}, "
            "or pass overwrite=True to replace it."
        )
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=base))
    try:
        write(staging / "model")
        if overwrite and target.exists():  # move the old version aside, swap in one rename
            retired = Path(tempfile.mkdtemp(prefix=f".retired-{version}-", dir=base))
            os.replace(target, retired / "model")
            os.replace(staging / "model", target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            _rename_no_replace(staging / "model", target, name, base_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def export_model(
    model,
    name: str = config.MODEL_NAME,
    version: int = 1,
    *,
    base_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Export `model` to `<base>/<name>/<version>/` atomically and return that path.

    Refuses to replace an existing version unless `overwrite=True`: a served version should be
    immutable, and a new model deserves a new number (the server then rolls it out by itself).
    """
    return _export_atomically(
        lambda path: _write_saved_model(model, path), name, version, base_dir, overwrite
    )


def _write_bytes_variant(source: Path, path: Path) -> None:
    """Wrap the SavedModel at `source` in two signatures that take bytes instead of floats."""
    import tensorflow as tf

    from helpers.data import preprocess

    served = tf.saved_model.load(str(source))
    classify = served.signatures[SERVING_SIGNATURE]
    # The course preprocessing of each of the 256 pixel values, looked up rather than computed:
    # in a graph TensorFlow turns `x / 255` into `x * (1 / 255)`, which differs in the last bit.
    every_value = np.resize(np.arange(256), (28, 28))  # one image holding each pixel value
    scaled = tf.constant(preprocess(every_value).ravel()[:256])

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.uint8, name=PIXELS_KEY)])
    def from_pixels(pixels):
        image = tf.gather(scaled, tf.cast(pixels, tf.int32))
        return {OUTPUT_KEY: classify(**{INPUT_KEY: image})[OUTPUT_KEY]}

    def decode(png):
        return tf.ensure_shape(tf.io.decode_png(png, channels=1), (28, 28, 1))

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name=PNG_KEY)])
    def from_png(image_bytes):
        pixels = tf.map_fn(
            decode, image_bytes, fn_output_signature=tf.TensorSpec((28, 28, 1), tf.uint8)
        )
        return from_pixels(pixels)

    module = tf.Module()
    module.served = served  # keeps the weights tracked, so they are saved with the new signatures
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        tf.saved_model.save(
            module, str(path), signatures={SERVING_SIGNATURE: from_pixels, PNG_SIGNATURE: from_png}
        )
    finally:
        logger.setLevel(level)


def export_bytes_variant(
    source: str | os.PathLike,
    name: str = BYTES_MODEL_NAME,
    version: int | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Re-export a served course model so that clients can send bytes instead of floats.

    The variant has the same weights as `source` (a version folder such as `models/mnist/2`)
    and answers with the same `probabilities`, from two signatures:

    - `serving_default` takes `pixels`, raw uint8 (N, 28, 28, 1), and divides by 255 itself;
    - `png` takes `image_bytes`, a string tensor (N,) of 28x28 grey-scale PNG files (over REST
      they travel as `{"b64": "..."}`).

    The variant's version number is the source's (`mnist/2` becomes `mnist_bytes/2`), so the
    two models a server serves side by side always hold the same weights.
    """
    source = Path(source)
    if not (source / "saved_model.pb").is_file():
        raise FileNotFoundError(
            f"No SavedModel at {source}: export the course model first "
            "(helpers.export.ensure_model)."
        )
    if version is None:
        if not source.name.isdigit():
            raise ValueError(f"{source} is not a version folder; pass version= explicitly.")
        version = int(source.name)
    return _export_atomically(
        lambda path: _write_bytes_variant(source, path), name, version, base_dir, overwrite
    )


def ensure_bytes_variant(
    source_name: str = config.MODEL_NAME,
    name: str = BYTES_MODEL_NAME,
    *,
    base_dir: str | os.PathLike | None = None,
) -> Path:
    """The bytes variant of the latest version of `source_name`, exported if it is missing."""
    version = latest_version(source_name, base_dir)
    if version is None:
        raise FileNotFoundError(
            f"Model {source_name!r} has no version yet: export it first "
            "(helpers.export.ensure_model)."
        )
    target = _base(name, base_dir) / str(version)
    if (target / "saved_model.pb").is_file():
        return target
    return export_bytes_variant(
        _base(source_name, base_dir) / str(version), name, version, base_dir=base_dir
    )


def _rename_no_replace(source: Path, target: Path, name: str, base_dir) -> None:
    """Move `source` to `target`, refusing if `target` appeared meanwhile (another export).

    The name is claimed with mkdir, which exactly one process can win; the finished export then
    replaces that empty folder in one rename (a server never sees a half-written version, and
    ignores the empty folder for its instant: it holds no saved_model.pb).
    """
    try:
        target.mkdir()
    except FileExistsError:
        free = (latest_version(name, base_dir) or 0) + 1
        raise FileExistsError(
            f"{config.display_path(target)} was created by someone else while this export "
            "was being written: "
            f"export as version={free}, or pass overwrite=True to replace it."
        ) from None
    try:
        if os.name == "nt":  # Windows cannot rename onto an existing folder
            target.rmdir()
        os.replace(source, target)
    except OSError:
        with contextlib.suppress(OSError):
            target.rmdir()  # give the claimed name back (only if still empty)
        raise


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature: its graph tensor name, dtype and shape."""

    name: str
    dtype: str
    shape: tuple  # None for an unknown dimension (-1 in the SignatureDef)


@dataclass(frozen=True)
class SignatureInfo:
    """A signature's inputs and outputs by key, and its method name (predict/classify/regress)."""

    inputs: dict
    outputs: dict
    method_name: str


def read_signature_defs(path: str | os.PathLike) -> dict:
    """The SignatureDef protos of a SavedModel's `serve` MetaGraph, read from saved_model.pb.

    Reads the file only (no graph is loaded), which is what `saved_model_cli show` does too.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    folder = Path(path)
    pb = folder / "saved_model.pb"
    if not pb.is_file():
        raise FileNotFoundError(
            f"No SavedModel at {folder} (no saved_model.pb): export one first with "
            "helpers.export.export_model(...) (notebook 03), or check the version number."
        )
    saved_model = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"The SavedModel at {folder} has no MetaGraph tagged 'serve'.")


def _tensor_info(info) -> TensorInfo:
    from tensorflow.python.framework import dtypes

    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim)
    return TensorInfo(info.name, dtypes.as_dtype(info.dtype).name, shape)


def inspect_signature(path: str | os.PathLike, signature: str = SERVING_SIGNATURE) -> SignatureInfo:
    """Inputs, outputs and method of one signature: the Python twin of `saved_model_cli show`."""
    defs = read_signature_defs(path)
    if signature not in defs:
        known = ", ".join(sorted(k for k in defs if not k.startswith("__")))
        raise KeyError(f"Signature {signature!r} not found in {path}; it has: {known}.")
    sig = defs[signature]
    return SignatureInfo(
        inputs={k: _tensor_info(v) for k, v in sorted(sig.inputs.items())},
        outputs={k: _tensor_info(v) for k, v in sorted(sig.outputs.items())},
        method_name=sig.method_name,
    )


def ensure_model(
    name: str = config.MODEL_NAME,
    version: int = 1,
    *,
    kind: str = "mlp",
    base_dir: str | os.PathLike | None = None,
    epochs: int = 2,
) -> Path:
    """Return the path of `<name>/<version>`, training and exporting a quick model if it is missing.

    Lets any notebook be opened first: a few seconds of training on whatever data source is
    available gives a real (if not the best) model to serve.
    """
    target = _base(name, base_dir) / str(version)
    if (target / "saved_model.pb").is_file():
        return target
    from helpers.data import load_mnist
    from helpers.model import build_model, train

    print(
        f"No model at {config.display_path(target)}: "
        f"training a quick '{kind}' model ({epochs} epochs) to serve."
    )
    data = load_mnist()
    model = build_model(kind)
    result = train(model, data, epochs=epochs, progress=False)
    print(f"Test accuracy {result.test_accuracy:.3f}; exporting version {version}.")
    return export_model(model, name, version, base_dir=base_dir, overwrite=target.exists())


def folder_tree(path: str | os.PathLike) -> str:
    """The files under `path` with their sizes, like `tree`, for showing a SavedModel's layout."""
    root = Path(path)
    lines = [f"{root.name}/"]

    def walk(folder: Path, indent: str) -> None:
        entries = sorted(folder.iterdir(), key=lambda p: (p.is_file(), p.name))
        for i, entry in enumerate(entries):
            last = i == len(entries) - 1
            branch = "└── " if last else "├── "
            if entry.is_dir():
                lines.append(f"{indent}{branch}{entry.name}/")
                walk(entry, indent + ("    " if last else "│   "))
            else:
                lines.append(f"{indent}{branch}{entry.name}  ({entry.stat().st_size:,} bytes)")

    walk(root, "")
    return "\n".join(lines)
