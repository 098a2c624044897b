"""TF Serving's FileSystemStoragePathSource: which version folders each model should serve.

Every `--file_system_poll_wait_seconds` (0: once; negative: never) each model's base path is
listed and its version policy applied (`latest {num_versions}`, `all {}`,
`specific {versions}`); the result, the *aspired versions*, goes to the manager through a
callback. As in file_system_storage_path_source.cc:

- a child is a version when its name parses as an int64 the way absl::SimpleAtoi reads it:
  optional ASCII spaces, an optional sign, ASCII digits only, no overflow. `99999999999999999999`
  (too big), `²` or `٢` (not ASCII digits) and `v1` are ignored. Two spellings of one number
  (`7` and `007`) log TF Serving's "Duplicate version directories" warning;
- a base path that cannot be read (missing, not a folder, no permission) is an error for that
  poll: it is logged and nothing changes, so the versions already loaded keep serving;
- a child that cannot be looked at (a symlink that loops or points nowhere readable) is left
  out with one warning, and the other versions are still found: TF Serving only lists names,
  so one bad entry never stops version discovery or start-up;
- a base path with no version at all logs TF Serving's "No versions of servable ... found"
  warning and aspires nothing, so loaded versions are unloaded.

The course adds one rule TF Serving lacks, because learners copy models by hand: a version
folder is only aspired once it holds `saved_model.pb` and its files stop changing (two looks
`SETTLE_SECONDS` apart), so a half-copied version is never loaded. Unlike TF Serving, one
unreadable base path does not stop the others from being polled, and a new config is polled at
once rather than at the next tick.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tensorflow_serving.config import file_system_storage_path_source_pb2

log = logging.getLogger("helpers.server")

_SourceConfig = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig
VersionPolicy = _SourceConfig.ServableVersionPolicy
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
#: How long a new version folder must stay unchanged before it is aspired.
SETTLE_SECONDS = 0.1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ASCII_SPACE = " \t\n\v\f\r"
_ASCII_DIGITS = frozenset("0123456789")

#: callback(model name, {version: folder}) with the versions the model should serve.
AspiredVersionsCallback = Callable[[str, dict[int, Path]], None]


def parse_version(name: str) -> int | None:
    """A child folder's version number as absl::SimpleAtoi(int64) reads it, or None."""
    text = name.strip(_ASCII_SPACE)
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not set(digits) <= _ASCII_DIGITS:
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


@dataclass(frozen=True)
class ServableToMonitor:
    """One model: its name, its base path and its version policy (from the ModelConfig)."""

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)


@dataclass(frozen=True)
class PollResult:
    """What one look at a base path found: the aspired versions, or why it could not look."""

    base_path: str
    aspired: dict[int, Path]
    error: str | None = None


