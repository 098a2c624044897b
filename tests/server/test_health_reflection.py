"""The standard health service and server reflection."""

from __future__ import annotations

import pytest
from serving_suite import own_server_only


@pytest.mark.parametrize("service", ["", "ModelService", "PredictionService"])
def test_health_reports_serving(channel, service):
    own_server_only()  # needs --enable_grpc_healthcheck_service
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_unknown_service_is_not_found(channel):
    own_server_only()
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from serving_suite import rpc_error

    stub = health_pb2_grpc.HealthStub(channel)
    error = rpc_error(stub.Check, health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_serving_services(channel):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in response.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= names


def test_reflection_describes_predict(channel):
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="tensorflow.serving.PredictionService"
    )
    response = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    methods = {m.name for f in files for s in f.service for m in s.method}
    assert {"Predict", "GetModelMetadata", "Classify", "Regress", "MultiInference"} <= methods
