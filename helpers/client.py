"""Call a model served by TensorFlow Serving (or the course's embedded server) over gRPC.

Notebook 05 builds every piece of this module by hand first; later notebooks import it.
The functions speak TF Serving's own API (`tensorflow_serving.apis`), so they work unchanged
against the embedded server and against the real `tensorflow/serving` image.

Encoding and decoding tensors needs NumPy only: `encode_tensor` packs an array's bytes into
`TensorProto.tensor_content` and `decode_tensor` reads them back (or the typed `float_val`, ...
fields that some clients and servers use). No `tf.make_tensor_proto` / `tf.make_ndarray`.
They live in `helpers.tensor_codec`, shared with the embedded server, and are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from helpers import config
from helpers.tensor_codec import (  # noqa: F401 - part of this module's API
    DTYPE_TO_NUMPY,
    NUMPY_TO_DTYPE,
    VALUE_FIELD,
    decode_tensor,
    dtype_name,
    encode_tensor,
    typed_values,
)

__all__ = [
    "GRPC_DEFAULT_MAX_RECEIVE_BYTES",
    "ReloadError",
    "Signature",
    "TensorSpec",
    "VersionStatus",
    "build_model_config",
    "decode_tensor",
    "describe_rpc_error",
    "dtype_name",
    "encode_tensor",
    "get_model_status",
    "get_signature",
    "get_signatures",
    "make_model_spec",
    "make_predict_request",
    "model_config_text",
    "open_channel",
    "predict",
    "prepare_images",
    "reload_config",
    "wait_until_available",
]

#: gRPC Python refuses to *receive* messages larger than this unless told otherwise (4 MiB).
GRPC_DEFAULT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024

# --------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------


def open_channel(
    target: Any = None,
    *,
    max_receive_bytes: int | None = None,
    max_send_bytes: int | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """Open a plaintext gRPC channel to the model server.

    Open it once and reuse it: a channel keeps its HTTP/2 connection, so later calls skip the
    TCP handshake. `target` is "host:port", anything with a `.grpc_target` (a server handle,
    a `config.ServerAddress`), or None for the configured server (`$MODEL_SERVER`).
    `max_receive_bytes` raises gRPC's 4 MiB receive limit for large responses.
    Plaintext means no encryption: use `grpc.secure_channel` with TLS across networks.
    """
    if target is None:
        target = config.server_address().grpc_target
    target = getattr(target, "grpc_target", target)
    if not isinstance(target, str) or not target:
        raise TypeError(f"open_channel() needs a 'host:port' string; got {target!r}.")
    channel_options = list(options)
    if max_receive_bytes is not None:
        channel_options.append(("grpc.max_receive_message_length", int(max_receive_bytes)))
    if max_send_bytes is not None:
        channel_options.append(("grpc.max_send_message_length", int(max_send_bytes)))
    return grpc.insecure_channel(target, options=channel_options)


def describe_rpc_error(error: grpc.RpcError) -> str:
    """One line for a failed call: `CODE: details`, the two things worth reading."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name if code is not None else 'UNKNOWN'}: {details}"


def _prediction_stub(channel: Any) -> prediction_service_pb2_grpc.PredictionServiceStub:
    if isinstance(channel, prediction_service_pb2_grpc.PredictionServiceStub):
        return channel
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _model_stub(channel: Any) -> model_service_pb2_grpc.ModelServiceStub:
    if isinstance(channel, model_service_pb2_grpc.ModelServiceStub):
        return channel
    return model_service_pb2_grpc.ModelServiceStub(channel)


# --------------------------------------------------------------------------------------
# Model status, readiness, metadata
# --------------------------------------------------------------------------------------


def make_model_spec(
    model_name: str = config.MODEL_NAME,
    *,
    version: int | None = None,
    label: str | None = None,
    signature_name: str = "",
) -> model_pb2.ModelSpec:
    """Say which model, which version (a number *or* a label, never both) and which signature."""
    if version is not None and label is not None:
        raise ValueError(
            f"Give a version ({version}) or a label ({label!r}), not both: "
            "a request names one version."
        )
    spec = model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    if version is not None:
        spec.version.value = int(version)
    elif label is not None:
        spec.version_label = label
    return spec


