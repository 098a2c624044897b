"""A room of learners calling one server at once: notebook 10's classroom, and WORKSHOP.md's.

Each simulated learner runs notebook 05's calls (metadata, one batch, single images) over a
channel and a TCP connection of its own, as thirty laptops would, in a thread of this process
(see `helpers.load` for why threads).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from helpers import client, config
from helpers.load import CallRecord, timed_call


@dataclass(frozen=True)
class LearnerWorkload:
    """What one learner sends in notebook 05: metadata, a batch, then single images."""

    batch_size: int = 256  # the test images notebook 05 sends in one Predict
    single_calls: int = 20  # one-image Predict calls (notebook 05 times such calls)
    timeout: float = 10.0  # the deadline of every call, as in notebook 05


def learner_session(
    target: str,
    images: np.ndarray,
    workload: LearnerWorkload,
    model_name: str = config.MODEL_NAME,
    start: threading.Barrier | None = None,
) -> list[CallRecord]:
    """One learner's notebook-05 calls over its own channel (its own TCP connection)."""
    # A laptop per learner means a connection per learner: a local subchannel pool stops gRPC
    # from sharing one connection between the channels of this process.
    channel = client.open_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    records: list[CallRecord] = []
    try:
        if start is not None:
            start.wait()
        signature: list[client.Signature] = []

        def read_metadata() -> None:
            signature.append(client.get_signature(channel, model_name, timeout=workload.timeout))

        records.append(timed_call(read_metadata, "metadata"))
        if not signature:
            return records
        key = signature[0].input_key
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        batch = client.make_predict_request(images[: workload.batch_size], model_name, key)
        records.append(timed_call(lambda: stub.Predict(batch, timeout=workload.timeout), "batch"))
        for i in range(workload.single_calls):
            one = client.make_predict_request(images[i % len(images)][None], model_name, key)
            records.append(timed_call(lambda r=one: stub.Predict(r, timeout=workload.timeout)))
    finally:
        channel.close()
    return records


def simulate_learners(
    target: str,
    images: np.ndarray,
    learners: int = 30,
    workload: LearnerWorkload | None = None,
    model_name: str = config.MODEL_NAME,
) -> list[CallRecord]:
    """`learners` threads, each a learner running `learner_session`, all starting together."""
    workload = workload or LearnerWorkload()
    if learners < 1:
        raise ValueError(f"learners must be at least 1, got {learners}")
    barrier = threading.Barrier(learners)
    results: list[list[CallRecord]] = [[] for _ in range(learners)]

    def run(index: int) -> None:
        results[index] = learner_session(target, images, workload, model_name, barrier)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(learners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return [record for session in results for record in session]
