"""The embedded model server: a stand-in for `tensorflow_model_server` that speaks its gRPC and
REST APIs, takes its flags and reads its model folders.

Importing this package is light (no TensorFlow): the process API below starts the server in a
child process, where TensorFlow is imported.

    from helpers.server import start_server, connect
    with start_server() as server:          # python -m helpers.server --port=8500 ...
        ...                                  # server.grpc_target, server.rest_url

Inside (one module per concern): flags (the command line), config_files (text protos),
app (start-up and shutdown), models (ServerCore: versions, policies, labels, polling), servable
(one loaded SavedModel), tensors (TensorProto <-> NumPy), errors (TF Serving's codes and
messages), calls (the one call path of both front ends: deadlines, errors, metrics),
grpc_service (PredictionService, ModelService), health, batching, tls, rest and metrics
(REST API, Prometheus), process (this package's Python API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServerHandle", "ServerProcess", "connect", "start_server"]

if TYPE_CHECKING:
    from helpers.server.process import ServerHandle, ServerProcess, connect, start_server


def __getattr__(name: str) -> Any:
    if name in __all__:
        from helpers.server import process

        return getattr(process, name)
    raise AttributeError(f"module 'helpers.server' has no attribute {name!r}")
