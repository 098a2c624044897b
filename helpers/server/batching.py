"""Server-side batching (--enable_batching): concurrent Predict calls share one Session run.

Calls for the same servable, signature and outputs queue up; a batch thread takes the oldest
batch when it is full, when its oldest call has waited `batch_timeout_micros`, or at once when
the timeout is 0 and a thread is free (batches then form while all threads are busy), the way
TF Serving's BatchingSession on a SharedBatchScheduler behaves. Inputs are concatenated on the
0th dimension, padded up to the next `allowed_batch_sizes` entry, run once, and the outputs are
split back, so every caller gets exactly what an unbatched run would have given it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from helpers.server.errors import ServingError, invalid_argument

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
            for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                         "num_batch_threads"):
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


@dataclass
class _Task:
    feeds: Mapping[str, np.ndarray]
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    result: list[np.ndarray] | None = None
    error: BaseException | None = None


@dataclass
class _Batch:
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    opened: float = field(default_factory=time.monotonic)


class _Queue:
    """Batches waiting for one (servable, signature, fetches) combination."""

    def __init__(self, key: tuple, servable: Servable, fetches: tuple[str, ...]) -> None:
        self.key = key
        self.servable = servable
        self.fetches = list(fetches)
        self.batches: deque[_Batch] = deque()


class Batcher:
    """One scheduler per server: a fixed pool of batch threads serving every queue."""

    def __init__(self, options: BatchingOptions) -> None:
        self.options = options
        self._cond = threading.Condition()
        self._queues: dict[tuple, _Queue] = {}
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop the batch threads once the queues are empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --------------------------------------------------------------------- request side
    def run(
        self,
        servable: Servable,
        signature_name: str,
        feeds: Mapping[str, np.ndarray],
        fetches: Sequence[str],
    ) -> list[np.ndarray]:
        """Run `fetches` for `feeds` as part of a batch; blocks until this call's rows are back."""
        size = _batch_size(feeds)
        if size > self.options.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self.options.max_batch_size}"
            )
        key = (id(servable), signature_name, tuple(fetches), tuple(sorted(feeds)),
               tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(feeds.items())))
        task = _Task(feeds, size)
        with self._cond:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key, servable, tuple(fetches))
            tail = queue.batches[-1] if queue.batches else None
            if tail is None or tail.size + size > self.options.max_batch_size:
                if len(queue.batches) >= self.options.max_enqueued_batches:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                tail = _Batch()
                queue.batches.append(tail)
            tail.tasks.append(task)
            tail.size += size
            self._cond.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    # --------------------------------------------------------------------- batch threads
    def _next_batch(self) -> tuple[_Queue, _Batch] | None:
        """The oldest batch that may run now, or None (caller waits). Holds the condition."""
        timeout = self.options.batch_timeout_micros / 1e6
        now = time.monotonic()
        best: tuple[_Queue, _Batch] | None = None
        for queue in self._queues.values():
            if not queue.batches:
                continue
            head = queue.batches[0]
            ready = (
                head.size >= self.options.max_batch_size
                or len(queue.batches) > 1
                or now - head.opened >= timeout
                or self._closed
            )
            if ready and (best is None or head.opened < best[1].opened):
                best = (queue, head)
        if best is not None:
            best[0].batches.popleft()
            if not best[0].batches:  # forget idle queues: they pin unloaded versions
                del self._queues[best[0].key]
        return best

    def _wait_time(self) -> float | None:
        timeout = self.options.batch_timeout_micros / 1e6
        heads = [q.batches[0].opened for q in self._queues.values() if q.batches]
        if not heads:
            return None
        return max(0.0, min(heads) + timeout - time.monotonic())

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._next_batch()
                while picked is None:
                    if self._closed:
                        return
                    self._cond.wait(self._wait_time())
                    picked = self._next_batch()
            queue, batch = picked
            self._process(queue, batch)

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        tasks = batch.tasks
        try:
            if len(tasks) == 1:
                feeds = dict(tasks[0].feeds)
                padded = self._padded_size(batch.size)
                if padded != batch.size:
                    feeds = {k: _pad(v, padded) for k, v in feeds.items()}
            else:
                padded = self._padded_size(batch.size)
                feeds = {
                    name: _pad(np.concatenate([t.feeds[name] for t in tasks]), padded)
                    for name in tasks[0].feeds
                }
            outputs = queue.servable.session_run(feeds, queue.fetches)
            start = 0
            for task in tasks:
                task.result = [
                    _rows(out, start, task.size, padded) for out in outputs
                ]
                start += task.size
        except BaseException as exc:  # noqa: BLE001 - every caller gets the batch's error
            for task in tasks:
                task.error = exc
        for task in tasks:
            task.done.set()

    def _padded_size(self, size: int) -> int:
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    """The shared 0th dimension of the inputs, with BatchingSession's errors."""
    sizes = set()
    for value in feeds.values():
        if np.ndim(value) == 0:
            raise invalid_argument(
                "Batching Run() input tensors must have at least one dimension"
            )
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