class FileSystemStoragePathSource:
    """Polls base paths and reports each model's aspired versions to a callback."""

    def __init__(self, callback: AspiredVersionsCallback, poll_wait_seconds: float = 1.0) -> None:
        self._callback = callback
        self._poll_wait_seconds = poll_wait_seconds
        self._servables: dict[str, ServableToMonitor] = {}
        #: Versions already seen complete and settled, per model (never re-checked).
        self._settled: dict[str, set[int]] = {}
        self._warned: dict[str, str] = {}
        #: Children of a base path already reported as unreadable, per model (warned once).
        self._unreadable: dict[str, set[str]] = {}
        self._lock = threading.Lock()  # one poll at a time
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ configuration
    def update_config(self, servables: Iterable[ServableToMonitor]) -> dict[str, PollResult]:
        """Monitor exactly `servables`; polls the new or changed ones now and returns what it found.

        Models no longer listed get an empty aspired list (TF Serving's UnaspireServables).
        """
        with self._lock:
            new = {s.name: s for s in servables}
            old, self._servables = self._servables, new
            for name in old.keys() - new.keys():
                self._settled.pop(name, None)
                self._warned.pop(name, None)
                self._unreadable.pop(name, None)
                self._callback(name, {})
            changed = [s for s in new.values() if old.get(s.name) != s]
            return {s.name: self._poll_one(s) for s in changed}

    def start(self) -> None:
        """Start polling every `poll_wait_seconds` (TF Serving: 0 polls once, < 0 never)."""
        if self._poll_wait_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(
                target=self._poll_forever, name="file-system-poll", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ polling
    def poll(self) -> dict[str, PollResult]:
        """Look at every base path once and report the aspired versions."""
        with self._lock:
            return {s.name: self._poll_one(s) for s in list(self._servables.values())}

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_wait_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the poll thread must survive anything
                log.exception("File system poll failed")

    def _poll_one(self, servable: ServableToMonitor) -> PollResult:
        """Poll one model (holds the lock) and call back unless its base path was unreadable."""
        unreadable: dict[str, str] = {}
        try:
            children = list_version_folders(servable, unreadable)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                message = (
                    f"Could not find base path {servable.base_path} for servable "
                    f"{servable.name} with error NOT_FOUND: {exc.strerror}"
                )
            else:
                message = (
                    f"Could not list base path {servable.base_path} for servable "
                    f"{servable.name}: {exc.strerror or exc}"
                )
            self._warn_once(
                servable.name,
                f"FileSystemStoragePathSource encountered a filesystem access error: {message}",
            )
            return PollResult(servable.base_path, {}, message)
        self._warn_unreadable(servable, unreadable)
        complete = self._complete_versions(servable, children)
        aspired = self._settle(servable, complete)
        if not children:
            self._warn_once(
                servable.name,
                f"No versions of servable {servable.name} found under base path "
                f"{servable.base_path}. Did you forget to name your leaf directory as a number "
                "(eg. '/1/')?",
            )
        elif not aspired:
            self._warn_once(
                servable.name,
                f"The version folders of servable {servable.name} under base path "
                f"{servable.base_path} hold no complete SavedModel yet (no saved_model.pb, or "
                "still being written)",
            )
        else:
            self._warned.pop(servable.name, None)
        self._callback(servable.name, aspired)
        return PollResult(servable.base_path, aspired)

    def _warn_unreadable(self, servable: ServableToMonitor, unreadable: dict[str, str]) -> None:
        """One warning for each child that cannot be looked at, while it stays that way."""
        known = self._unreadable.setdefault(servable.name, set())
        for path, reason in sorted(unreadable.items()):
            if path not in known:
                log.warning(
                    "Ignoring %s in the base path of servable %s: %s (the other versions "
                    "are still served and new ones still found)",
                    path,
                    servable.name,
                    reason,
                )
        known.intersection_update(unreadable)
        known.update(unreadable)

    def _warn_once(self, name: str, message: str) -> None:
        """Log a problem once per episode, not once per poll."""
        if self._warned.get(name) != message:
            self._warned[name] = message
            log.warning("%s", message)

    def _complete_versions(
        self, servable: ServableToMonitor, children: dict[int, Path]
    ) -> dict[int, Path]:
        """Versions that hold a SavedModel (or were already accepted once)."""
        settled = self._settled.setdefault(servable.name, set())
        settled &= set(children)  # a deleted folder is forgotten
        return {
            v: p
            for v, p in children.items()
            if v in settled or any((p / f).is_file() for f in SAVED_MODEL_FILES)
        }

    def _settle(self, servable: ServableToMonitor, candidates: dict[int, Path]) -> dict[int, Path]:
        """The aspired versions, leaving out new folders whose files are still changing.

        Only the versions the policy would pick next are checked; when one is still being
        written the policy falls back to the complete ones, as if it were not there yet.
        """
        settled = self._settled.setdefault(servable.name, set())
        candidates = dict(candidates)
        while True:
            aspired = apply_policy(servable, candidates)
            new = sorted(v for v in aspired if v not in settled)
            if not new:
                return aspired
            before = {v: _fingerprint(candidates[v]) for v in new}
            time.sleep(SETTLE_SECONDS)
            changing = [v for v in new if _fingerprint(candidates[v]) != before[v]]
            settled.update(v for v in new if v not in changing)
            for version in changing:
                log.info(
                    "Version %d of servable %s is still being written; waiting",
                    version,
                    servable.name,
                )
                del candidates[version]


def list_version_folders(
    servable: ServableToMonitor, unreadable: dict[str, str] | None = None
) -> dict[int, Path]:
    """The base path's children whose names are versions (OSError if it cannot be listed).

    A version-named child that cannot be looked at (a looping symlink: ELOOP) is left out;
    its path and the reason go into `unreadable` when given.
    """
    base = Path(servable.base_path)
    if not base.is_dir():
        if not base.exists():
            raise FileNotFoundError(2, "No such file or directory", str(base))
        raise NotADirectoryError(20, "Not a directory", str(base))
    found: dict[int, Path] = {}
    with os.scandir(base) as entries:
        for entry in entries:
            version = parse_version(entry.name)
            if version is None:
                continue
            try:
                is_folder = entry.is_dir()
            except OSError as exc:
                if unreadable is not None:
                    unreadable[entry.path] = exc.strerror or str(exc)
                continue
            if not is_folder:
                continue
            if version in found:
                names = (found[version].name, entry.name)
                keep, drop = sorted(names, key=lambda n: n != str(version))
                log.warning(
                    "Duplicate version directories detected. Version %d will be loaded from %s, "
                    "%s will be ignored.",
                    version,
                    keep,
                    drop,
                )
                found[version] = base / keep
            else:
                found[version] = Path(entry.path)
    return found


def apply_policy(servable: ServableToMonitor, versions: dict[int, Path]) -> dict[int, Path]:
    """The versions a ServableVersionPolicy picks among those found (latest 1 by default)."""
    choice = servable.policy.WhichOneof("policy_choice")
    if choice == "all":
        return dict(versions)
    if choice == "specific":
        wanted = list(servable.policy.specific.versions)
        if not wanted:
            log.warning("No specific versions requested for servable %s.", servable.name)
        return {v: versions[v] for v in wanted if v in versions}
    count = max(servable.policy.latest.num_versions, 1) if choice == "latest" else 1
    return {v: versions[v] for v in sorted(versions)[-count:]}


def _fingerprint(path: Path) -> tuple:
    """Names, sizes and modification times of every file under a version folder."""
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))
