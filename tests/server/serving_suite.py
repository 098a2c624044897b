"""Helpers of the server conformance suite: models, requests, and the external-server switch.

The suite speaks only TF Serving's protocol (gRPC with the tensorflow_serving protos, and REST),
so it can run against the real server: with MODEL_SERVER=HOST:PORT it targets that server, and
the tests that must start, restart or reconfigure a server process skip, saying why.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest

from helpers import config

EXTERNAL = not config.server_address().embedded
EXTERNAL_REASON = (
    f"needs a server this suite starts itself; MODEL_SERVER={os.environ.get('MODEL_SERVER')} "
    "points at an external one"
)
MNIST = config.MODEL_NAME
MONITORING_CONFIG = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
TOY = "toy"


def own_server_only() -> None:
    """Skip unless the server has the suite's models (always true for the suite's own server).

    An external server (MODEL_SERVER) runs these tests too when it serves the same layout:
    `python tests/server/serving_suite.py export DIR` writes it, with a models.config.
    """
    if EXTERNAL and not external_has_suite_models():
        pytest.skip(
            f"the external server at {config.server_address().grpc_target} does not serve the "
            "suite's models (mnist versions 1 and 2 labelled stable/canary, and toy); "
            "`python tests/server/serving_suite.py export DIR` writes them with a models.config"
        )


@functools.lru_cache(maxsize=1)
def external_has_suite_models() -> bool:
    """True if the MODEL_SERVER server answers like the suite's own (labels, toy model)."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    try:
        with grpc.insecure_channel(config.server_address().grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for label, version in (("stable", 1), ("canary", 2)):
                answer = stub.Predict(predict_request(label=label), timeout=10)
                if answer.model_spec.version.value != version:
                    return False
            toy = predict_request({"x": np.ones(1, np.float32)}, name=TOY)
            return stub.Predict(toy, timeout=10).outputs["y"].float_val[0] == 3.0
    except grpc.RpcError:
        return False


def _example_feature(examples, name: str = "x", default: float = 0.0):
    """One float feature of serialized tf.Examples, as a [batch, 1] tensor."""
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([1], tf.float32, default_value=[default])}
    return tf.io.parse_example(examples, spec)[name]


def _save_tf1(path: Path, graph, signatures: dict, *, initialize: bool = False) -> Path:
    """Write `graph` as a TF1 SavedModel (tag `serve`) with these SignatureDefs."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.Session(graph=graph) as session:
        if initialize:
            session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
        builder.save()
    return path


def build_toy_model(path: Path) -> Path:
    """A TF1 SavedModel with predict, classify, regress and slow signatures (tiny, exact math).

    - serving_default (predict): x float32 [-1] -> y = 2x + 1
    - classify (classify): tf.Example feature x -> classes [["neg","pos"]], scores softmax-ish
    - regress (regress): tf.Example feature x -> outputs 2x + 1
    - spin (predict): n int32 scalar -> s, after n small matrix products (a slow call on demand)
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        y = tf.add(2.0 * x, 1.0, name="y")
        examples = v1.placeholder(tf.string, [None], name="tf_example")
        fx = _example_feature(examples)
        regression = tf.add(2.0 * fx, 1.0, name="regression")
        positive = tf.sigmoid(fx)
        scores = tf.concat([1.0 - positive, positive], axis=1, name="scores")
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(fx)[0], 1], name="classes")
        n = v1.placeholder(tf.int32, [], name="n")
        matrix = tf.eye(64) * 0.5

        def body(i, m):
            return i + 1, tf.matmul(m, matrix) + tf.eye(64)

        _, spun = tf.while_loop(lambda i, m: i < n, body, [tf.constant(0), tf.eye(64)])
        s = tf.reduce_sum(spun, name="s")
        info = v1.saved_model.utils.build_tensor_info
        defs = v1.saved_model.signature_def_utils
        signatures = {
            "serving_default": defs.predict_signature_def({"x": x}, {"y": y}),
            "classify": defs.classification_signature_def(examples, classes, scores),
            "regress": defs.regression_signature_def(examples, regression),
            "spin": defs.build_signature_def(
                {"n": info(n)}, {"s": info(s)}, "tensorflow/serving/predict"
            ),
        }
    return _save_tf1(path, graph, signatures)


