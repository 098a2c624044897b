"""A tiny SavedModel for lessons about the server itself rather than about MNIST.

Its two signatures make server behaviour visible:

- `busy` (also `serving_default`): `seconds` float32 [batch] -> `iterations` int32 [batch].
  It keeps one core busy with small matrix products until that many seconds have passed (the
  largest value in the batch), so a call lasts as long as you ask, and a run the server stops
  early stops burning CPU.
- `echo`: `x` float32 [n] -> `y` = x. The response is as large as the request, which is what a
  lesson on message-size limits needs.

It is written with TensorFlow's graph API (a `tf.compat.v1` graph and SavedModel builder), the
form TF Serving loads, so a timeout on the session run cancels the loop between iterations.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from helpers import config

PROBE_MODEL_NAME = "probe"
BUSY_SIGNATURE = "busy"
ECHO_SIGNATURE = "echo"


def _signature(inputs, outputs):
    """A Predict SignatureDef over graph tensors (written directly: TensorFlow's v1 helper for
    this logs a deprecation warning on every call)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    def info(tensor):
        return meta_graph_pb2.TensorInfo(
            name=tensor.name,
            dtype=tensor.dtype.as_datatype_enum,
            tensor_shape=tensor.shape.as_proto(),
        )

    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for alias, tensor in inputs.items():
        signature.inputs[alias].CopyFrom(info(tensor))
    for alias, tensor in outputs.items():
        signature.outputs[alias].CopyFrom(info(tensor))
    return signature


def _build_graph():
    """The graph and its signature map (built in a fresh graph, so nothing leaks between calls)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        seconds = v1.placeholder(tf.float32, [None], name="seconds")
        started = tf.timestamp()
        budget = tf.cast(tf.reduce_max(seconds), tf.float64)
        identity = tf.eye(32)

        def keep_going(count, matrix):
            return tf.timestamp() - started < budget

        def spin(count, matrix):
            return count + 1, tf.matmul(matrix, identity) * 0.5 + identity

        count, _ = tf.while_loop(keep_going, spin, [tf.constant(0), identity])
        iterations = tf.fill(tf.shape(seconds), count, name="iterations")
        x = v1.placeholder(tf.float32, [None], name="x")
        y = tf.identity(x, name="y")
        busy = _signature({"seconds": seconds}, {"iterations": iterations})
        echo = _signature({"x": x}, {"y": y})
        signatures = {"serving_default": busy, BUSY_SIGNATURE: busy, ECHO_SIGNATURE: echo}
    return graph, signatures


def export_probe_model(
    version: int = 1,
    *,
    name: str = PROBE_MODEL_NAME,
    base_dir: str | os.PathLike | None = None,
) -> Path:
    """Write the probe model as `<base>/<name>/<version>/` (atomically) and return that path.

    An existing version is kept as it is: the model never changes, so there is nothing to redo.
    """
    import tensorflow as tf

    base = config.model_base_path(name)
    if base_dir:
        base = Path(base_dir).expanduser().resolve() / name
    target = base / str(version)
    if (target / "saved_model.pb").is_file():
        return target
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=base))
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.WARNING)  # the v1 builder logs every step at INFO, on stderr
    try:
        graph, signatures = _build_graph()
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(staging / "model"))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
        os.replace(staging / "model", target)
    finally:
        tf_log.setLevel(level)
        shutil.rmtree(staging, ignore_errors=True)
    return target
