"""Read what a model server counted: its Prometheus metrics, with TF Serving's names.

TF Serving counts every inference request in `:tensorflow:serving:request_count`, labelled
with the model and the status the *server* ended the request with
(servables/tensorflow/util.cc, `RecordModelRequestCount`), once the request's work is over.
That makes the counter a view of the server's side of a call: a request the client gave up on
is counted `DEADLINE_EXCEEDED` when the server stopped its run at the deadline, and `OK` when
the server ran it to the end for nobody. Metrics are served on the REST port when the server
runs with `--monitoring_config_file` (the course's file is `docker/monitoring.config`).
"""

from __future__ import annotations

import time

from helpers import config

#: TF Serving's default path for Prometheus metrics (MonitoringConfig.prometheus_config.path).
METRICS_PATH = "/monitoring/prometheus/metrics"
#: The course's monitoring config: Prometheus metrics on at METRICS_PATH (real and embedded server).
MONITORING_CONFIG_FILE = config.course_root() / "docker" / "monitoring.config"
#: Requests counted by model and final status.
REQUEST_COUNT = ":tensorflow:serving:request_count"


def monitoring_flag() -> str:
    """The server flag that turns Prometheus metrics on with the course's config file."""
    return f"--monitoring_config_file={MONITORING_CONFIG_FILE}"


def request_counts(
    rest_url: str, model_name: str = config.MODEL_NAME, *, path: str = METRICS_PATH, timeout=5.0
) -> dict[str, int] | None:
    """{status: requests} the server has counted for `model_name`, or None without metrics.

    None means the server exports no metrics at `path` (it runs without
    `--monitoring_config_file`): start it with `monitoring_flag()` to see them.
    """
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    reply = requests.get(f"{rest_url}{path}", timeout=timeout)
    if reply.status_code == 404:
        return None
    reply.raise_for_status()
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name.removesuffix("_total") != REQUEST_COUNT:
                continue
            if sample.labels.get("model_name") == model_name:
                status = sample.labels.get("status", "")
                counts[status] = counts.get(status, 0) + int(sample.value)
    return counts


def new_requests(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The requests counted between two `request_counts` readings, by status."""
    grown = {status: after.get(status, 0) - before.get(status, 0) for status in after}
    return {status: count for status, count in grown.items() if count > 0}


def wait_for_requests(
    rest_url: str,
    before: dict[str, int],
    count: int = 1,
    model_name: str = config.MODEL_NAME,
    *,
    timeout: float = 60.0,
) -> dict[str, int]:
    """Poll the metrics until `count` more requests are counted; return them by status.

    The server counts a request when its work ends, which can be well after the client gave up.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = request_counts(rest_url, model_name)
        if now is None:
            raise RuntimeError(f"{rest_url}{METRICS_PATH} serves no metrics any more.")
        grown = new_requests(before, now)
        if sum(grown.values()) >= count:
            return grown
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the server counted {sum(grown.values())} of {count} new requests for "
                f"{model_name!r} within {timeout:g} s"
            )
        time.sleep(0.1)
