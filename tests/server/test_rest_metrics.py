"""Unit tests of helpers.server.metrics: TF Serving's metric names, labels, units and buckets."""

from __future__ import annotations

import re

import grpc
import pytest
from prometheus_client import REGISTRY

from helpers.server import metrics
from helpers.server.metrics import ServingMetrics


def samples(collector: ServingMetrics) -> dict[tuple, float]:
    """(sample name as written, sorted labels) -> value, from the exposition text.

    Read line by line on purpose: prometheus_client's parser renames counter samples to
    NAME_total, which would hide whether the names are TF Serving's.
    """
    result = {}
    for line in collector.render().decode().splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([^{ ]+)(?:\{(.*)\})? (\S+)", line)
        assert match, line
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or "")))
        result[(match[1], labels)] = float(match[3])
    return result


def test_request_count_and_latency_use_tf_serving_names():
    m = ServingMetrics()
    m.record_request("mnist", "predict", "GRPC", "OK", 0.0012)
    m.record_request("mnist", "predict", "REST", grpc.StatusCode.INVALID_ARGUMENT, 0.002)
    m.record_request("mnist", "predict", "REST", "OK", 0.002)
    got = samples(m)
    count = ":tensorflow:serving:request_count"
    assert got[(count, (("model_name", "mnist"), ("status", "OK")))] == 2
    assert got[(count, (("model_name", "mnist"), ("status", "INVALID_ARGUMENT")))] == 1
    grpc_labels = (("API", "Predict"), ("entrypoint", "GRPC"), ("model_name", "mnist"))
    assert got[(":tensorflow:serving:request_latency_count", grpc_labels)] == 1
    assert got[(":tensorflow:serving:request_latency_sum", grpc_labels)] == pytest.approx(1200)
    rest_labels = (("API", "predict"), ("entrypoint", "REST"), ("model_name", "mnist"))
    assert got[(":tensorflow:serving:request_latency_count", rest_labels)] == 1  # OK calls only


def test_exposition_text_matches_tf_serving_layout():
    m = ServingMetrics()
    m.record_request("mnist", "predict", "GRPC", "OK", 0.0012)  # 1200 us
    text = m.render().decode()
    assert "# TYPE :tensorflow:serving:request_count counter\n" in text
    assert "request_count_total" not in text and "_created" not in text
    assert "# TYPE :tensorflow:serving:request_latency histogram\n" in text
    bucket = ':tensorflow:serving:request_latency_bucket{API="Predict",entrypoint="GRPC",le="%s"'
    assert (bucket % "1102") + ',model_name="mnist"} 0.0' in text  # 10 * 1.8**8 us
    assert (bucket % "1983.59") + ',model_name="mnist"} 1.0' in text
    assert (bucket % "+Inf") + ',model_name="mnist"} 1.0' in text


def test_status_and_metadata_calls_are_not_counted():
    m = ServingMetrics()
    m.record_request("mnist", "get_model_status", "REST", "OK", 0.001)
    m.record_request("mnist", "get_model_metadata", "GRPC", "OK", 0.001)
    assert ":tensorflow:serving:request_count{" not in m.render().decode()


def test_examples_and_model_loads():
    m = ServingMetrics()
    m.record_example_count("toy", 3)
    m.record_model_load("/models/mnist/1", True, 0.25)
    m.record_model_load("/models/mnist/2", False, 0.1)
    got = samples(m)
    assert got[(":tensorflow:serving:request_example_count_total", (("model", "toy"),))] == 3
    assert (
        got[(":tensorflow:serving:request_example_counts_bucket", (("le", "4"), ("model", "toy")))]
        == 1
    )
    attempts = ":tensorflow:cc:saved_model:load_attempt_count"
    assert got[(attempts, (("model_path", "/models/mnist/1"), ("status", "success")))] == 1
    assert got[(attempts, (("model_path", "/models/mnist/2"), ("status", "fail")))] == 1
    assert (
        got[(":tensorflow:cc:saved_model:load_latency", (("model_path", "/models/mnist/1"),))]
        == 250_000
    )


def test_own_registry_leaves_the_global_one_alone():
    before = set(REGISTRY._names_to_collectors)  # noqa: SLF001 - inspecting on purpose
    ServingMetrics().record_request("mnist", "predict", "REST", "OK", 0.001)
    metrics.record_request("mnist", "predict", "REST", "OK", 0.001)
    assert set(REGISTRY._names_to_collectors) == before  # noqa: SLF001
    assert b":tensorflow:serving:request_count" in metrics.render()


def test_bad_entrypoint_is_refused():
    with pytest.raises(ValueError, match="entrypoint must be one of"):
        ServingMetrics().record_request("mnist", "predict", "HTTP", "OK", 0.1)


def test_a_scrape_in_progress_does_not_hold_the_lock():
    """prometheus_client pulls families one by one; between two, recording must not block."""
    m = ServingMetrics()
    m.record_request("toy", "predict", "GRPC", "OK", 0.001)
    families = m.collect()
    next(families)  # a scrape has started and is paused between two families
    assert m._lock.acquire(timeout=0)  # free: a call can record now
    m._lock.release()
    m.record_request("toy", "predict", "GRPC", "OK", 0.001)
    assert len(list(families)) == 5  # the scrape finishes with its own snapshot