def build_half_plus_model(path: Path, intercept: float = 2.0) -> Path:
    """The TF1 model TF Serving's own server tests serve: y = 0.5 x + intercept.

    With intercept 2 it is `half_plus_two` (x = 2 gives 3), with 3 `half_plus_three` (gives 4).
    Slope and intercepts are variables, so loading restores a checkpoint. The predict input `x`
    is not a placeholder but a tensor computed from the tf.Example input, as in TF1 graphs that
    share one input between heads: a server must feed it by name all the same.

    - serving_default (predict): x float32 [-1, 1] -> y
    - classify_x_to_y (classify): tf.Example feature x -> scores = y (one class, no label)
    - regress_x_to_y (regress): tf.Example feature x -> outputs = y
    - regress_x_to_y2 (regress): tf.Example feature x -> outputs = 0.5 x + intercept + 1
    - regress_x2_to_y3 (regress): x2 float32 [-1, 1] -> outputs = 0.5 x2 + intercept + 1
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        slope = v1.Variable(0.5, name="a")
        b = v1.Variable(float(intercept), name="b")
        c = v1.Variable(float(intercept) + 1.0, name="c")
        examples = v1.placeholder(tf.string, [None], name="tf_example")
        x = tf.identity(_example_feature(examples, "x"), name="x")
        x2 = tf.identity(_example_feature(examples, "x2"), name="x2")
        y = tf.identity(slope * x + b, name="y")
        y2 = tf.identity(slope * x + c, name="y2")
        y3 = tf.identity(slope * x2 + c, name="y3")
        info = v1.saved_model.utils.build_tensor_info
        defs = v1.saved_model.signature_def_utils
        signatures = {
            "serving_default": defs.predict_signature_def({"x": x}, {"y": y}),
            "classify_x_to_y": defs.classification_signature_def(examples, None, y),
            "regress_x_to_y": defs.regression_signature_def(examples, y),
            "regress_x_to_y2": defs.regression_signature_def(examples, y2),
            # regression_signature_def insists on a string input; TF Serving does not.
            "regress_x2_to_y3": defs.build_signature_def(
                {"inputs": info(x2)}, {"outputs": info(y3)}, "tensorflow/serving/regress"
            ),
        }
    return _save_tf1(path, graph, signatures, initialize=True)


def build_half_plus_two_tf2(path: Path) -> Path:
    """`half_plus_two` written in native TF2 (tf.Module, tf.function, tf.saved_model.save).

    Unlike the TF1 graph, every signature gets its own input placeholder, and every
    SignatureDef says method_name `tensorflow/serving/predict`, whatever it computes: Classify,
    Regress and MultiInference must still work on it (TF Serving's method-name check is off by
    default for this reason).

    - serving_default: x float32 [1] -> y = 0.5 x + 2
    - classify_x_to_y / regress_x_to_y / regress_x_to_y2: serialized tf.Examples `inputs` ->
      scores / outputs = 0.5 x + 2 (or + 3 for y2)
    """
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_y(self, inputs):
            return {"outputs": self.a * _example_feature(inputs) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_y2(self, inputs):
            return {"outputs": self.a * _example_feature(inputs) + self.c}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify_y(self, inputs):
            return {"scores": self.a * _example_feature(inputs) + self.b}

    module = HalfPlusTwo()
    signatures = {
        "serving_default": module.predict,
        "classify_x_to_y": module.classify_y,
        "regress_x_to_y": module.regress_y,
        "regress_x_to_y2": module.regress_y2,
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def build_checkpoint_model(path: Path) -> Path:
    """tf.saved_model.save of a bare tf.train.Checkpoint: y = v1 * v2 * x with v1 = 3, v2 = 2.

    Its one signature comes from a concrete function traced for a float32 tensor of unknown
    rank, so any shape is accepted (x = 2 gives 12).
    """
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    traced = root.f.get_concrete_function(tf.TensorSpec(None, tf.float32))
    tf.saved_model.save(root, str(path), signatures=traced)
    return path


def build_two_signature_model(path: Path) -> Path:
    """Two signatures over inputs of unknown rank: serving_default -> y = 1, custom -> y = 2."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    spec = [tf.TensorSpec(None, tf.float32)]
    root.f = tf.function(lambda x: {"y": 1.0}, input_signature=spec)
    root.g = tf.function(lambda x: {"y": 2.0}, input_signature=spec)
    tf.saved_model.save(
        root, str(path), signatures={"serving_default": root.f, "custom_signature_key": root.g}
    )
    return path


def build_keras_sequential(path: Path, *, mirrored_cpus: int = 0) -> Path:
    """A Keras Sequential model (input `x` of shape (1,), identity) exported with model.export.

    With `mirrored_cpus=2` it is built under tf.distribute.MirroredStrategy over two virtual
    CPUs, with a Dense(1) layer of weight 1 and bias 0 first: the export must serve the same.
    Virtual CPUs can only be made before TensorFlow starts, so that variant needs a fresh
    process (see `build_in_fresh_process`).
    """
    import keras
    import tensorflow as tf

    def build() -> keras.Model:
        layers = [keras.Input(shape=(1,), dtype="float32", name="x")]
        if mirrored_cpus:
            layers.append(
                keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")
            )
        layers.append(keras.layers.Lambda(lambda t: t, name="y"))
        return keras.Sequential(layers)

    if mirrored_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * mirrored_cpus
        )
        devices = [f"/cpu:{i}" for i in range(mirrored_cpus)]
        with tf.distribute.MirroredStrategy(devices=devices).scope():
            model = build()
    else:
        model = build()
    model.export(str(path), verbose=False)
    return path


