"""TF Serving's gRPC services (PredictionService, ModelService) over a ModelManager.

Each handler follows the matching TF Serving implementation step by step (prediction_service_impl,
predict_util, get_model_metadata_impl, classifier/regressor, multi_inference, model_service_impl),
so validation happens in the same order and fails with the same code and message. Errors go out
through `context.abort`, never as a Python traceback; every call is counted in the metrics.
"""

from __future__ import annotations

import logging
import time
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
from helpers.server.errors import ServingError, first_line, invalid_argument
from helpers.server.models import ModelManager
from helpers.server.servable import DEFAULT_SIGNATURE, run_deadline

log = logging.getLogger("helpers.server")

SIGNATURE_DEF = "signature_def"


def _record(model_name: str, api: str, code: grpc.StatusCode, seconds: float) -> None:
    """Count the call in the Prometheus metrics (helpers.server.metrics)."""
    try:
        from helpers.server import metrics
    except ImportError:  # metrics not installed: counting is optional
        return
    try:
        metrics.record_request(model_name, api, "GRPC", code.name, seconds)
    except Exception:  # noqa: BLE001 - metrics must never fail a call
        log.exception("Recording metrics failed")


def _record_examples(model_name: str, count: int) -> None:
    """Count the tf.Examples of a Classify/Regress/MultiInference call, as TF Serving does."""
    try:
        from helpers.server import metrics

        metrics.record_example_count(model_name, count)
    except Exception:  # noqa: BLE001 - metrics must never fail a call
        pass


def _handle(api: str, model_name_of: Callable[[Any], str]):
    """Wrap a handler: map ServingError to a status, hide tracebacks, record metrics."""

    def decorate(method):
        def wrapper(self, request, context):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                with run_deadline(context.time_remaining()):
                    return method(self, request, context)
            except ServingError as exc:
                code = exc.code
                context.abort(exc.code, exc.message)
            except Exception as exc:  # noqa: BLE001 - never leak a traceback to the client
                if isinstance(exc, grpc.RpcError) or type(exc).__name__ == "_AbortError":
                    raise
                log.exception("%s failed", api)
                code = grpc.StatusCode.INTERNAL
                context.abort(code, first_line(str(exc)) or type(exc).__name__)
            finally:
                _record(model_name_of(request), api, code, time.perf_counter() - started)

        wrapper.__name__ = method.__name__
        wrapper.__doc__ = method.__doc__
        return wrapper

    return decorate


def _spec_name(request: Any) -> str:
    return request.model_spec.name


def _first_task_name(request: inference_pb2.MultiInferenceRequest) -> str:
    return request.tasks[0].model_spec.name if request.tasks else ""


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    @_handle("predict", _spec_name)
    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        servable = self.manager.servable_for_spec(request.model_spec)
        outputs = servable.run(
            request.model_spec.signature_name, request.inputs, list(request.output_filter)
        )
        response = predict_pb2.PredictResponse()
        spec = response.model_spec
        spec.name = request.model_spec.name
        spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        spec.version.value = servable.version
        for alias, value in outputs.items():
            tensors.encode(value, response.outputs[alias])
        return response

    @_handle("get_model_metadata", _spec_name)
    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for metadata_field in request.metadata_field:
            if metadata_field != SIGNATURE_DEF:
                raise invalid_argument(f"Metadata field {metadata_field} is not supported")
        servable = self.manager.servable_for_spec(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response.metadata[SIGNATURE_DEF].Pack(signature_map)
        return response

    @_handle("classify", _spec_name)
    def Classify(
        self, request: classification_pb2.ClassificationRequest, context
    ) -> classification_pb2.ClassificationResponse:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        servable = self.manager.servable_for_spec(request.model_spec)
        result = servable.classify(request.model_spec.signature_name, request.input)
        _record_examples(request.model_spec.name, len(result.classifications))
        response = classification_pb2.ClassificationResponse(result=result)
        _echo_spec(response.model_spec, request.model_spec, servable.version)
        return response

    @_handle("regress", _spec_name)
    def Regress(
        self, request: regression_pb2.RegressionRequest, context
    ) -> regression_pb2.RegressionResponse:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        servable = self.manager.servable_for_spec(request.model_spec)
        result = servable.regress(request.model_spec.signature_name, request.input)
        _record_examples(request.model_spec.name, len(result.regressions))
        response = regression_pb2.RegressionResponse(result=result)
        _echo_spec(response.model_spec, request.model_spec, servable.version)
        return response

    @_handle("multi_inference", _first_task_name)
    def MultiInference(
        self, request: inference_pb2.MultiInferenceRequest, context
    ) -> inference_pb2.MultiInferenceResponse:
        spec = request.tasks[0].model_spec if request.tasks else None
        if spec is None:
            from tensorflow_serving.apis import model_pb2

            spec = model_pb2.ModelSpec()
        servable = self.manager.servable_for_spec(spec)
        response = servable.multi_inference(request)
        kind = request.input.WhichOneof("kind")
        examples = getattr(request.input, kind).examples if kind else ()
        _record_examples(spec.name, len(examples))
        return response


def _echo_spec(target, spec, version: int) -> None:
    """MakeModelSpec: name, signature name (empty -> serving_default) and the version used."""
    target.name = spec.name
    target.signature_name = spec.signature_name or DEFAULT_SIGNATURE
    target.version.value = version


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    @_handle("get_model_status", _spec_name)
    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        # TF Serving looks at the version only; a version_label is ignored here.
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        return self.manager.status(spec.name, version=version)

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
            self.manager.reload_config(config)
        except ServingError as exc:
            log.error("ReloadConfig failed: %s", exc.message)
            context.abort(exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - report, don't leak a traceback
            log.exception("ReloadConfig failed")
            context.abort(grpc.StatusCode.INTERNAL, first_line(str(exc)))
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


def add_services(server: grpc.Server, manager: ModelManager) -> list[str]:
    """Register both services; returns their full names (for reflection)."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    # The *_pb2 service modules register the service descriptors that reflection serves.
    return [
        prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
        model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    ]
