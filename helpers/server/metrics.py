"""Prometheus metrics with TF Serving's names, for `/monitoring/prometheus/metrics`.

A dashboard or alert written for the real server (`:tensorflow:serving:request_count`,
`:tensorflow:serving:request_latency_bucket{...}`) must work against the embedded one, so the
names, label names, units (microseconds) and histogram buckets are TF Serving's
(servables/tensorflow/util.cc, cc/saved_model/loader.cc, util/prometheus_exporter.cc).

The values live in one `ServingMetrics` collector registered in its own
`prometheus_client.CollectorRegistry`: nothing touches prometheus_client's global registry, so a
notebook kernel that imports this module next to other Prometheus code sees no clash.
The server process uses the module-level default through `record_request()` and `render()`.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence

import grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: Metric names exactly as TF Serving exports them ('/' of TensorFlow's names becomes ':').
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
EXAMPLE_COUNTS = ":tensorflow:serving:request_example_counts"
EXAMPLE_COUNT_TOTAL = ":tensorflow:serving:request_example_count_total"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"

#: Content type of the exposition text: exactly TF Serving's (http_server.cc,
#: ProcessPrometheusRequest), with no version or charset parameter.
CONTENT_TYPE = "text/plain"

#: Request latency buckets in microseconds: TF's Exponential(10, 1.8, 33), about 10 us to 20 min.
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))
#: Examples-per-request buckets: Exponential(1, 2, 15), 1 to 16384.
EXAMPLE_BUCKETS: tuple[float, ...] = tuple(2.0**i for i in range(15))

#: The APIs TF Serving counts (inference calls); metadata and status calls are not recorded.
INFERENCE_APIS = ("predict", "classify", "regress", "multi_inference")
#: The `API` label TF Serving puts on gRPC calls (the RPC's name); REST uses the URL's verb.
GRPC_API_LABEL = {
    "predict": "Predict",
    "classify": "Classify",
    "regress": "Regress",
    "multi_inference": "MultiInference",
}
ENTRYPOINTS = ("GRPC", "REST")
#: The `model_name` / `model` label of every request naming a model that is not served: one
#: series for all of them, so clients cannot grow the metrics page (or the server) without limit.
UNKNOWN_MODEL_LABEL = "<unknown>"
#: Most model names that get a label of their own; later ones share UNKNOWN_MODEL_LABEL.
MAX_MODEL_LABELS = 200


class _Histogram:
    """TensorFlow's bucketing: a value goes to the first bucket whose limit exceeds it."""

    def __init__(self, limits: Sequence[float]) -> None:
        self.limits = limits
        self.counts = [0] * (len(limits) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_right(self.limits, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, `le` printed as TF Serving prints it (`32.4`, `+Inf`)."""
        total, rows = 0, []
        for limit, count in zip([*self.limits, None], self.counts, strict=True):
            total += count
            rows.append(("+Inf" if limit is None else f"{limit:g}", float(total)))
        return rows


class ServingMetrics(Collector):
    """TF Serving's request and model-load metrics, in a registry of their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._request_count: dict[tuple[str, str], int] = defaultdict(int)
        self._request_latency: dict[tuple[str, str, str], _Histogram] = {}
        self._example_counts: dict[str, _Histogram] = {}
        self._example_total: dict[str, int] = defaultdict(int)
        self._load_attempts: dict[tuple[str, str], int] = defaultdict(int)
        self._load_latency: dict[str, int] = defaultdict(int)
        self._labelled_models: set[str] = set()
        self._served_models: Callable[[], Iterable[str]] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def label_models_by(self, served_models: Callable[[], Iterable[str]]) -> None:
        """Give requests a model label of their own only for the names `served_models()` lists.

        Without it, the first MAX_MODEL_LABELS names a client sends get one; either way the
        number of series is bounded whatever names clients make up.
        """
        self._served_models = served_models

    def model_label(self, model_name: str) -> str:
        """The label a request for `model_name` is counted under (see UNKNOWN_MODEL_LABEL)."""
        if model_name in self._labelled_models:
            return model_name
        served_models = self._served_models
        if served_models is not None:
            try:
                served = model_name in set(served_models())
            except Exception:  # noqa: BLE001 - a metric must never fail the request
                served = False
            if not served:
                return UNKNOWN_MODEL_LABEL
        with self._lock:
            if len(self._labelled_models) >= MAX_MODEL_LABELS:
                return UNKNOWN_MODEL_LABEL
            self._labelled_models.add(model_name)
        return model_name

    def record_request(
        self,
        model_name: str,
        api: str,
        entrypoint: str,
        status_code_name: str | grpc.StatusCode,
        seconds: float,
    ) -> None:
        """Count one request by status; add its latency when it succeeded (as TF Serving does).

        `api` is one of the contract's names ("predict", "get_model_status", ...); only inference
        calls are recorded, like TF Serving. `entrypoint` is "GRPC" or "REST".
        """
        if entrypoint not in ENTRYPOINTS:
            raise ValueError(f"entrypoint must be one of {ENTRYPOINTS}, not {entrypoint!r}")
        if api not in INFERENCE_APIS:
            return
        status = (
            status_code_name.name
            if isinstance(status_code_name, grpc.StatusCode)
            else str(status_code_name)
        )
        label = GRPC_API_LABEL[api] if entrypoint == "GRPC" else api
        model_name = self.model_label(model_name)  # outside the lock: it may ask the manager
        with self._lock:
            self._request_count[(model_name, status)] += 1
            if status == "OK":
                key = (model_name, label, entrypoint)
                histogram = self._request_latency.get(key)
                if histogram is None:
                    histogram = self._request_latency[key] = _Histogram(LATENCY_BUCKETS_US)
                histogram.add(seconds * 1e6)

    def record_example_count(self, model_name: str, count: int) -> None:
        """Examples in one Classify/Regress request (`request_example_counts` and `_total`)."""
        model_name = self.model_label(model_name)
        with self._lock:
            histogram = self._example_counts.get(model_name)
            if histogram is None:
                histogram = self._example_counts[model_name] = _Histogram(EXAMPLE_BUCKETS)
            histogram.add(count)
            self._example_total[model_name] += count

    def record_model_load(self, model_path: str, ok: bool, seconds: float) -> None:
        """One SavedModel load attempt (`load_attempt_count`; `load_latency` in us if it worked)."""
        with self._lock:
            self._load_attempts[(model_path, "success" if ok else "fail")] += 1
            if ok:
                self._load_latency[model_path] += int(seconds * 1e6)

    def collect(self) -> Iterator[Metric]:
        """Metric families for prometheus_client, sample names exactly as TF Serving's.

        The values are copied under the lock and the families built after it is released, so
        a scrape (which prometheus_client runs as a generator, at its own pace) never holds up
        the calls that record metrics.
        """
        with self._lock:
            request_count = dict(self._request_count)
            request_latency = {k: (h.buckets(), h.sum) for k, h in self._request_latency.items()}
            example_counts = {k: (h.buckets(), h.sum) for k, h in self._example_counts.items()}
            example_total = {(k,): v for k, v in self._example_total.items()}
            load_attempts = dict(self._load_attempts)
            load_latency = {(k,): v for k, v in self._load_latency.items()}
        yield _counter(
            REQUEST_COUNT,
            "The total number of requests.",
            ("model_name", "status"),
            request_count,
        )
        latency = HistogramMetricFamily(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            labels=("model_name", "API", "entrypoint"),
        )
        for labels, (buckets, total) in sorted(request_latency.items()):
            latency.add_metric(list(labels), buckets, total)
        yield latency
        examples = HistogramMetricFamily(
            EXAMPLE_COUNTS, "The number of tensorflow.Examples per request.", labels=("model",)
        )
        for model, (buckets, total) in sorted(example_counts.items()):
            examples.add_metric([model], buckets, total)
        yield examples
        yield _counter(
            EXAMPLE_COUNT_TOTAL,
            "The total number of tensorflow.Examples.",
            ("model",),
            example_total,
        )
        yield _counter(
            LOAD_ATTEMPT_COUNT,
            "The number of times a SavedModel was successfully loaded.",
            ("model_path", "status"),
            load_attempts,
        )
        yield _counter(
            LOAD_LATENCY,
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ("model_path",),
            load_latency,
        )

    def render(self) -> bytes:
        """The text exposition format, as served on the monitoring path."""
        text = generate_latest(self.registry).decode("utf-8")
        # prometheus_client names a counter family NAME_total in its HELP/TYPE lines (an
        # OpenMetrics rule); TF Serving's counters carry no suffix, so the header follows them.
        for name in (REQUEST_COUNT, EXAMPLE_COUNT_TOTAL, LOAD_ATTEMPT_COUNT, LOAD_LATENCY):
            text = text.replace(f"# HELP {name}_total ", f"# HELP {name} ")
            text = text.replace(f"# TYPE {name}_total counter", f"# TYPE {name} counter")
        return text.encode("utf-8")


def _counter(
    name: str, documentation: str, label_names: Sequence[str], values: dict[tuple, int]
) -> Metric:
    """A counter family whose samples are named `name` itself (no `_total`), like TF Serving's."""
    family = Metric(name, documentation, "counter")
    for labels, value in sorted(values.items()):
        family.add_sample(name, dict(zip(label_names, labels, strict=True)), float(value))
    return family


#: The server process's metrics (one server per process).
_default = ServingMetrics()


def default_metrics() -> ServingMetrics:
    """The process-wide collector that `record_request()` and `render()` use."""
    return _default


def record_request(
    model_name: str,
    api: str,
    entrypoint: str,
    status_code_name: str | grpc.StatusCode,
    seconds: float,
) -> None:
    """Record one request on the process-wide metrics (see `ServingMetrics.record_request`)."""
    _default.record_request(model_name, api, entrypoint, status_code_name, seconds)


def record_example_count(model_name: str, count: int) -> None:
    """Record the examples of one Classify/Regress request on the process-wide metrics."""
    _default.record_example_count(model_name, count)


def record_model_load(model_path: str, ok: bool, seconds: float) -> None:
    """Record one SavedModel load attempt on the process-wide metrics."""
    _default.record_model_load(model_path, ok, seconds)


def render() -> bytes:
    """The process-wide metrics as Prometheus text."""
    return _default.render()
