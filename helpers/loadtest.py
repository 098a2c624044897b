"""Load from this process: a closed-loop run in the background, and a room of learners.

Both use threads: gRPC's C core does the network work outside Python's GIL, and a thread per
client keeps the whole load in one process that already has TensorFlow's protos imported (a
process per learner would import them thirty times over on a two-core laptop). The GIL still
makes the client side a real cost: on a small machine the numbers include the load generator.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from helpers import client, config


@dataclass(frozen=True)
class CallRecord:
    """One call: when it started (s, monotonic clock), how long it took, how it ended."""

    started: float
    seconds: float
    code: str  # "OK" or a grpc.StatusCode name
    kind: str = "predict"


def timed_call(call: Callable[[], Any], kind: str = "predict") -> CallRecord:
    """Run one gRPC call; an RpcError becomes its status name instead of an exception."""
    started = time.monotonic()
    try:
        call()
        code = "OK"
    except grpc.RpcError as error:
        code = error.code().name if error.code() is not None else "UNKNOWN"
    return CallRecord(started, time.monotonic() - started, code, kind)


def count_codes(records: Sequence[CallRecord]) -> dict[str, int]:
    """How many calls ended with each status, OK first."""
    counts = Counter(record.code for record in records)
    return dict(sorted(counts.items(), key=lambda item: (item[0] != "OK", item[0])))


class BackgroundLoad:
    """`threads` threads calling `call()` until stop(), at most `rate` calls per second in all.

    Each thread starts its next call when the last one has ended (and, with a `rate`, when its
    turn has come), so a slow or failing server slows the load down instead of piling up calls.
    A rate leaves the machine room for other work, such as a replica restarting beside the load.
    stop() returns every call's record.
    """

    def __init__(
        self,
        call: Callable[[], Any],
        threads: int = 4,
        rate: float | None = None,
        kind: str = "predict",
    ):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive (calls per second), got {rate}")
        self.call = call
        self.kind = kind
        self.interval = 0.0 if rate is None else threads / rate  # between one thread's calls
        self._stop = threading.Event()
        self._records: list[CallRecord] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def _run(self, index: int) -> None:
        next_at = time.monotonic() + self.interval * index / len(self._threads)
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            record = timed_call(self.call, self.kind)
            with self._lock:
                self._records.append(record)
            next_at = max(next_at + self.interval, time.monotonic() - self.interval)

    def start(self) -> BackgroundLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[CallRecord]:
        """Let the calls in flight finish, then return all records in start order."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        with self._lock:
            return sorted(self._records, key=lambda record: record.started)


# --------------------------------------------------------------------------- a classroom
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
