"""Solutions to notebook 10's exercises (scale out)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from helpers import balancing, replicas
from helpers.l4proxy import L4Proxy
from helpers.load import CallRecord


def clients_through_l4(
    fleet: Sequence[Any], request: Any, calls_per_client: Sequence[int], timeout: float = 10.0
) -> list[int]:
    """Exercise 1: several clients, each on its own connection, through one L4 proxy.

    `calls_per_client[i]` calls go over client i's channel. Returns the calls each replica's
    metrics counted. The proxy spreads *connections* in turn, so equal clients spread evenly;
    one busy client still puts all of its calls on a single replica.
    """
    before = replicas.served_calls(fleet)
    with L4Proxy([("127.0.0.1", replica.grpc_port) for replica in fleet]) as proxy:
        for calls in calls_per_client:
            # A channel of its own connection, as on a separate machine.
            channel = grpc.insecure_channel(
                proxy.target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            try:
                for _ in range(calls):
                    stub.Predict(request, timeout=timeout)
            finally:
                channel.close()
    after = replicas.served_calls(fleet)
    return [new - old for new, old in zip(after, before, strict=True)]


def predict_service_config(
    deadline: float = 2.0, max_attempts: int = 3, policy: str = "round_robin"
) -> str:
    """Exercise 2: a service config giving Predict a deadline and retries on UNAVAILABLE.

    `timeout` in a methodConfig is the deadline gRPC applies when the call sets none (a
    shorter one set by the call wins); it bounds all the attempts together.
    """
    if deadline <= 0:
        raise ValueError(f"deadline must be positive (seconds), got {deadline}")
    config = json.loads(balancing.service_config(policy=policy))
    config["methodConfig"] = [
        {
            "name": [{"service": balancing.PREDICTION_SERVICE, "method": "Predict"}],
            "timeout": f"{deadline:g}s",
            "retryPolicy": balancing.retry_policy(max_attempts=max_attempts),
        }
    ]
    return json.dumps(config)


def latency_summary(records: Sequence[CallRecord]) -> dict[str, dict[str, float]]:
    """Exercise 3: per kind of call, its count, p50 and p99 (ms, successful calls) and errors."""
    summary: dict[str, dict[str, float]] = {}
    for kind in sorted({record.kind for record in records}):
        calls = [record for record in records if record.kind == kind]
        ok_ms = np.array([r.seconds for r in calls if r.outcome == "OK"]) * 1e3
        summary[kind] = {
            "calls": len(calls),
            "p50_ms": float(np.percentile(ok_ms, 50)) if len(ok_ms) else float("nan"),
            "p99_ms": float(np.percentile(ok_ms, 99)) if len(ok_ms) else float("nan"),
            "errors": sum(record.outcome != "OK" for record in calls),
        }
    return summary
