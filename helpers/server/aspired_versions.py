"""TF Serving's AspiredVersionsManager (with its BasicManager and AvailabilityPreservingPolicy).

The source says which versions of each model should serve (the *aspired* versions); this
manager moves the loaded set towards them, one action per model at a time, with TF Serving's
availability-preserving policy (core/availability_preserving_policy.cc):

1. unload the lowest un-aspired version that is loaded, when the model has no aspired version,
   or one aspired version is already loaded, or more than one un-aspired version is loaded;
2. otherwise load the highest aspired version that was never tried.

So a new version is loaded (and warmed up) before the old one is unloaded, and a version whose
load fails leaves the old one serving. A failing load is retried like util/retrier.cc:
`max_num_load_retries` more attempts, `load_retry_interval_micros` apart, stopped as soon as the
version is no longer aspired or the server stops (loader_harness.cc: "Retrying of Loading
servable: ... was cancelled."). A failed version is not tried again while it stays aspired; once
its folder goes away (or the policy drops it) it is forgotten, so a fixed copy is tried afresh.

Each model's loads run in a thread of their own: one model's slow or failing load never delays
another model, a config reload, or a lookup. (TF Serving's default, --num_load_threads=0, loads
serially in the manager's thread after start-up; the embedded server does not copy that.)
Lookups read an immutable snapshot, so serving never waits for the manager.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from helpers.server.errors import ServingError, first_line, to_serving_error
from helpers.server.state_monitor import (
    AVAILABLE,
    END,
    LOADING,
    START,
    UNLOADING,
    ServableStateMonitor,
    servable_id,
)

log = logging.getLogger("helpers.server")

#: loader(name, version, path) -> a loaded servable (raises on failure).
Loader = Callable[[str, int, Path], Any]

NEW, LOADING_STATE, READY, ERROR, DISABLED = "new", "loading", "ready", "error", "disabled"


@dataclass
class RetryOptions:
    """--max_num_load_retries and --load_retry_interval_micros."""

    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000


@dataclass
class _Harness:
    """One version's life in the manager (TF Serving's LoaderHarness)."""

    name: str
    version: int
    path: Path
    aspired: bool = True
    state: str = NEW
    servable: Any = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> str:
        return servable_id(self.name, self.version)


class AspiredVersionsManager:
    """Loads and unloads versions towards the aspired ones; serves lookups from a snapshot."""

    def __init__(
        self,
        loader: Loader,
        monitor: ServableStateMonitor,
        retry: RetryOptions | None = None,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._loader = loader
        self._monitor = monitor
        self._retry = retry or RetryOptions()
        self._on_change = on_change
        self._harnesses: dict[str, dict[int, _Harness]] = {}
        self._busy: set[str] = set()  # models with an action in progress
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: name -> {version: servable}; replaced, never mutated, so lookups take no lock.
        self._available: dict[str, dict[int, Any]] = {}

    # ------------------------------------------------------------------ the source's callback
    def set_aspired_versions(self, name: str, versions: dict[int, Path]) -> None:
        """Make `versions` the ones `name` should serve (the source calls this after each poll)."""
        dropped = []
        with self._lock:
            harnesses = self._harnesses.setdefault(name, {})
            for version, harness in list(harnesses.items()):
                harness.aspired = version in versions
                if not harness.aspired:
                    harness.cancelled.set()  # stop retrying a load nobody wants any more
                    if harness.state in (ERROR, DISABLED, NEW):
                        del harnesses[version]  # forgotten: a new copy gets a fresh try
                        if harness.state == NEW:
                            dropped.append(version)
            started = []
            for version, path in versions.items():
                if version not in harnesses and not self._stopping.is_set():
                    harnesses[version] = _Harness(name, version, path)
                    started.append(version)
        for version in sorted(dropped):
            self._monitor.publish(name, version, END)  # aspired once, never loaded
        for version in sorted(started):
            self._monitor.publish(name, version, START)
        self._step(name)

    # ------------------------------------------------------------------ lookups
    def available(self) -> dict[str, dict[int, Any]]:
        """Loaded versions by model: an immutable snapshot."""
        return self._available

    def loading(self) -> bool:
        """True while a load is in progress (or waiting to retry)."""
        with self._lock:
            return bool(self._busy)

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """No new loads; retries stop at once. A load already inside TensorFlow is abandoned."""
        self._stopping.set()
        with self._lock:
            for harnesses in self._harnesses.values():
                for harness in harnesses.values():
                    harness.cancelled.set()

    def unload_all(self) -> None:
        """Unload every loaded version (server shutdown)."""
        self.stop()
        with self._lock:
            ready = [h for hs in self._harnesses.values() for h in hs.values() if h.state == READY]
        for harness in ready:
            self._unload(harness)

    # ------------------------------------------------------------------ the policy
    def _step(self, name: str) -> None:
        """Start the next action for `name` if none is running (loads get their own thread)."""
        with self._lock:
            if name in self._busy or self._stopping.is_set():
                return
            action = self._next_action(name)
            if action is None:
                return
            kind, harness = action
            self._busy.add(name)
            if kind == "load":
                harness.state = LOADING_STATE
        if kind == "unload":
            try:
                self._unload(harness)
            finally:
                self._done(name)
            return
        threading.Thread(
            target=self._load_then_continue,
            args=(harness,),
            name=f"load-{name}-{harness.version}",
            daemon=True,
        ).start()

    def _next_action(self, name: str) -> tuple[str, _Harness] | None:
        """AvailabilityPreservingPolicy::GetNextAction (holds the lock)."""
        harnesses = self._harnesses.get(name, {})
        aspired = [h for h in harnesses.values() if h.aspired]
        unaspired_ready = [h for h in harnesses.values() if not h.aspired and h.state == READY]
        aspired_ready = any(h.state == READY for h in aspired)
        if unaspired_ready and (not aspired or aspired_ready or len(unaspired_ready) > 1):
            return "unload", min(unaspired_ready, key=lambda h: h.version)
        new = [h for h in aspired if h.state == NEW]
        if new:
            return "load", max(new, key=lambda h: h.version)
        return None

    def _done(self, name: str) -> None:
        with self._lock:
            self._busy.discard(name)
        self._step(name)

    # ------------------------------------------------------------------ load / unload
    def _load_then_continue(self, harness: _Harness) -> None:
        try:
            self._load(harness)
        except BaseException:  # noqa: BLE001 - a load thread must never die silently
            log.exception("Loading %s crashed", harness.id)
        finally:
            self._done(harness.name)

    def _load(self, harness: _Harness) -> None:
        """Load with retries (util/retrier.cc), then publish AVAILABLE or END with the error."""
        self._monitor.publish(harness.name, harness.version, LOADING)
        log.info("Loading servable version %s from %s", harness.id, harness.path)
        description = f"Loading servable: {harness.id}"
        retries = max(0, self._retry.max_num_load_retries)
        interval = max(0.0, self._retry.load_retry_interval_micros / 1e6)
        error: ServingError | None = None
        servable = None
        for attempt in range(retries + 1):
            if attempt:
                if harness.cancelled.wait(interval):
                    break
                log.info("Retrying of %s retry: %d", description, attempt)
            started = time.monotonic()
            try:
                servable = self._loader(harness.name, harness.version, harness.path)
            except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
                error = to_serving_error(exc)
                log.error("%s failed: %s: %s", description, error.code.name, error.message)
                continue
            log.info(
                "Successfully loaded servable version %s in %.2f s",
                harness.id,
                time.monotonic() - started,
            )
            break
        else:
            if retries:
                log.info("Retrying of %s exhausted max_num_retries: %d", description, retries)
        if servable is None and harness.cancelled.is_set():
            log.info("Retrying of %s was cancelled.", description)
        if harness.cancelled.is_set() and (servable is not None or error is None):
            if servable is not None and hasattr(servable, "close"):
                servable.close()  # loaded, but un-aspired meanwhile: give its session back
            servable = None  # un-aspired while loading: it must not start serving
            error = ServingError(grpc.StatusCode.CANCELLED, "Loading of servable cancelled")
        if servable is None:
            assert error is not None
            with self._lock:
                harness.state = ERROR
                if not harness.aspired:
                    self._forget(harness)
            self._monitor.publish(
                harness.name, harness.version, END, error.code, first_line(error.message)
            )
            return
        with self._lock:
            harness.state = READY
            harness.servable = servable
            versions = {**self._available.get(harness.name, {}), harness.version: servable}
            self._available = {**self._available, harness.name: versions}
        self._monitor.publish(harness.name, harness.version, AVAILABLE)
        self._changed()

    def _unload(self, harness: _Harness) -> None:
        log.info("Unloading servable version %s", harness.id)
        self._monitor.publish(harness.name, harness.version, UNLOADING)
        with self._lock:
            versions = dict(self._available.get(harness.name, {}))
            versions.pop(harness.version, None)
            available = dict(self._available)
            if versions:
                available[harness.name] = versions
            else:
                available.pop(harness.name, None)
            self._available = available
            servable, harness.servable = harness.servable, None
            harness.state = DISABLED
            if not harness.aspired:
                self._forget(harness)
        # Calls in flight still hold the servable; its session closes when the last one ends.
        if servable is not None and hasattr(servable, "close"):
            servable.close()
        del servable
        self._monitor.publish(harness.name, harness.version, END)
        log.info("Done unloading servable version %s", harness.id)
        self._changed()

    def _forget(self, harness: _Harness) -> None:
        """Drop an ended, un-aspired harness (AspiredVersionsManager::FlushServables)."""
        harnesses = self._harnesses.get(harness.name, {})
        if harnesses.get(harness.version) is harness:
            del harnesses[harness.version]

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
