"""One loaded model version: a SavedModel in its own graph and session, run like TF Serving.

TF Serving loads a SavedModel with the TF1 loader (`LoadSavedModel` into a `Session`) and runs a
signature with `Session::Run` on the tensor names in its SignatureDef. Doing the same here gives
the same metadata (the MetaGraphDef's `signature_def` map) and the same runtime errors (a float64
input fails with `Expects arg[0] to be float but double is provided`, a bad shape with the first
failing op's message). `make_callable`/`session.run` would add Python-side checks and silent
casts that the real server does not have, so the low-level `_call_tf_sessionrun` is used.

Every run carries TF Serving's deadline: `timeout_in_ms` becomes `RunOptions.timeout_in_ms`
(prediction_service_impl.cc sets it from the gRPC deadline, http_rest_api_handler.cc from
--rest_api_timeout_in_ms), so TensorFlow itself stops an over-deadline run and answers
DEADLINE_EXCEEDED "Timed out waiting for notification"; the thread that ran it is free again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2  # noqa: F401 - registers tf.Example for Input
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.client import pywrap_tf_session
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    regression_pb2,
)

from helpers.server import tensors
from helpers.server.errors import (
    ServingError,
    failed_precondition,
    first_line,
    invalid_argument,
    to_serving_error,
)

if TYPE_CHECKING:
    from helpers.server.batching import Batcher

log = logging.getLogger("helpers.server")
# The TF1 loader is what TF Serving uses; its deprecation notice is noise in the server log.
tf.get_logger().setLevel(logging.ERROR)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def _join(keys: Iterable[str]) -> str:
    """absl::StrJoin over a std::set: sorted, comma-separated, no spaces."""
    return ",".join(sorted(keys))


class Servable:
    """A loaded version: `.name`, `.version`, `.signature_defs`, and `run`/`classify`/`regress`."""

    def __init__(self, name: str, version: int, path: str, *, method_check: bool = False) -> None:
        self.name = name
        #: --enable_signature_method_name_check (off by default in TF Serving, so TF2 models
        #: whose signatures all say "predict" can still be used by Classify and Regress).
        self.method_check = method_check
        self.version = version
        self.path = path
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        try:
            with self._graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self._session, ["serve"], path)
        except BaseException:
            self._session.close()  # a failed load gives its memory back at once
            raise
        # Calls using the session (see acquire): it is closed once unloaded and none is left.
        self._users = 0
        self._retired = False
        self._use_lock = threading.Lock()
        self.meta_graph: meta_graph_pb2.MetaGraphDef = meta_graph
        #: SignatureDefs exactly as stored in the SavedModel (what GetModelMetadata returns).
        self.signature_defs: dict[str, meta_graph_pb2.SignatureDef] = dict(meta_graph.signature_def)
        self._outputs_cache: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.batcher: Batcher | None = None

    # ----------------------------------------------------------------------------- internals
    def _tf_output(self, tensor_name: str) -> Any:
        """The C-level output handle of a graph tensor (cached: lookups are slow-ish)."""
        handle = self._outputs_cache.get(tensor_name)
        if handle is None:
            handle = self._graph.get_tensor_by_name(tensor_name)._as_tf_output()
            self._outputs_cache[tensor_name] = handle
        return handle

    def session_run(
        self,
        feeds: Mapping[str, np.ndarray],
        fetches: Sequence[str],
        timeout_in_ms: int = 0,
    ) -> list[np.ndarray]:
        """`Session::Run` on tensor names; TensorFlow errors become TF Serving's errors.

        `timeout_in_ms` is RunOptions.timeout_in_ms: 0 (or less) means no timeout, as in
        TensorFlow; past it TensorFlow cancels the run and it fails DEADLINE_EXCEEDED.
        """
        try:
            feed = {self._tf_output(name): value for name, value in feeds.items()}
            fetch = [self._tf_output(name) for name in fetches]
        except (TypeError, ValueError) as exc:
            raise invalid_argument(first_line(str(exc))) from None
        options = _run_options_buffer(timeout_in_ms)
        try:
            return self._session._call_tf_sessionrun(options, feed, fetch, [], None)
        except (TypeError, ValueError) as exc:
            # Values NumPy cannot hand to TensorFlow (ragged object arrays and the like).
            raise invalid_argument(first_line(str(exc))) from None
        except Exception as exc:  # noqa: BLE001 - TensorFlow's OpErrors keep their code
            raise to_serving_error(exc) from None
        finally:
            if options is not None:
                pywrap_tf_session.TF_DeleteBuffer(options)

    def signature(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """The named signature, or TF Serving's Predict error for a missing one."""
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature_defs.get(key)
        if signature is None:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return signature

    # ----------------------------------------------------------------------------- Predict
    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray | tensor_pb2.TensorProto],
        output_filter: Sequence[str] = (),
        *,
        timeout_in_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        """Run a signature like TF Serving's Predict (predict_util.cc), checks in the same order.

        `inputs` maps aliases to arrays or to request TensorProtos (decoded here, after the
        alias checks, so a bad name is reported before a bad tensor as TF Serving does).
        `timeout_in_ms` bounds the Session run (RunOptions.timeout_in_ms; 0: no bound).
        """
        signature = self.signature(signature_name)
        feeds, fetch_names, aliases = self._prepare_predict(signature, inputs, output_filter)
        if self.batcher is not None:
            key = signature_name or DEFAULT_SIGNATURE
            values = self.batcher.run(self, key, feeds, fetch_names, timeout_in_ms=timeout_in_ms)
        else:
            values = self.session_run(feeds, fetch_names, timeout_in_ms)
        return dict(zip(aliases, values, strict=True))

    def _prepare_predict(
        self,
        signature: meta_graph_pb2.SignatureDef,
        inputs: Mapping[str, np.ndarray | tensor_pb2.TensorProto],
        output_filter: Sequence[str],
    ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
        if self.method_check and signature.method_name not in (
            PREDICT_METHOD,
            CLASSIFY_METHOD,
            REGRESS_METHOD,
        ):
            raise ServingError(
                grpc.StatusCode.INTERNAL,
                "Expected prediction signature method_name to be one of "
                f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
                f"Was: {signature.method_name}",
            )
        sent, expected = set(inputs), set(signature.inputs)
        if len(sent) > len(expected) or (len(sent) < len(expected) and not signature.defaults):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{_join(sent)}}}) != len({{{_join(expected)}}}). "
                f"Sent extra: {{{_join(sent - expected)}}}. "
                f"Missing but required: {{{_join(expected - sent)}}}."
            )
        feeds: dict[str, np.ndarray] = {}
        seen: set[str] = set()
        for alias in sorted(signature.inputs):
            info = signature.inputs[alias]
            value = inputs.get(alias)
            if value is None:
                default = signature.defaults.get(alias)
                if default is None:
                    raise invalid_argument(
                        f"Signature input alias: {alias}(feed name: {info.name}) not found in "
                        "request and no default value provided. Inputs expected to be in the "
                        f"request {{{_join(sent)}}}, or default input alias set: "
                        f"{_join(signature.defaults)}"
                    )
                value = default
            else:
                seen.add(alias)
            if isinstance(value, tensor_pb2.TensorProto):
                value = tensors.decode(value, alias)
            feeds[info.name] = value
        if sent and len(seen) != len(sent):
            raise invalid_argument(
                f"Inputs contains invalid name. Used request inputs: {_join(seen)}, "
                f"request input: {_join(sent)}"
            )
        fetch_names: list[str] = []
        aliases: list[str] = []
        for alias in output_filter:
            info = signature.outputs.get(alias)
            if info is None:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{_join(signature.outputs)}}}."
                )
            if alias in aliases:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            fetch_names.append(info.name)
            aliases.append(alias)
        if not aliases:
            for alias in sorted(signature.outputs):
                fetch_names.append(signature.outputs[alias].name)
                aliases.append(alias)
        return feeds, fetch_names, aliases

    # ----------------------------------------------------------------- Classify / Regress
    def _method_signature(self, signature_name: str, method: str, kind: str):
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature_defs.get(key)
        if signature is None:
            raise invalid_argument(f"No signature was found with the name: {key}")
        if self.method_check and signature.method_name != method:
            raise invalid_argument(
                f"Expected {kind} signature method_name to be {method}. "
                f"Was: {signature.method_name}"
            )
        return signature

    def classify(
        self, signature_name: str, request_input: input_pb2.Input, *, timeout_in_ms: int = 0
    ) -> classification_pb2.ClassificationResult:
        """Classify tf.Examples with a `tensorflow/serving/classify` signature (classifier.cc)."""
        signature = self._method_signature(signature_name, CLASSIFY_METHOD, "classification")
        input_name, output_names = _classify_tensors(signature, self.method_check)
        examples = serialized_examples(request_input)
        outputs = self.session_run({input_name: examples}, output_names, timeout_in_ms)
        return _classification_result(signature, len(examples), output_names, outputs)

    def regress(
        self, signature_name: str, request_input: input_pb2.Input, *, timeout_in_ms: int = 0
    ) -> regression_pb2.RegressionResult:
        """Regress tf.Examples with a `tensorflow/serving/regress` signature (regressor.cc)."""
        signature = self._method_signature(signature_name, REGRESS_METHOD, "regression")
        input_name, output_names = _regress_tensors(signature, self.method_check)
        examples = serialized_examples(request_input)
        outputs = self.session_run({input_name: examples}, output_names, timeout_in_ms)
        return _regression_result(signature, len(examples), output_names, outputs)

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, *, timeout_in_ms: int = 0
    ) -> inference_pb2.MultiInferenceResponse:
        """Several classify/regress heads over one input in one Session run (multi_inference.cc).

        The heads may read different input tensors (a TF2 model gives each signature its own):
        the serialized examples are fed to every one of them, as TF Serving does.
        """
        model_name = ""
        input_names: set[str] = set()
        seen_signatures: set[str] = set()
        output_names: set[str] = set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if not model_name:
                model_name = task.model_spec.name
            elif model_name != task.model_spec.name:
                raise invalid_argument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            key = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if key in seen_signatures:
                raise invalid_argument(f"Duplicate evaluation of signature: {key}")
            seen_signatures.add(key)
            signature = self.signature_defs.get(key)
            if signature is None:
                raise invalid_argument(f"Requested signature not found in model graph: {key}")
            if task.method_name == CLASSIFY_METHOD:
                name, outs = _classify_tensors(signature, self.method_check)
            elif task.method_name == REGRESS_METHOD:
                name, outs = _regress_tensors(signature, self.method_check)
            else:
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"Unsupported signature method_name: {task.method_name}",
                )
            input_names.add(name)
            output_names.update(outs)
        fetches = sorted(output_names)
        examples = serialized_examples(request.input)
        outputs = self.session_run(dict.fromkeys(input_names, examples), fetches, timeout_in_ms)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            key = task.model_spec.signature_name or DEFAULT_SIGNATURE
            signature = self.signature_defs[key]
            result = response.results.add()
            if task.method_name == CLASSIFY_METHOD:
                result.classification_result.CopyFrom(
                    _classification_result(signature, len(examples), fetches, outputs)
                )
            else:
                result.regression_result.CopyFrom(
                    _regression_result(signature, len(examples), fetches, outputs)
                )
            result.model_spec.name = task.model_spec.name
            result.model_spec.signature_name = key
            result.model_spec.version.value = self.version
        return response

    # ----------------------------------------------------------------------------- warm-up
    def warm_up(self) -> None:
        """Make the first real call fast: replay the SavedModel's warm-up requests, if any.

        Like TF Serving, `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
        PredictionLog) is replayed and a failing record fails the load. Without that file, each
        predict signature runs once on zeros (shape -1 -> 1), which does the same job for the
        course's models; a signature that cannot be fed that way is skipped with a log line.
        """
        warmup_file = Path(self.path) / "assets.extra" / "tf_serving_warmup_requests"
        if warmup_file.is_file():
            self._replay_warmup(warmup_file)
            return
        for key, signature in sorted(self.signature_defs.items()):
            if signature.method_name != PREDICT_METHOD:
                continue
            feeds: dict[str, np.ndarray] = {}
            for alias, info in signature.inputs.items():
                dtype = tensors.DTYPE_TO_NUMPY.get(info.dtype)
                if info.tensor_shape.unknown_rank or dtype is None or dtype.kind == "O":
                    log.info(
                        "Skipping warm-up of signature %s of servable version "
                        "{name: %s version: %d}: input %s has no fixed rank or numeric dtype",
                        key,
                        self.name,
                        self.version,
                        alias,
                    )
                    feeds = {}
                    break
                shape = [1 if d.size < 0 else d.size for d in info.tensor_shape.dim]
                feeds[info.name] = np.zeros(shape, dtype=dtype)
            if not feeds:
                continue
            try:
                self.session_run(feeds, [o.name for o in signature.outputs.values()])
            except ServingError as exc:
                log.info(
                    "Skipping warm-up of signature %s of servable version "
                    "{name: %s version: %d}: %s",
                    key,
                    self.name,
                    self.version,
                    exc.message,
                )

    def _replay_warmup(self, warmup_file: Path) -> None:
        from tensorflow_serving.apis import prediction_log_pb2

        started = time.monotonic()
        log.info("Starting to read warmup data for model at %s", warmup_file)
        count = 0
        for record in tf.data.TFRecordDataset(str(warmup_file)).as_numpy_iterator():
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            kind = entry.WhichOneof("log_type")
            if kind == "predict_log":
                request = entry.predict_log.request
                self.run(
                    request.model_spec.signature_name, request.inputs, list(request.output_filter)
                )
            elif kind == "classify_log":
                request = entry.classify_log.request
                self.classify(request.model_spec.signature_name, request.input)
            elif kind == "regress_log":
                request = entry.regress_log.request
                self.regress(request.model_spec.signature_name, request.input)
            elif kind == "multi_inference_log":
                self.multi_inference(entry.multi_inference_log.request)
            else:
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}"
                )
            count += 1
        log.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
            "Elapsed time (microseconds): %d.",
            warmup_file,
            count,
            (time.monotonic() - started) * 1e6,
        )

    # ----------------------------------------------------------------------------- life cycle
    def acquire(self) -> bool:
        """Mark one call as using the session; False once the version is unloaded (look again).

        TF Serving's ServableHandle does this job: an unloading version waits for the calls
        that hold it, and no new call can get it.
        """
        with self._use_lock:
            if self._retired:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        """The end of a call that `acquire`d; the last one out of an unloaded version closes it."""
        with self._use_lock:
            self._users -= 1
            close_now = self._retired and self._users == 0
        if close_now:
            self._session.close()

    def close(self) -> None:
        """Unload: no new call gets the session; it is closed now, or when the last call ends."""
        with self._use_lock:
            if self._retired:
                return
            self._retired = True
            close_now = self._users == 0
        if close_now:
            self._session.close()