def build_in_fresh_process(builder: str, path: Path, **kwargs: object) -> Path:
    """Run `serving_suite.<builder>(path, **kwargs)` in a new Python process (clean TF state)."""
    import subprocess

    code = f"import serving_suite; serving_suite.{builder}({str(path)!r}, **{kwargs!r})"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{builder} failed in a fresh process:\n{done.stderr[-3000:]}")
    return path


def copy_version(store: Path, name: str, version: int, dest_base: Path, dest_version: int) -> Path:
    """Copy a stored version into another base path atomically (write aside, then rename)."""
    staging = dest_base / f".staging-{dest_version}"
    shutil.copytree(store / name / str(version), staging)
    target = dest_base / str(dest_version)
    os.replace(staging, target)
    return target


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def model_config_text(store: Path) -> str:
    """The main server's ModelServerConfig: mnist (1 and 2, labelled) and toy."""
    return f"""
        model_config_list {{
          config {{
            name: '{MNIST}'
            base_path: '{store / MNIST}'
            model_platform: 'tensorflow'
            model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
            version_labels {{ key: 'stable' value: 1 }}
            version_labels {{ key: 'canary' value: 2 }}
          }}
          config {{
            name: '{TOY}'
            base_path: '{store / TOY}'
            model_platform: 'tensorflow'
          }}
        }}
    """


def images(count: int = 1, seed: int = 0) -> np.ndarray:
    """MNIST-shaped float32 inputs in [0, 1]."""
    return np.random.default_rng(seed).random((count, 28, 28, 1), dtype=np.float32)


def tensor_proto(array: np.ndarray, *, content: bool = True):
    """A TensorProto from NumPy without TensorFlow helpers (tensor_content or float_val)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    types = {
        np.dtype(np.float32): types_pb2.DT_FLOAT,
        np.dtype(np.float64): types_pb2.DT_DOUBLE,
        np.dtype(np.int32): types_pb2.DT_INT32,
        np.dtype(np.int64): types_pb2.DT_INT64,
    }
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto(
        dtype=types[array.dtype],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]
        ),
    )
    if content:
        proto.tensor_content = array.tobytes()
    elif array.dtype == np.float32:
        proto.float_val.extend(array.ravel().tolist())
    elif array.dtype == np.float64:
        proto.double_val.extend(array.ravel().tolist())
    elif array.dtype == np.int32:
        proto.int_val.extend(array.ravel().tolist())
    else:
        proto.int64_val.extend(array.ravel().tolist())
    return proto


def predict_request(
    inputs: dict[str, np.ndarray] | None = None,
    *,
    name: str = MNIST,
    version: int | None = None,
    label: str | None = None,
    signature: str = "",
    output_filter: tuple[str, ...] = (),
):
    """A PredictRequest; by default one MNIST image under the key `image`."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    for key, value in (inputs if inputs is not None else {"image": images()}).items():
        request.inputs[key].CopyFrom(tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def output_array(proto) -> np.ndarray:
    """Decode a response TensorProto (any encoding) to NumPy."""
    import tensorflow as tf

    return tf.make_ndarray(proto)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    """Call and return the RpcError it must raise."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def export_suite_models(folder: Path, container_root: str = "/models") -> Path:
    """Write the suite's models and a models.config whose paths start at `container_root`.

    With them, the real TF Serving can be checked against the same conformance suite:
        docker run -p 8500:8500 -p 8501:8501 -v FOLDER:/models tensorflow/serving:2.21.0 \\
          --model_config_file=/models/models.config \\
          --monitoring_config_file=/models/monitoring.config \\
          --allow_version_labels_for_unavailable_models --enable_grpc_healthcheck_service
        MODEL_SERVER=localhost:8500:8501 pytest tests/server
    """
    from helpers.export import export_model
    from helpers.model import build_model

    folder.mkdir(parents=True, exist_ok=True)
    export_model(build_model(seed=0), MNIST, 1, base_dir=folder, overwrite=True)
    export_model(build_model(seed=1), MNIST, 2, base_dir=folder, overwrite=True)
    if not (folder / TOY / "1" / "saved_model.pb").exists():
        build_toy_model(folder / TOY / "1")
    config_file = folder / "models.config"
    config_file.write_text(textwrap.dedent(model_config_text(Path(container_root))))
    write(folder / "monitoring.config", MONITORING_CONFIG)
    return config_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the conformance suite's models.")
    parser.add_argument("command", choices=["export"])
    parser.add_argument("folder", type=Path, help="where to write mnist/, toy/, models.config")
    parser.add_argument(
        "--container-root",
        default="/models",
        help="the folder as the server sees it (the Docker volume's target)",
    )
    args = parser.parse_args(argv)
    config_file = export_suite_models(args.folder.resolve(), args.container_root)
    print(f"wrote {config_file}")
    print(
        export_suite_models.__doc__.split("conformance suite:", 1)[1].replace(
            "FOLDER", str(args.folder.resolve())
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
