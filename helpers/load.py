"""Traffic from this process while something changes: every call recorded, failures counted.

A rollout, a rollback or a shutdown is only "graceful" if the clients calling at that moment
notice nothing, and a balancer only balances if every replica gets its share. `BackgroundLoad`
keeps client threads calling while you change the servers, and records each call: when it
started and ended, how it ended (OK or a status code) and which model version answered.
Counting the failures is then a one-liner, not an impression.

    with BackgroundLoad(lambda: stub.Predict(request, timeout=10), threads=4) as load:
        ...                      # roll out, roll back, stop or kill a server
    load.outcomes()              # {'OK': 1234}

Threads, not processes: gRPC's C core does the network work outside Python's GIL, and one
process already holds TensorFlow's protos. The GIL still makes the client side a real cost: on a
small machine the numbers include the load generator.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class CallRecord:
    """One call: when it started and ended (s, on the clock of whoever timed it), how it ended."""

    started: float
    ended: float
    outcome: str  # "OK", or the status code's name (e.g. "UNAVAILABLE")
    version: int | None = None  # the model version that answered (Predict), else None
    kind: str = "predict"

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def timed_call(
    call: Callable[[], Any], kind: str = "predict", clock: Callable[[], float] = time.monotonic
) -> CallRecord:
    """Run one gRPC call; an RpcError becomes its status name instead of an exception."""
    started = clock()
    try:
        response = call()
        outcome, version = "OK", _answering_version(response)
    except grpc.RpcError as error:
        outcome = error.code().name if error.code() is not None else "UNKNOWN"
        version = None
    return CallRecord(started, clock(), outcome, version, kind)


def _answering_version(response: Any) -> int | None:
    """The version a Predict (or Classify, Regress) response names; None for other answers."""
    spec = getattr(response, "model_spec", None)
    if spec is None or not spec.HasField("version"):
        return None
    return int(spec.version.value)


def count_outcomes(records: Iterable[CallRecord]) -> dict[str, int]:
    """How many calls ended with each outcome, OK first."""
    counts = Counter(record.outcome for record in records)
    return dict(sorted(counts.items(), key=lambda item: (item[0] != "OK", item[0])))


class BackgroundLoad:
    """`threads` threads calling `call()` until stop(), each starting its next call when its
    last one has ended (a slow or failing server slows the load instead of piling calls up).

    `pause` waits that long after each call; `rate` caps all threads together at that many
    calls per second, leaving the machine room for other work (a replica restarting beside the
    load). Records use `now()`: seconds since start().
    """

    def __init__(
        self,
        call: Callable[[], Any],
        *,
        threads: int = 4,
        rate: float | None = None,
        pause: float = 0.0,
        kind: str = "predict",
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive (calls per second), got {rate}")
        if pause < 0:
            raise ValueError(f"pause must be 0 or more seconds, got {pause}")
        self.call = call
        self.kind = kind
        self.pause = pause
        self.interval = 0.0 if rate is None else threads / rate  # between one thread's calls
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]
        self._started = 0.0

    def now(self) -> float:
        """Seconds since the load started, on the clock the records use."""
        return time.monotonic() - self._started

    def start(self) -> BackgroundLoad:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[CallRecord]:
        """Stop sending; let the calls in flight end; return every record (in start order)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.records

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def records(self) -> list[CallRecord]:
        """The calls that have ended so far, in the order they started."""
        with self._lock:
            return sorted(self._records, key=lambda record: record.started)

    def outcomes(self, start: float = 0.0, end: float = float("inf")) -> dict[str, int]:
        """How the calls that *started* in [start, end) ended: {'OK': n, ...}, OK first."""
        return count_outcomes(r for r in self.records if start <= r.started < end)

    def _run(self, index: int) -> None:
        next_at = self.now() + self.interval * index / len(self._threads)
        while not self._stopping.wait(max(0.0, next_at - self.now())):
            record = timed_call(self.call, self.kind, self.now)
            with self._lock:
                self._records.append(record)
            now = self.now()
            next_at = max(next_at + self.interval, now - self.interval, now + self.pause)
