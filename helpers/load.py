"""Steady background traffic against a model server, with every call recorded.

A rollout, a rollback or a shutdown is only "graceful" if the clients calling at that moment
notice nothing. `BackgroundLoad` keeps a few client threads calling Predict while you change the
server, and records each call: when it started and ended, how it ended (OK or a status code) and
which model version answered. Counting the failures is then a one-liner, not an impression.

    with BackgroundLoad(channel, request, callers=4) as load:
        ...                      # roll out, roll back, stop the server
    load.outcomes()              # Counter({'OK': 1234})
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc


@dataclass(frozen=True)
class CallRecord:
    """One Predict call: times in seconds since the load started."""

    started: float
    ended: float
    outcome: str  # "OK", or the status code's name (e.g. "UNAVAILABLE")
    version: int | None  # the version that answered (None when the call failed)
    caller: int


class BackgroundLoad:
    """`callers` threads, each sending `request` again as soon as its last call ended
    (after `pause` seconds), until `stop()`. Works as a context manager."""

    def __init__(
        self,
        channel: grpc.Channel,
        request: Any,
        *,
        callers: int = 4,
        timeout: float = 10.0,
        pause: float = 0.0,
    ) -> None:
        if callers < 1:
            raise ValueError(f"callers must be at least 1, got {callers}")
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self._request = request
        self._timeout = timeout
        self._pause = pause
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._threads = [
            threading.Thread(target=self._call_repeatedly, args=(i,), daemon=True)
            for i in range(callers)
        ]
        self._started = 0.0

    def now(self) -> float:
        """Seconds since the load started, on the clock the records use."""
        return time.perf_counter() - self._started

    def start(self) -> BackgroundLoad:
        self._started = time.perf_counter()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[CallRecord]:
        """Stop sending; wait for the calls in flight to end; return every record."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=self._timeout + 5)
        return self.records

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def records(self) -> list[CallRecord]:
        """The calls that have ended so far, in the order they ended."""
        with self._lock:
            return list(self._records)

    def outcomes(self, start: float = 0.0, end: float = float("inf")) -> Counter:
        """How the calls that *started* in [start, end) ended: Counter({'OK': n, ...})."""
        return Counter(r.outcome for r in self.records if start <= r.started < end)

    def _call_repeatedly(self, caller: int) -> None:
        while not self._stopping.is_set():
            started = self.now()
            try:
                response = self._stub.Predict(self._request, timeout=self._timeout)
                outcome, version = "OK", int(response.model_spec.version.value)
            except grpc.RpcError as error:
                outcome, version = error.code().name, None
            record = CallRecord(started, self.now(), outcome, version, caller)
            with self._lock:
                self._records.append(record)
            if self._pause:
                self._stopping.wait(self._pause)
