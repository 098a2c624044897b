"""Several embedded servers on one model folder, and what each one's own metrics say.

Replicas are ordinary `helpers.server` processes on free ports, all with Prometheus metrics on
(`--monitoring_config_file`, the same file docker-compose mounts) and the standard gRPC health
service. Which replica answered a call is read from its `:tensorflow:serving:request_count`
counter (labels `model_name` and `status`, as TF Serving's servables/tensorflow/util.cc defines
it), parsed with prometheus_client: the same number a Prometheus server would scrape.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import config
from helpers.server.metrics import REQUEST_COUNT
from helpers.server.process import ServerProcess, start_server

#: TF Serving's MonitoringConfig that turns the metrics on (shared with docker-compose.yml).
MONITORING_CONFIG = config.course_root() / "docker" / "monitoring.config"
#: Where that config puts the metrics, on the REST port.
METRICS_PATH = "/monitoring/prometheus/metrics"
#: Flags every replica gets: metrics, and the health service a Kubernetes probe asks.
REPLICA_FLAGS = (
    f"--monitoring_config_file={MONITORING_CONFIG}",
    "--enable_grpc_healthcheck_service",
)


class ReplicaError(RuntimeError):
    """A replica's metrics could not be read, or replicas could not be started."""


def start_replicas(
    count: int,
    model_name: str = config.MODEL_NAME,
    model_base_path: str | os.PathLike[str] | None = None,
    *,
    extra_flags: Sequence[str] = (),
    timeout: float = 120.0,
) -> list[ServerProcess]:
    """Start `count` embedded servers on the same model folder, wait until all are AVAILABLE.

    They start together (loading in parallel) on ports the OS picks. If one fails, all stop.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    flags = [*REPLICA_FLAGS, *extra_flags]
    replicas: list[ServerProcess] = []
    try:
        for _ in range(count):
            replicas.append(
                start_server(
                    model_base_path,
                    model_name,
                    default_ports=False,
                    extra_flags=flags,
                    wait=False,
                )
            )
        for replica in replicas:
            replica.wait_until_available(timeout=timeout)
    except BaseException:
        stop_replicas(replicas)
        raise
    return replicas


def stop_replicas(replicas: Sequence[ServerProcess]) -> None:
    """Stop every replica (each gets SIGTERM and finishes its calls in flight)."""
    for replica in replicas:
        replica.stop()


def kill(replica: ServerProcess) -> None:
    """End a replica at once, calls in flight included: a crash, or Kubernetes' SIGKILL."""
    if replica.is_running():
        os.kill(replica.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    replica.stop()  # reaps the process; it is already gone


def restart(replica: ServerProcess, timeout: float = 120.0) -> ServerProcess:
    """Start the same command line again (same ports, model and flags); wait for the model."""
    if replica.is_running():
        raise ReplicaError(f"{replica!r} is still running: kill or stop it first")
    again = ServerProcess(replica.args, replica.grpc_port, replica.rest_port, replica.model_name)
    try:
        again.wait_until_available(timeout=timeout)
    except BaseException:
        again.stop()
        raise
    return again


def parse_request_counts(text: str, model_name: str | None = None) -> dict[str, int]:
    """`:tensorflow:serving:request_count` from Prometheus text, summed per `status` label."""
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != REQUEST_COUNT:
            continue
        for sample in family.samples:  # the parser may add _total to a counter's sample name
            if model_name is not None and sample.labels.get("model_name") != model_name:
                continue
            status = sample.labels.get("status", "")
            counts[status] = counts.get(status, 0) + int(sample.value)
    return counts


def request_counts(
    rest_url: str, model_name: str | None = config.MODEL_NAME, timeout: float = 2.0
) -> dict[str, int]:
    """Scrape one server's metrics: requests it answered, per status (OK, NOT_FOUND, ...)."""
    url = rest_url.rstrip("/") + METRICS_PATH
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise ReplicaError(
            f"cannot read the metrics at {url}: {exc}. Was the server started with "
            f"--monitoring_config_file (see helpers.replicas.REPLICA_FLAGS)?"
        ) from None
    return parse_request_counts(response.text, model_name)


def served_calls(replicas: Sequence[object], model_name: str = config.MODEL_NAME) -> list[int]:
    """Successful inference calls each replica has answered so far (its OK count)."""
    return [request_counts(r.rest_url, model_name).get("OK", 0) for r in replicas]


@dataclass
class CountSamples:
    """Per-replica OK counts over time: `times[i]` seconds, `counts[i][replica]` (None: down)."""

    labels: list[str]
    times: list[float] = field(default_factory=list)
    counts: list[list[int | None]] = field(default_factory=list)

    def calls_per_interval(self) -> list[list[int]]:
        """Calls each replica answered between two samples (a restarted counter starts at 0)."""
        rows = []
        for before, after in zip(self.counts, self.counts[1:], strict=False):
            row = []
            for old, new in zip(before, after, strict=True):
                if new is None:
                    row.append(0)
                elif old is None or new < old:
                    row.append(new)  # a new process: its counter began at zero
                else:
                    row.append(new - old)
            rows.append(row)
        return rows


def seconds_until_even(
    samples: CountSamples, replica: int, since: float, tolerance: float = 0.5
) -> float | None:
    """Seconds after `since` until `replica` answers its even share of the calls again.

    Its share of an interval counts as even when it is at least `tolerance` times 1/N of the
    calls in that interval (N replicas). None if that never happens in the samples.
    """
    if not 0 < tolerance <= 1:
        raise ValueError(f"tolerance must be in (0, 1], got {tolerance}")
    if not 0 <= replica < len(samples.labels):
        raise ValueError(f"replica {replica} is not one of the {len(samples.labels)} sampled")
    even = 1 / len(samples.labels)
    for end, row in zip(samples.times[1:], samples.calls_per_interval(), strict=True):
        if end <= since or sum(row) == 0:
            continue
        if row[replica] / sum(row) >= tolerance * even:
            return end - since
    return None


class CountSampler:
    """Reads every replica's OK count every `interval` s in a thread, until stopped.

    Replicas are named by REST URL, so a replica restarted on the same ports is the same column.
    """

    def __init__(
        self,
        rest_urls: Sequence[str],
        interval: float = 0.25,
        model_name: str = config.MODEL_NAME,
    ) -> None:
        self.rest_urls = list(rest_urls)
        self.interval = interval
        self.model_name = model_name
        self.samples = CountSamples(labels=self.rest_urls)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="count-sampler", daemon=True)
        self._started = 0.0

    def start(self) -> CountSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def elapsed(self) -> float:
        """Seconds since start(), on the samples' clock."""
        return time.monotonic() - self._started

    def _read(self, url: str) -> int | None:
        try:
            return request_counts(url, self.model_name, timeout=1.0).get("OK", 0)
        except ReplicaError:
            return None

    def _run(self) -> None:
        while True:
            self.samples.times.append(self.elapsed())
            self.samples.counts.append([self._read(url) for url in self.rest_urls])
            if self._stop.wait(self.interval):
                break

    def stop(self) -> CountSamples:
        """Take a last sample, stop the thread, return what was sampled."""
        self._stop.set()
        self._thread.join(timeout=10)
        return self.samples

    def __enter__(self) -> CountSampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