@dataclass(frozen=True)
class VersionStatus:
    """One version of a model as GetModelStatus reports it."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING or END
    error_code: str  # OK unless loading failed
    error_message: str


def get_model_status(
    channel: Any,
    model_name: str = config.MODEL_NAME,
    *,
    version: int | None = None,
    label: str | None = None,
    timeout: float = 5.0,
) -> list[VersionStatus]:
    """Ask ModelService.GetModelStatus which versions exist and in which state, newest first."""
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=make_model_spec(model_name, version=version, label=label)
    )
    response = _model_stub(channel).GetModelStatus(request, timeout=timeout)
    states = get_model_status_pb2.ModelVersionStatus.State
    rows = [
        VersionStatus(
            version=int(item.version),
            state=states.Name(item.state),
            error_code=grpc.StatusCode(_status_code_tuple(item.status.error_code)).name,
            error_message=item.status.error_message,
        )
        for item in response.model_version_status
    ]
    return sorted(rows, key=lambda row: row.version, reverse=True)


def _status_code_tuple(code: int) -> tuple[int, str]:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.value
    return grpc.StatusCode.UNKNOWN.value


# Answers that mean "not ready yet, ask again": the server is still starting (UNAVAILABLE),
# has not found the model or version yet (NOT_FOUND), or was slow to answer.
_RETRY_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)


def wait_until_available(
    channel: Any,
    model_name: str = config.MODEL_NAME,
    version: int | None = None,
    *,
    timeout: float = 60.0,
    poll_interval: float = 0.2,
    check: Callable[[], None] | None = None,
) -> int:
    """Poll GetModelStatus until the model (or that version) is AVAILABLE; return the version.

    Polling asks the server itself, so it waits exactly as long as loading takes, unlike a
    fixed `sleep`. A version that failed to load stops the wait at once with the server's error.
    `channel` may also be a ModelServiceStub. `check` runs before every poll and may raise to
    stop waiting (a server process that died will never answer).
    """
    stub = _model_stub(channel)
    deadline = time.monotonic() + timeout
    last_answer = "no answer yet"
    while True:
        if check is not None:
            check()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = f"version {version} of model {model_name!r}" if version else repr(model_name)
            raise TimeoutError(
                f"{what} was not AVAILABLE after {timeout:g} s (last answer: {last_answer}). "
                "Is the server running (helpers.server.connect()), and does MODEL_SERVER "
                "point at it?"
            )
        try:
            rows = get_model_status(stub, model_name, version=version, timeout=min(remaining, 5.0))
        except grpc.RpcError as error:
            if error.code() not in _RETRY_CODES:
                raise
            last_answer = describe_rpc_error(error)
        else:
            available = [row.version for row in rows if row.state == "AVAILABLE"]
            if available:
                return max(available)
            failed = [row for row in rows if row.state == "END" and row.error_code != "OK"]
            if version is not None and failed:
                raise RuntimeError(
                    f"Version {version} of model {model_name!r} failed to load: "
                    f"{failed[0].error_code}: {failed[0].error_message}"
                )
            last_answer = ", ".join(_describe_version(row) for row in rows) or "no versions"
        time.sleep(min(poll_interval, max(deadline - time.monotonic(), 0)))


def _describe_version(row: VersionStatus) -> str:
    text = f"version {row.version} {row.state}"
    return f"{text} ({row.error_message})" if row.error_message else text


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: the key used in requests, its dtype and shape."""

    key: str  # the alias in PredictRequest.inputs / PredictResponse.outputs
    tensor_name: str  # the graph tensor behind the alias
    dtype: str  # NumPy-style name, e.g. "float32"
    shape: tuple[int | None, ...] | None  # None for a dimension of any size; None: any rank


@dataclass(frozen=True)
class Signature:
    """A signature as GetModelMetadata reports it, so no key is ever typed by hand."""

    model_name: str
    version: int
    name: str
    method: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    @property
    def input(self) -> TensorSpec:
        """The only input (the course's model has one)."""
        return _only(self.inputs, "input", self)

    @property
    def output(self) -> TensorSpec:
        """The only output (the course's model has one)."""
        return _only(self.outputs, "output", self)

    @property
    def input_key(self) -> str:
        return self.input.key

    @property
    def output_key(self) -> str:
        return self.output.key


def _only(specs: Mapping[str, TensorSpec], kind: str, signature: Signature) -> TensorSpec:
    if len(specs) != 1:
        raise ValueError(
            f"Signature {signature.name!r} has {len(specs)} {kind}s ({sorted(specs)}); "
            f"pick one by key from .{kind}s."
        )
    return next(iter(specs.values()))


