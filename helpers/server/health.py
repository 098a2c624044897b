"""The standard grpc.health.v1 service, following model availability.

TF Serving (2.15.1+, with --enable_grpc_healthcheck_service) registers the short names "",
"ModelService" and "PredictionService". Here they say SERVING while at least one model version
is AVAILABLE and NOT_SERVING otherwise (before the first load, after every model is unloaded).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE_NAMES = ("", "ModelService", "PredictionService")


class HealthReporter:
    """Owns the health servicer and flips its statuses."""

    def __init__(self, server: grpc.Server) -> None:
        self.servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        self.set_serving(False)

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in SERVICE_NAMES:
            self.servicer.set(name, status)

    def shutdown(self) -> None:
        """Tell watchers the server is going away."""
        self.servicer.enter_graceful_shutdown()
