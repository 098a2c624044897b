"""TF Serving's gRPC services (PredictionService, ModelService) over a ServerCore.

Each handler follows the matching TF Serving implementation step by step (prediction_service_impl,
predict_util, get_model_metadata_impl, classifier/regressor, multi_inference, model_service_impl),
so validation happens in the same order and fails with the same code and message. Each call
runs on the call path it shares with REST (`calls`): the call's deadline becomes the Session
run's timeout, as TF Serving does with its default `enforce_session_run_timeout`
(prediction_service_impl.cc, DeadlineToTimeoutMillis), errors map to TF Serving's status and
the metrics count the call once. Errors go out through `context.abort`, never as a Python
traceback, cut at 1,024 characters as TF Serving's gRPC port cuts them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from helpers.server import tensors
from helpers.server.calls import Calls, Deadline, Target
from helpers.server.errors import ServingError, invalid_argument, truncate
from helpers.server.models import ServerCore
from helpers.server.servable import DEFAULT_SIGNATURE

log = logging.getLogger("helpers.server")

SIGNATURE_DEF = "signature_def"


def timeout_in_ms(context: Any) -> int:
    """RunOptions.timeout_in_ms for a call: the milliseconds left before its gRPC deadline.

    0 (no timeout) when the client set no deadline; see `calls.Deadline.timeout_in_ms`.
    """
    return Deadline.of_grpc(context).timeout_in_ms()


def _answer(context: Any, calls: Calls, api: str, model_name: str, work: Callable[[], Any]) -> Any:
    """Run `work` on the one call path; a failure aborts the call with TF Serving's status,
    its message cut at 1,024 characters as on TF Serving's gRPC port (grpc_status_util.cc)."""
    try:
        return calls.serve(api, model_name, work)
    except ServingError as error:
        context.abort(error.code, truncate(error.message))


def _spec_name(request: Any) -> str:
    return request.model_spec.name


def _require_spec(request: Any) -> Target:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return Target.of_spec(request.model_spec)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, core: ServerCore, serving_metrics: Any = None) -> None:
        self.core = core
        self.calls = Calls(core, "GRPC", serving_metrics)

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        def work() -> predict_pb2.PredictResponse:
            target = _require_spec(request)
            servable, outputs = self.calls.predict(
                target,
                request.inputs,
                list(request.output_filter),
                deadline=Deadline.of_grpc(context),
            )
            response = predict_pb2.PredictResponse()
            _echo_spec(response.model_spec, request.model_spec, servable.version)
            for alias, value in outputs.items():
                tensors.encode(value, response.outputs[alias])
            return response

        return _answer(context, self.calls, "predict", _spec_name(request), work)

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            target = _require_spec(request)
            if not request.metadata_field:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for metadata_field in request.metadata_field:
                if metadata_field != SIGNATURE_DEF:
                    raise invalid_argument(f"Metadata field {metadata_field} is not supported")
            servable = self.calls.servable(target)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature)
            response.metadata[SIGNATURE_DEF].Pack(signature_map)
            return response

        return _answer(context, self.calls, "get_model_metadata", _spec_name(request), work)

    def Classify(
        self, request: classification_pb2.ClassificationRequest, context
    ) -> classification_pb2.ClassificationResponse:
        return self._examples(
            "classify", classification_pb2.ClassificationResponse, request, context
        )

    def Regress(
        self, request: regression_pb2.RegressionRequest, context
    ) -> regression_pb2.RegressionResponse:
        return self._examples("regress", regression_pb2.RegressionResponse, request, context)

    def _examples(self, kind: str, response_type: type, request: Any, context) -> Any:
        """Classify and Regress: the same call over tf.Examples, told apart by `kind`."""

        def work() -> Any:
            target = _require_spec(request)
            servable, result = self.calls.examples(
                kind, target, request.input, deadline=Deadline.of_grpc(context)
            )
            response = response_type(result=result)
            _echo_spec(response.model_spec, request.model_spec, servable.version)
            return response

        return _answer(context, self.calls, kind, _spec_name(request), work)

    def MultiInference(
        self, request: inference_pb2.MultiInferenceRequest, context
    ) -> inference_pb2.MultiInferenceResponse:
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return _answer(
            context,
            self.calls,
            "multi_inference",
            name,
            lambda: self.calls.multi_inference(request, deadline=Deadline.of_grpc(context)),
        )


def _echo_spec(target, spec, version: int) -> None:
    """MakeModelSpec: name, signature name (empty -> serving_default) and the version used."""
    target.name = spec.name
    target.signature_name = spec.signature_name or DEFAULT_SIGNATURE
    target.version.value = version


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    def __init__(self, core: ServerCore, serving_metrics: Any = None) -> None:
        self.core = core
        self.calls = Calls(core, "GRPC", serving_metrics)

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context
    ) -> get_model_status_pb2.GetModelStatusResponse:
        def work() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            spec = request.model_spec
            # TF Serving looks at the version only; a version_label is ignored here.
            choice = spec.WhichOneof("version_choice")
            version = spec.version.value if choice == "version" else None
            return self.core.status(spec.name, version=version)

        return _answer(context, self.calls, "get_model_status", _spec_name(request), work)

    def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context
    ) -> model_management_pb2.ReloadConfigResponse:
        config = request.config
        if config.WhichOneof("config") == "model_config_list":
            for index, entry in enumerate(config.model_config_list.config):
                log.info(
                    "Config entry index : %d path : %s name : %s platform : %s",
                    index,
                    entry.base_path,
                    entry.name,
                    entry.model_platform,
                )
        try:
            self.calls.serve("reload_config", "", lambda: self.core.reload_config(config))
        except ServingError as error:
            log.error("ReloadConfig failed: %s", error.message)
            context.abort(error.code, truncate(error.message))
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


def add_services(server: grpc.Server, core: ServerCore, serving_metrics: Any = None) -> list[str]:
    """Register both services; returns their full names (for reflection)."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core, serving_metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(core, serving_metrics), server
    )
    # The *_pb2 service modules register the service descriptors that reflection serves.
    return [
        prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
        model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    ]