def _tensor_spec(key: str, info: Any) -> TensorSpec:
    shape = (
        None
        if info.tensor_shape.unknown_rank
        else tuple(None if dim.size < 0 else int(dim.size) for dim in info.tensor_shape.dim)
    )
    return TensorSpec(key=key, tensor_name=info.name, dtype=dtype_name(info.dtype), shape=shape)


def get_signatures(
    channel: Any,
    model_name: str = config.MODEL_NAME,
    *,
    version: int | None = None,
    label: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Signature]:
    """Read every signature of a model from PredictionService.GetModelMetadata."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=make_model_spec(model_name, version=version, label=label),
        metadata_field=["signature_def"],
    )
    response = _prediction_stub(channel).GetModelMetadata(request, timeout=timeout)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    served_version = int(response.model_spec.version.value)
    return {
        name: Signature(
            model_name=model_name,
            version=served_version,
            name=name,
            method=definition.method_name,
            inputs={k: _tensor_spec(k, v) for k, v in sorted(definition.inputs.items())},
            outputs={k: _tensor_spec(k, v) for k, v in sorted(definition.outputs.items())},
        )
        for name, definition in sorted(signature_map.signature_def.items())
    }


def get_signature(
    channel: Any,
    model_name: str = config.MODEL_NAME,
    signature: str = "serving_default",
    *,
    version: int | None = None,
    label: str | None = None,
    timeout: float = 10.0,
) -> Signature:
    """Read one signature's input/output keys, dtypes and shapes from the server."""
    signatures = get_signatures(channel, model_name, version=version, label=label, timeout=timeout)
    if signature not in signatures:
        usable = sorted(name for name in signatures if not name.startswith("__"))
        raise ValueError(
            f"Model {model_name!r} has no signature {signature!r}; "
            f"it has {usable}. Pass one of those as signature=."
        )
    return signatures[signature]


# --------------------------------------------------------------------------------------
# Predict
# --------------------------------------------------------------------------------------


def make_predict_request(
    images: Any,
    model_name: str,
    input_key: str,
    *,
    version: int | None = None,
    label: str | None = None,
    signature_name: str = "serving_default",
    output_filter: Sequence[str] = (),
) -> predict_pb2.PredictRequest:
    """Build a PredictRequest exactly as given: no reshaping, no casting, no scaling.

    `images` is a NumPy array (encoded with `encode_tensor`) or a ready `TensorProto`
    (e.g. from `tf.make_tensor_proto`). Use `prepare_images` or `predict` to fix the input first.
    """
    tensor = images if isinstance(images, tensor_pb2.TensorProto) else encode_tensor(images)
    request = predict_pb2.PredictRequest(
        model_spec=make_model_spec(
            model_name, version=version, label=label, signature_name=signature_name
        ),
        output_filter=list(output_filter),
    )
    request.inputs[input_key].CopyFrom(tensor)
    return request


def prepare_images(images: Any, spec: TensorSpec | None = None) -> np.ndarray:
    """Check the shape of a batch of images and bring its pixels to what the model was trained on.

    Accepts a batch shaped (N, 28, 28), (N, 28, 28, 1) or (N, 784). Integer pixels and floats
    above 1 are raw 0-255 values and go through THE course preprocessing
    (`helpers.data.preprocess`: divide by 255); floats already in [0, 1] only become float32.
    Returns float32 (N, 28, 28, 1). Anything else fails here, on the client, with one line saying
    how to fix it, instead of deep inside the server (or not at all, with wrong answers).
    """
    from helpers.data import preprocess  # imported late: it pulls in TensorFlow and the data code

    array = np.asarray(images)
    image_shape: tuple[int, ...] = (28, 28, 1)
    if spec is not None and spec.shape is not None and len(spec.shape) == 4:
        if all(dim is not None for dim in spec.shape[1:]):
            image_shape = tuple(int(dim) for dim in spec.shape[1:])
    size = int(np.prod(image_shape))
    shown = ", ".join(map(str, image_shape))
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"Images must be numbers (uint8 0-255 or floats 0-1); got dtype {array.dtype}. "
            "Convert them with np.asarray(images, dtype=np.uint8)."
        )
    if array.shape in (image_shape[:2], image_shape, (size,)):
        raise ValueError(
            f"Got one image of shape {array.shape} but the model takes a batch: "
            f"add a batch dimension with images[np.newaxis] (shape {(1, *array.shape)})."
        )
    batch_shapes_ok = (
        (array.ndim == 2 and array.shape[1] == size)
        or (array.ndim == 3 and array.shape[1:] == image_shape[:2] and image_shape[2:] == (1,))
        or (array.ndim == 4 and array.shape[1:] == image_shape)
    )
    if not batch_shapes_ok:
        raise ValueError(
            f"Expected a batch of images of shape (N, {shown}), (N, {image_shape[0]}, "
            f"{image_shape[1]}) or (N, {size}); got {array.shape}. "
            f"Reshape it with images.reshape(-1, {shown})."
        )
    if array.shape[0] == 0:
        raise ValueError("Got an empty batch (0 images): pass at least one image.")
    array = array.reshape((-1, *image_shape))
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("Images contain NaN or infinity: clean them before sending.")
    if array.dtype.kind == "f" and array.min() >= 0.0 and array.max() <= 1.0:
        return array.astype(np.float32)  # already scaled: only the dtype needs fixing
    return np.asarray(preprocess(array), dtype=np.float32).reshape((-1, *image_shape))


