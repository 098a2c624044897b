"""The batcher in-process, over a fake servable that records every Session run."""

from __future__ import annotations

import re
import threading

import grpc
import numpy as np
import pytest

from helpers.server.batching import QUEUE_TIMEOUT_MESSAGE, Batcher, BatchingOptions
from helpers.server.errors import ServingError


class RecordingServable:
    """session_run doubles x; it records batch sizes and can be held until released."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, int]] = []  # (rows, timeout_in_ms)
        self.release = threading.Event()
        self.release.set()
        self.running = threading.Event()

    def session_run(self, feeds, fetches, timeout_in_ms=0):
        self.running.set()
        self.release.wait(30)
        x = feeds["x"]
        self.runs.append((len(x), timeout_in_ms))
        return [x * 2]


def _run_together(batcher, servable, count, timeout_in_ms=0):
    results: list = [None] * count
    start = threading.Barrier(count)

    def call(i):
        start.wait()
        try:
            results[i] = batcher.run(
                servable,
                "s",
                {"x": np.full((1, 2), i, np.float32)},
                ["y"],
                timeout_in_ms=timeout_in_ms,
            )[0]
        except ServingError as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_calls_are_merged_into_one_run():
    """Fails if nothing is batched: 8 calls must reach the model as ONE run of 8 rows."""
    servable = RecordingServable()
    batcher = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=30_000_000))
    results = _run_together(batcher, servable, 8)
    assert servable.runs == [(8, 0)], servable.runs
    for i, rows in enumerate(results):
        assert rows.tolist() == [[2.0 * i, 2.0 * i]]  # each caller gets its own rows back


def test_padding_to_an_allowed_batch_size():
    servable = RecordingServable()
    options = BatchingOptions(
        max_batch_size=8, batch_timeout_micros=1000, allowed_batch_sizes=(4, 8)
    )
    rows = Batcher(options).run(servable, "s", {"x": np.ones((3, 2), np.float32)}, ["y"])[0]
    assert servable.runs == [(4, 0)]
    assert rows.shape == (3, 2)


def test_batch_runs_with_the_latest_deadline_of_its_calls():
    servable = RecordingServable()
    batcher = Batcher(BatchingOptions(max_batch_size=2, batch_timeout_micros=30_000_000))
    results = _run_together(batcher, servable, 2, timeout_in_ms=20_000)
    assert len(servable.runs) == 1 and 0 < servable.runs[0][1] <= 20_000
    assert all(isinstance(r, np.ndarray) for r in results)


def test_a_caller_whose_deadline_passes_stops_waiting():
    """The batch is stuck in the model; a follower with a deadline gets DEADLINE_EXCEEDED and its
    thread is free, while the batch still finishes for the leader."""
    servable = RecordingServable()
    servable.release.clear()
    batcher = Batcher(BatchingOptions(max_batch_size=2, batch_timeout_micros=30_000_000))
    leader_result: list = []
    leader = threading.Thread(
        target=lambda: leader_result.append(
            batcher.run(servable, "s", {"x": np.ones((1, 2), np.float32)}, ["y"])
        )
    )
    leader.start()
    while not batcher._open:  # the leader's batch is open: the next call joins it
        threading.Event().wait(0.01)
    with pytest.raises(ServingError) as caught:
        batcher.run(servable, "s", {"x": np.ones((1, 2), np.float32)}, ["y"], timeout_in_ms=300)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert not leader_result  # it gave up while its batch was still in the model
    servable.release.set()
    leader.join(30)
    assert leader_result and leader_result[0][0].shape == (1, 2)


def test_a_batch_whose_calls_all_expired_is_not_run():
    from helpers.server.batching import _batch_timeout_in_ms, _Task

    expired = _Task({"x": np.ones((1, 2))}, 1, deadline=0.0)
    with pytest.raises(ServingError, match=re.escape(QUEUE_TIMEOUT_MESSAGE)) as caught:
        _batch_timeout_in_ms([expired])
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_oversized_call_is_refused():
    batcher = Batcher(BatchingOptions(max_batch_size=2))
    with pytest.raises(ServingError, match="larger than maximum input batch size 2"):
        batcher.run(RecordingServable(), "s", {"x": np.ones((3, 2), np.float32)}, ["y"])
