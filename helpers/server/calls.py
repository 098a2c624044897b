"""The one call path of the embedded server: gRPC and REST requests both end up here.

A front end (grpc_service, rest) turns its wire format into a `Target` and a `Deadline`, then
asks `Calls.serve` to run the work. Everything that must be the same on both ports happens once,
here:

- the deadline reaches TensorFlow: `Deadline.timeout_in_ms()` becomes the Session run's
  `RunOptions.timeout_in_ms`, as TF Serving does on gRPC (prediction_service_impl.cc,
  DeadlineToTimeoutMillis of the call's deadline, with its default enforce_session_run_timeout)
  and on REST (http_rest_api_handler.cc sets `run_options_.set_timeout_in_ms` from
  --rest_api_timeout_in_ms). An over-deadline run is stopped by TensorFlow and its worker
  thread is free again; a call whose deadline passed while it was queued runs with 1 ms;
- every exception becomes TF Serving's status (`errors.to_serving_error`);
- the call is counted once in the metrics (`metrics.ServingMetrics.record_request`).

What differs stays in the front ends: gRPC cuts error messages at 1,024 characters
(grpc_status_util.cc, `errors.truncate`), REST writes them whole (MakeJsonFromStatus).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from helpers.server import metrics
from helpers.server.errors import ServingError, to_serving_error

if TYPE_CHECKING:
    from helpers.server.servable import Servable

log = logging.getLogger("helpers.server")

T = TypeVar("T")

#: Lookups a call makes when the version it found is being unloaded (a rollout in progress).
_LOOKUPS = 3

#: A deadline further away than this is no deadline (RunOptions.timeout_in_ms is an int64 of
#: milliseconds, but TF Serving's DeadlineToTimeoutMillis works in int32 range).
_LONGEST_TIMEOUT_S = 2**31 / 1000


@dataclass(frozen=True)
class Deadline:
    """When a call must be over (`time.monotonic()` seconds), or None for never."""

    at: float | None = None

    @classmethod
    def after_ms(cls, timeout_ms: int | None, *, start: float | None = None) -> Deadline:
        """`timeout_ms` from `start` (default: now); 0, negative or None: no deadline."""
        if not timeout_ms or timeout_ms <= 0:
            return cls(None)
        return cls((time.monotonic() if start is None else start) + timeout_ms / 1000)

    @classmethod
    def of_grpc(cls, context: Any) -> Deadline:
        """The deadline of a gRPC call (`context.time_remaining()`; none if the client set none)."""
        remaining = context.time_remaining()
        if remaining is None or remaining > _LONGEST_TIMEOUT_S:
            return cls(None)
        return cls(time.monotonic() + remaining)

    def remaining(self) -> float | None:
        """Seconds left (negative once passed), or None without a deadline."""
        return None if self.at is None else self.at - time.monotonic()

    def timeout_in_ms(self) -> int:
        """RunOptions.timeout_in_ms: the milliseconds left; 0 means no timeout, as in TensorFlow.

        Where TF Serving's value would be zero or negative (the deadline passed while the call
        was queued) TensorFlow would run without a timeout, so 1 ms is used instead: a call
        nobody waits for never occupies a worker.
        """
        remaining = self.remaining()
        if remaining is None:
            return 0
        return max(1, int(remaining * 1000))


#: The deadline of a call without one.
NO_DEADLINE = Deadline()


@dataclass(frozen=True)
class Target:
    """What a call asks for: model, version or label, and signature (a ModelSpec's content)."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @classmethod
    def of_spec(cls, spec: Any) -> Target:
        """From a `tensorflow.serving.ModelSpec` (version and label are a oneof)."""
        choice = spec.WhichOneof("version_choice")
        return cls(
            spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None,
            signature_name=spec.signature_name,
        )


class Calls:
    """Run requests for one front end (`entrypoint` "GRPC" or "REST") against a ServerCore."""

    def __init__(
        self,
        core: Any,
        entrypoint: str,
        serving_metrics: metrics.ServingMetrics | None = None,
    ) -> None:
        if entrypoint not in metrics.ENTRYPOINTS:
            raise ValueError(f"entrypoint must be one of {metrics.ENTRYPOINTS}, not {entrypoint!r}")
        self.core = core
        self.entrypoint = entrypoint
        self.metrics = serving_metrics or metrics.default_metrics()

    # ------------------------------------------------------------------ the one wrapper
    def serve(self, api: str, model_name: str, work: Callable[[], T]) -> T:
        """Run `work()`; any failure is raised as a ServingError; the call is counted once.

        `api` is the metrics name ("predict", "classify", "regress", "multi_inference",
        "get_model_metadata", "get_model_status", ...); only inference calls are counted.
        """
        started = time.perf_counter()
        code = "OK"
        try:
            return work()
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not a status
                raise
            error = to_serving_error(exc)
            code = error.code.name
            raise error from None
        finally:
            self._record(model_name, api, code, time.perf_counter() - started)

    def _record(self, model_name: str, api: str, code: str, seconds: float) -> None:
        try:
            self.metrics.record_request(model_name, api, self.entrypoint, code, seconds)
        except Exception:  # noqa: BLE001 - metrics must never fail a call
            log.exception("Recording metrics failed")

    def record_examples(self, model_name: str, count: int) -> None:
        """Count the tf.Examples of a Classify/Regress/MultiInference call, as TF Serving does."""
        try:
            self.metrics.record_example_count(model_name, count)
        except Exception:  # noqa: BLE001 - metrics must never fail a call
            log.exception("Recording metrics failed")

    # ------------------------------------------------------------------ the calls
    def servable(self, target: Target) -> Servable:
        """ServerCore::GetServableHandle for the target (NOT_FOUND / INVALID_ARGUMENT)."""
        return self.core.servable(target.name, target.version, target.label)

    @contextmanager
    def _using(self, target: Target, servable: Servable | None = None) -> Iterator[Servable]:
        """The target's servable, held for a run: an unloaded version's session is closed only
        once no run holds it. A version unloaded between lookup and use is looked up again."""
        for _attempt in range(_LOOKUPS):
            servable = servable or self.servable(target)
            acquire = getattr(servable, "acquire", None)
            if acquire is None or acquire():
                break
            servable = None
        else:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE, f"Servable {target.name} was unloaded; try again"
            )
        try:
            yield servable
        finally:
            if acquire is not None:
                servable.release()

    def predict(
        self,
        target: Target,
        inputs: Mapping[str, Any],
        output_filter: Sequence[str] = (),
        *,
        deadline: Deadline = NO_DEADLINE,
        servable: Servable | None = None,
    ) -> tuple[Servable, dict[str, Any]]:
        """Run a predict signature; returns the servable used and the outputs by alias."""
        with self._using(target, servable) as servable:
            outputs = servable.run(
                target.signature_name,
                inputs,
                list(output_filter),
                timeout_in_ms=deadline.timeout_in_ms(),
            )
        return servable, outputs

    def examples(
        self,
        kind: str,
        target: Target,
        request_input: Any,
        *,
        deadline: Deadline = NO_DEADLINE,
    ) -> tuple[Servable, Any]:
        """Classify or regress tf.Examples (`kind`: "classify" or "regress"); returns the
        servable used and the ClassificationResult or RegressionResult."""
        with self._using(target) as servable:
            run = servable.classify if kind == "classify" else servable.regress
            result = run(
                target.signature_name, request_input, timeout_in_ms=deadline.timeout_in_ms()
            )
        return servable, result

    def multi_inference(self, request: Any, *, deadline: Deadline = NO_DEADLINE) -> Any:
        """Several classify/regress heads over one input (gRPC only in TF Serving)."""
        if request.tasks:
            target = Target.of_spec(request.tasks[0].model_spec)
        else:
            target = Target("")
        with self._using(target) as servable:
            response = servable.multi_inference(request, timeout_in_ms=deadline.timeout_in_ms())
        # TF Serving counts examples for MultiInference only, once its run succeeded
        # (multi_inference.cc RecordRequestExampleCount; Classify and Regress do not).
        self.record_examples(target.name, _example_count(request.input))
        return response


def _example_count(request_input: Any) -> int:
    kind = request_input.WhichOneof("kind")
    return len(getattr(request_input, kind).examples) if kind else 0