def predict(
    channel: Any,
    images: Any,
    model_name: str = config.MODEL_NAME,
    *,
    signature: Signature | str = "serving_default",
    version: int | None = None,
    label: str | None = None,
    timeout: float = 10.0,
    batch_size: int | None = None,
) -> np.ndarray:
    """Send images to the model over gRPC and return its probabilities, shape (N, classes).

    Raw uint8 0-255 and float64 images are preprocessed first (the same function training
    used), so the server sees exactly what the model was trained on. Pass a `Signature` from
    `get_signature` to skip the metadata call; `batch_size` splits big batches into several
    requests (each response stays under the channel's receive limit).
    """
    if isinstance(signature, str):
        signature = get_signature(
            channel, model_name, signature, version=version, label=label, timeout=timeout
        )
    batch = prepare_images(images, signature.input)
    step = len(batch) if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    stub = _prediction_stub(channel)
    parts = []
    for start in range(0, len(batch), step):
        request = make_predict_request(
            batch[start : start + step].astype(signature.input.dtype, copy=False),
            model_name,
            signature.input_key,
            version=version,
            label=label,
            signature_name=signature.name,
            output_filter=[signature.output_key],
        )
        response = stub.Predict(request, timeout=timeout)
        parts.append(decode_tensor(response.outputs[signature.output_key]))
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------
# Model configuration: versions and labels without a restart
# --------------------------------------------------------------------------------------


class ReloadError(RuntimeError):
    """The server refused a new model configuration (its status code and message inside)."""


def build_model_config(
    model_name: str = config.MODEL_NAME,
    base_path: str | None = None,
    *,
    versions: Sequence[int] | None = None,
    labels: Mapping[str, int] | None = None,
) -> model_server_config_pb2.ModelServerConfig:
    """A one-model `ModelServerConfig`: which versions to serve and which labels point where.

    `versions=None` keeps TF Serving's default (serve the latest); a list serves exactly those.
    `base_path` is the model folder *as the server sees it* (inside a container: /models/NAME).
    """
    base_path = str(config.model_base_path(model_name)) if base_path is None else str(base_path)
    model = model_server_config_pb2.ModelConfig(
        name=model_name, base_path=base_path, model_platform="tensorflow"
    )
    if versions is not None:
        model.model_version_policy.specific.versions.extend(int(v) for v in versions)
    for name, number in (labels or {}).items():
        model.version_labels[name] = int(number)
    server_config = model_server_config_pb2.ModelServerConfig()
    server_config.model_config_list.config.append(model)
    return server_config


def model_config_text(server_config: model_server_config_pb2.ModelServerConfig) -> str:
    """The text form of a config: what `--model_config_file` reads."""
    return text_format.MessageToString(server_config)


def reload_config(
    channel: Any,
    server_config: model_server_config_pb2.ModelServerConfig,
    *,
    timeout: float = 30.0,
) -> None:
    """Replace the server's model configuration (ModelService.HandleReloadConfigRequest).

    Models left out of the new config are unloaded. Labels may only point at versions that
    are already AVAILABLE: load a version first, then label it.
    """
    request = model_management_pb2.ReloadConfigRequest(config=server_config)
    response = _model_stub(channel).HandleReloadConfigRequest(request, timeout=timeout)
    if response.status.error_code != 0:
        code = grpc.StatusCode(_status_code_tuple(response.status.error_code)).name
        raise ReloadError(f"{code}: {response.status.error_message}")