def _run_options_buffer(timeout_in_ms: int) -> Any:
    """A TF_Buffer holding RunOptions(timeout_in_ms), or None when there is no timeout."""
    if timeout_in_ms <= 0:
        return None
    options = config_pb2.RunOptions(timeout_in_ms=int(timeout_in_ms))
    return pywrap_tf_session.TF_NewBufferFromString(options.SerializeToString())


# --------------------------------------------------------------------------- tf.Example input
def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """The request's tf.Examples as a string vector, as `InputToSerializedExampleTensor` builds it.

    With `example_list_with_context`, the context's bytes are prepended to each example's:
    parsing the concatenation merges the two messages, exactly as TF Serving does.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        context = with_context.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


def _classify_tensors(
    signature: meta_graph_pb2.SignatureDef, method_check: bool
) -> tuple[str, list[str]]:
    """Input and output tensor names of a classification signature (PreProcessClassification)."""
    if method_check and signature.method_name != CLASSIFY_METHOD:
        raise invalid_argument(
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    if "inputs" not in signature.inputs:
        raise invalid_argument("No classification inputs found in SignatureDef: " + str(signature))
    names = [signature.outputs[k].name for k in ("classes", "scores") if k in signature.outputs]
    if not names:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {signature}'
        )
    return signature.inputs["inputs"].name, names


def _regress_tensors(
    signature: meta_graph_pb2.SignatureDef, method_check: bool
) -> tuple[str, list[str]]:
    """Input and output tensor names of a regression signature (PreProcessRegression)."""
    if method_check and signature.method_name != REGRESS_METHOD:
        raise invalid_argument(
            f"Expected regression signature method_name to be {REGRESS_METHOD}. "
            f"Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise failed_precondition("No regression inputs found in SignatureDef: " + str(signature))
    if "outputs" not in signature.outputs:
        raise failed_precondition("No regression outputs found in SignatureDef: " + str(signature))
    return signature.inputs["inputs"].name, [signature.outputs["outputs"].name]


def _shape_string(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _classification_result(
    signature: meta_graph_pb2.SignatureDef,
    num_examples: int,
    names: Sequence[str],
    outputs: Sequence[np.ndarray],
) -> classification_pb2.ClassificationResult:
    by_name = dict(zip(names, outputs, strict=True))
    outs = signature.outputs
    classes = by_name.get(outs["classes"].name) if "classes" in outs else None
    scores = by_name.get(outs["scores"].name) if "scores" in outs else None
    for label, tensor, dtype_ok, dtype_name in (
        ("classes", classes, lambda a: a.dtype.kind == "O", "DT_STRING"),
        ("scores", scores, lambda a: a.dtype == np.float32, "DT_FLOAT"),
    ):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_string(tensor)}"
            )
        if not dtype_ok(tensor):
            got = types_pb2.DataType.Name(tensors.NUMPY_TO_DTYPE.get(tensor.dtype, 0))
            raise invalid_argument(f"Expected {label} Tensor of {dtype_name}. Got: {got}")
        if tensor.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {label} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            cls = classifications.classes.add()
            if classes is not None:
                cls.label = classes[i, c].decode("utf-8", "replace")
            if scores is not None:
                cls.score = float(scores[i, c])
    return result


def _regression_result(
    signature: meta_graph_pb2.SignatureDef,
    num_examples: int,
    names: Sequence[str],
    outputs: Sequence[np.ndarray],
) -> regression_pb2.RegressionResult:
    name = signature.outputs["outputs"].name
    tensor = dict(zip(names, outputs, strict=True)).get(name)
    if tensor is None:
        raise invalid_argument(f"Could not find output tensor '{name}'")
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            + _shape_string(tensor)
        )
    if tensor.shape[0] != num_examples:
        raise invalid_argument(
            "Input batch size did not match output batch size: "
            f"{num_examples} vs. {tensor.shape[0]}"
        )
    if tensor.dtype != np.float32:
        got = types_pb2.DataType.Name(tensors.NUMPY_TO_DTYPE.get(tensor.dtype, 0))
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {got}")
    result = regression_pb2.RegressionResult()
    for value in tensor.ravel().tolist():
        result.regressions.add().value = value
    return result
