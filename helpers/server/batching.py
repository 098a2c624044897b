"""Server-side batching (--enable_batching): concurrent Predict calls share one Session run.

Calls for the same servable, signature, outputs and input shapes are merged: a batch closes when
it is full, or when its first call has waited `batch_timeout_micros` and one of the
`num_batch_threads` slots is free (with a timeout of 0, batches form while every slot is busy),
the way TF Serving's BatchingSession on a SharedBatchScheduler behaves. Inputs are concatenated
on the 0th dimension, padded up to the next `allowed_batch_sizes` entry, run once, and the
outputs are split back, so every caller gets exactly what an unbatched run would have given it.

Deadlines follow batching_session.cc: each call's timeout counts from when it was queued; the
batch runs with the latest deadline among its calls (no timeout if one call has none), and a
batch whose calls have all expired in the queue is not run (RESOURCE_EXHAUSTED
"Run() timeout exceeded while waiting in batching queue"). A caller whose own deadline passes
while its batch is still queued or running stops waiting (DEADLINE_EXCEEDED), so its thread is
free; the batch still runs for the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from helpers.server.errors import ServingError, deadline_exceeded, invalid_argument

if TYPE_CHECKING:
    from helpers.server.servable import Servable


@dataclass
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults for the fields a file leaves out."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()

    @classmethod
    def from_proto(cls, params: Any | None, default_threads: int) -> BatchingOptions:
        """Read a `BatchingParameters` message (None: all defaults) and check it like TF does."""
        options = cls(num_batch_threads=default_threads)
        if params is not None:
            for name in (
                "max_batch_size",
                "batch_timeout_micros",
                "max_enqueued_batches",
                "num_batch_threads",
            ):
                if params.HasField(name):
                    setattr(options, name, int(getattr(params, name).value))
            options.allowed_batch_sizes = tuple(int(v) for v in params.allowed_batch_sizes)
        if options.max_batch_size < 1 or options.num_batch_threads < 1:
            raise ValueError("max_batch_size and num_batch_threads must be at least 1")
        sizes = options.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)):
                raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != options.max_batch_size:
                raise ValueError(
                    "final entry in allowed_batch_sizes must equal max_batch_size when "
                    "enable_large_batch_splitting is False"
                )
        return options


QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue"


@dataclass
class _Task:
    feeds: Mapping[str, np.ndarray]
    size: int
    #: Seconds (time.monotonic) after which the caller no longer waits; None: never.
    deadline: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: list[np.ndarray] | None = None
    error: BaseException | None = None
    abandoned: bool = False

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


@dataclass
class _Batch:
    key: tuple
    servable: Servable
    fetches: list[str]
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False
    full: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """Merges concurrent calls into batches; at most `num_batch_threads` batches run at once.

    The first call of a batch leads it: it waits for company (until the batch is full or
    `batch_timeout_micros` has passed), then for a free batch slot, and runs the batch in its
    own thread. Calls arriving meanwhile join the open batch and just wait for their rows. The
    batch stays open while the leader waits for a slot, so under load batches fill up by
    themselves, as TF Serving's scheduler does when all batch threads are busy. Leading in the
    caller's thread saves the hand-off to a batch thread that a small model would notice.
    """

    def __init__(self, options: BatchingOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(options.num_batch_threads)
        self._open: dict[tuple, _Batch] = {}
        self._waiting: dict[tuple, int] = {}

    def close(self) -> None:
        """Nothing to release: batches run in their callers' threads."""

    def run(
        self,
        servable: Servable,
        signature_name: str,
        feeds: Mapping[str, np.ndarray],
        fetches: Sequence[str],
        *,
        timeout_in_ms: int = 0,
    ) -> list[np.ndarray]:
        """Run `fetches` for `feeds` as part of a batch; blocks until this call's rows are back.

        `timeout_in_ms` (RunOptions.timeout_in_ms, 0: none) counts from now, queueing included.
        """
        options = self.options
        size = _batch_size(feeds)
        if size > options.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {options.max_batch_size}"
            )
        key = (
            id(servable),
            signature_name,
            tuple(fetches),
            tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(feeds.items())),
        )
        deadline = time.monotonic() + timeout_in_ms / 1000 if timeout_in_ms > 0 else None
        task = _Task(feeds, size, deadline)
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and batch.size + size <= options.max_batch_size:
                batch.tasks.append(task)
                batch.size += size
                if batch.size >= options.max_batch_size:
                    self._close(batch)
                leader = False
            else:
                if batch is not None:  # no room: that batch is complete, start the next one
                    self._close(batch)
                if self._waiting.get(key, 0) >= options.max_enqueued_batches:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                batch = _Batch(key, servable, list(fetches), [task], size)
                self._open[key] = batch
                self._waiting[key] = self._waiting.get(key, 0) + 1
                leader = True
        if leader:
            self._lead(batch)
        elif not task.done.wait(task.remaining()):
            task.abandoned = True  # the batch runs for the others; this caller gave up
            raise deadline_exceeded()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def _close(self, batch: _Batch) -> None:
        """No more calls join `batch` (holds the lock)."""
        if not batch.closed:
            batch.closed = True
            if self._open.get(batch.key) is batch:
                del self._open[batch.key]
            batch.full.set()

    def _lead(self, batch: _Batch) -> None:
        timeout = self.options.batch_timeout_micros / 1e6
        if timeout > 0 and batch.size < self.options.max_batch_size:
            batch.full.wait(timeout)
        self._slots.acquire()
        try:
            with self._lock:
                self._close(batch)
                self._waiting[batch.key] -= 1
                if not self._waiting[batch.key]:
                    del self._waiting[batch.key]
            self._process(batch)
        finally:
            self._slots.release()

    def _process(self, batch: _Batch) -> None:
        everyone = batch.tasks
        tasks = [t for t in everyone if not t.abandoned]
        try:
            timeout_in_ms = _batch_timeout_in_ms(tasks)
            size = sum(t.size for t in tasks)
            padded = self._padded_size(size)
            if len(tasks) == 1:
                feeds = dict(tasks[0].feeds)
            else:
                feeds = {
                    name: np.concatenate([t.feeds[name] for t in tasks]) for name in tasks[0].feeds
                }
            if padded != size:
                feeds = {name: _pad(value, padded) for name, value in feeds.items()}
            outputs = batch.servable.session_run(feeds, batch.fetches, timeout_in_ms)
            start = 0
            for task in tasks:
                task.result = [_rows(out, start, task.size, padded) for out in outputs]
                start += task.size
        except BaseException as exc:  # noqa: BLE001 - every caller gets the batch's error
            for task in tasks:
                task.error = exc
        for task in everyone[1:]:
            task.done.set()

    def _padded_size(self, size: int) -> int:
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def _batch_timeout_in_ms(tasks: Sequence[_Task]) -> int:
    """The batch's RunOptions.timeout_in_ms: until the latest deadline (0: a call has none).

    Raises RESOURCE_EXHAUSTED when every call's deadline passed while it was queued.
    """
    if not tasks:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, QUEUE_TIMEOUT_MESSAGE)
    remaining = [t.remaining() for t in tasks]
    if any(r is None for r in remaining):
        return 0
    latest = max(r for r in remaining if r is not None)
    if latest <= 0:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, QUEUE_TIMEOUT_MESSAGE)
    return max(1, int(latest * 1000))


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    """The shared 0th dimension of the inputs, with BatchingSession's errors."""
    sizes = set()
    for value in feeds.values():
        if np.ndim(value) == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes.add(np.shape(value)[0])
    if len(sizes) > 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop() if sizes else 0


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """Pad the batch to `size` rows by repeating its first row (the values are never returned)."""
    missing = size - array.shape[0]
    if missing <= 0:
        return array
    filler = np.repeat(array[:1], missing, axis=0)
    return np.concatenate([array, filler])


def _rows(output: np.ndarray, start: int, count: int, padded: int) -> np.ndarray:
    """This caller's rows of a batched output (outputs without a batch dimension are shared)."""
    if np.ndim(output) == 0 or output.shape[0] != padded:
        return output
    return output[start : start + count]
