"""TF Serving's ServableStateMonitor: the state of every model version, and waits on it.

The manager publishes each version's transitions (START, LOADING, AVAILABLE, UNLOADING, END,
with the load error if any); GetModelStatus reads them, and start-up and config reloads wait
on them. The waiting rule is TF Serving's (servable_state_monitor.cc,
HasAnyServableInStreamReachedState): a model is "done" as soon as one of its versions is
AVAILABLE or END, looking only at transitions published after the wait began (ServerCore uses a
fresh monitor for a reload, so an old unload does not count).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from helpers.server.errors import ServingError

State = get_model_status_pb2.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = (
    State.START,
    State.LOADING,
    State.AVAILABLE,
    State.UNLOADING,
    State.END,
)


def servable_id(name: str, version: int) -> str:
    """TF Serving's ServableId::DebugString(), used in its log lines and messages."""
    return f"{{name: {name} version: {version}}}"


@dataclass(frozen=True)
class VersionState:
    """What GetModelStatus reports for one version: its state and, after a failure, why."""

    state: int
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    #: Order of publication (to tell transitions before and after a wait began).
    sequence: int = 0

    @property
    def health(self) -> str:
        """The status as absl's Status::ToString writes it (`NOT_FOUND: message`)."""
        if self.error_code == grpc.StatusCode.OK:
            return "OK"
        return f"{self.error_code.name}: {self.error_message}"


class Stopped(ServingError):
    """A wait ended because the server is stopping (UNAVAILABLE to a client still waiting)."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, "The server is stopping")


class ServableStateMonitor:
    """Thread-safe map name -> version -> VersionState, with waits on it."""

    def __init__(self) -> None:
        self._states: dict[str, dict[int, VersionState]] = {}
        self._changed = threading.Condition()
        self._sequence = itertools.count(1)
        self._listeners: list[Callable[[str, int, VersionState], None]] = []

    def subscribe(self, listener: Callable[[str, int, VersionState], None]) -> None:
        """Call `listener(name, version, state)` after every transition."""
        self._listeners.append(listener)

    def publish(
        self,
        name: str,
        version: int,
        state: int,
        error_code: grpc.StatusCode = grpc.StatusCode.OK,
        error_message: str = "",
    ) -> None:
        """Record a transition and wake every waiter."""
        with self._changed:
            entry = VersionState(state, error_code, error_message, next(self._sequence))
            self._states.setdefault(name, {})[version] = entry
            self._changed.notify_all()
        for listener in self._listeners:
            listener(name, version, entry)

    def versions(self, name: str) -> dict[int, VersionState]:
        """Every version of `name` ever seen (a copy)."""
        with self._changed:
            return dict(self._states.get(name, {}))

    def current_sequence(self) -> int:
        """A mark: transitions published from now on have a larger sequence number."""
        with self._changed:
            return next(self._sequence)

    def wait_until_done(
        self,
        names: Iterable[str],
        *,
        since: int = 0,
        stop: threading.Event | None = None,
        give_up: Callable[[str], str | None] | None = None,
    ) -> dict[str, tuple[int, VersionState] | str]:
        """Block until each model has a version AVAILABLE or END (published after `since`).

        Returns, for each model that did *not* become available, either (version, state) of the
        version that ended, or the reason `give_up(name)` returned (a string ends the wait for
        that model, e.g. "no version found"). An empty dict means all are AVAILABLE.
        Raises Stopped when `stop` is set.
        """
        pending = set(names)
        failures: dict[str, tuple[int, VersionState] | str] = {}
        with self._changed:
            while pending:
                for name in sorted(pending):
                    reached = self._reached(name, since)
                    reason = None if reached else (give_up(name) if give_up else None)
                    if reached is not None:
                        version, entry = reached
                        if entry.state != AVAILABLE:
                            failures[name] = (version, entry)
                        pending.discard(name)
                    elif reason is not None:
                        failures[name] = reason
                        pending.discard(name)
                if not pending:
                    break
                if stop is not None and stop.is_set():
                    raise Stopped()
                self._changed.wait(0.1)
        return failures

    def wake(self) -> None:
        """Make waiters look again (something outside the states changed)."""
        with self._changed:
            self._changed.notify_all()

    def _reached(self, name: str, since: int) -> tuple[int, VersionState] | None:
        """The highest version of `name` AVAILABLE or END since `since` (holds the lock)."""
        for version, entry in sorted(self._states.get(name, {}).items(), reverse=True):
            if entry.sequence > since and entry.state in (AVAILABLE, END):
                return version, entry
        return None
