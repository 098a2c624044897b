"""Which model versions are loaded, and the rules TF Serving uses to decide it.

`ModelManager` plays the parts of TF Serving's ServerCore, FileSystemStoragePathSource,
AspiredVersionsManager (with the availability-preserving policy) and ServableStateMonitor:

- each model's base path is polled for numeric version folders; the version policy
  (`latest {num_versions}`, `all {}`, `specific {versions}`) picks the aspired ones;
- a new version is loaded (and warmed) before the old one is unloaded, so there is always a
  version serving; a version that fails to load is retried, then marked END with its error while
  the previous one keeps serving;
- a folder that has no `saved_model.pb` yet, or whose files are still changing, is not loaded;
- version labels map to versions and, unless allowed, may only point at AVAILABLE versions;
- lookups and statuses fail with TF Serving's own codes and messages.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from helpers.server.config_files import single_model_config  # noqa: F401 - re-exported
from helpers.server.errors import (
    ServingError,
    failed_precondition,
    first_line,
    invalid_argument,
    not_found,
)
from helpers.server.servable import Servable

log = logging.getLogger("helpers.server")

State = get_model_status_pb2.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = (
    State.START,
    State.LOADING,
    State.AVAILABLE,
    State.UNLOADING,
    State.END,
)
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
#: How long a new version folder must stay unchanged before it is loaded.
SETTLE_SECONDS = 0.1


@dataclass
class ManagerOptions:
    """The flags that shape loading (names as TF Serving's command line)."""

    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    enable_model_warmup: bool = True
    enable_signature_method_name_check: bool = False
    #: Called with the loaded Servable before it takes traffic (batching hooks in here).
    on_load: Callable[[Servable], None] | None = None


@dataclass
class VersionState:
    """What GetModelStatus reports for one version."""

    state: int
    error_code: int = 0
    error_message: str = ""


@dataclass
class _Model:
    name: str
    base_path: str
    policy: model_server_config_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
    versions: dict[int, VersionState] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    warned_empty: bool = False
    warned_missing: bool = False


def servable_id(name: str, version: int) -> str:
    """TF Serving's ServableId::DebugString(), used in its log lines."""
    return f"{{name: {name} version: {version}}}"


def _error_code_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, ServingError):
        return exc.code
    if isinstance(exc, FileNotFoundError | NotADirectoryError) or (
        isinstance(exc, OSError) and "does not exist" in str(exc)
    ):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, DecodeError):
        return grpc.StatusCode.DATA_LOSS
    code = getattr(exc, "error_code", None)
    if isinstance(code, int):
        from helpers.server.errors import code_from_number

        return code_from_number(code)
    return grpc.StatusCode.UNKNOWN


def _record_load(path: str, ok: bool, seconds: float) -> None:
    """Count a SavedModel load attempt in the Prometheus metrics, as TensorFlow does."""
    try:
        from helpers.server import metrics

        metrics.record_model_load(path, ok, seconds)
    except Exception:  # noqa: BLE001 - metrics are optional and must never break a load
        pass


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


class ModelManager:
    """Loads, serves and unloads model versions as TF Serving's ServerCore does."""

    def __init__(
        self,
        options: ManagerOptions | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.options = options or ManagerOptions()
        self._on_change = on_change
        self._config = model_server_config_pb2.ModelServerConfig()
        self._models: dict[str, _Model] = {}
        #: States of every version ever seen, as TF Serving's monitor keeps them (name -> v -> s).
        self._states: dict[str, dict[int, VersionState]] = {}
        #: Loaded versions, replaced (never mutated) so lookups need no lock.
        self._available: dict[str, dict[int, Servable]] = {}
        self._labels: dict[str, dict[str, int]] | None = None
        self._lock = threading.RLock()  # guards _states/_models/_labels updates
        self._work = threading.Lock()  # one poll or reload at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------ lifecycle
    def start(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Apply the first config (loading its models now) and start polling the file system."""
        self.reload_config(config, first=True)
        if self.options.file_system_poll_wait_seconds > 0:
            self._thread = threading.Thread(
                target=self._poll_forever, name="file-system-poll", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop polling and unload everything (server shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for name in list(self._available):
                for version in sorted(self._available.get(name, {})):
                    self._unload(name, version)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.options.file_system_poll_wait_seconds):
            try:
                with self._work:
                    for model in list(self._models.values()):
                        self._poll_model(model)
            except Exception:  # noqa: BLE001 - the poll thread must survive anything
                log.exception("File system poll failed")

    # ------------------------------------------------------------------------ config
    def reload_config(
        self, config: model_server_config_pb2.ModelServerConfig, *, first: bool = False
    ) -> None:
        """Replace the model list: new models load, left-out ones unload (ServerCore::ReloadConfig).

        Raises ServingError with TF Serving's code and message when the config is refused or a
        new model does not become available.
        """
        kind = config.WhichOneof("config")
        if kind is None:
            log.info("Taking no action for empty config.")
            return
        if kind != "model_config_list":
            raise invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        configs = list(config.model_config_list.config)
        _validate_config_list(configs)
        with self._work:
            new_labels = self._checked_labels(configs)
            with self._lock:
                self._config = config
                self._labels = new_labels
                old = self._models
                self._models = {}
                new_names = set()
                for mc in configs:
                    log.info(" (Re-)adding model: %s", mc.name)
                    model = old.get(mc.name)
                    if model is None:
                        new_names.add(mc.name)
                        model = _Model(mc.name, mc.base_path, mc.model_version_policy)
                    else:
                        model.base_path = mc.base_path
                        model.policy = mc.model_version_policy
                    self._models[mc.name] = model
                removed = [name for name in old if name not in self._models]
            for name in removed:
                for version in sorted(self._available.get(name, {})):
                    self._unload(name, version)
            for model in list(self._models.values()):
                self._poll_model(model)
            if not first:
                self._check_available(new_names)
        log.info("Finished reloading config")

    def _checked_labels(
        self, configs: list[model_server_config_pb2.ModelConfig]
    ) -> dict[str, dict[str, int]]:
        """Labels of the new config; each must name an AVAILABLE version unless allowed."""
        labels: dict[str, dict[str, int]] = {}
        for mc in configs:
            states = self._states.get(mc.name, {})
            for label, version in mc.version_labels.items():
                allow = False
                if self.options.allow_version_labels_for_unavailable_models:
                    existing = (self._labels or {}).get(mc.name, {}).get(label)
                    allow = existing is None or existing == version
                state = states.get(version)
                if not allow and (state is None or state.state != AVAILABLE):
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model {mc.name}, "
                        "which is not currently available for inference"
                    )
                labels.setdefault(mc.name, {})[label] = version
        return labels

    def _check_available(self, names: set[str]) -> None:
        """After a reload, every newly added model must have a version AVAILABLE."""
        missing = []
        for name in sorted(names):
            if self._available.get(name):
                continue
            states = self._states.get(name, {})
            if states:
                version = max(states)
                st = states[version]
                reason = ""
                if st.error_code:
                    code = grpc.StatusCode(_code_tuple(st.error_code)).name
                    reason = f" due to error: {code}: {st.error_message}"
                missing.append(f"{{{servable_id(name, version)}{reason}}}, ")
            else:
                model = self._models[name]
                missing.append(
                    f"{{{{name: {name}}} due to error: NOT_FOUND: no version found under base "
                    f"path {model.base_path}}}, "
                )
        if missing:
            raise ServingError(
                grpc.StatusCode.UNKNOWN,
                f"{len(missing)} model(s) did not become available: {{{''.join(missing)}}}",
            )

    # ------------------------------------------------------------------------ polling
    def _aspired(self, model: _Model, ready: dict[int, Path]) -> set[int]:
        choice = model.policy.WhichOneof("policy_choice")
        if choice == "all":
            return set(ready)
        if choice == "specific":
            return {v for v in model.policy.specific.versions if v in ready}
        count = model.policy.latest.num_versions if choice == "latest" else 0
        return set(sorted(ready)[-max(count, 1) :])

    def _scan(self, model: _Model) -> dict[int, Path] | None:
        """Numeric version folders that are complete and not changing; None if unreadable."""
        base = Path(model.base_path)
        try:
            children = list(base.iterdir())
        except OSError as exc:
            if not model.warned_missing:
                log.warning(
                    "File system source: could not read base path %s for servable %s: %s",
                    base,
                    model.name,
                    exc.strerror or exc,
                )
                model.warned_missing = True
            return None
        model.warned_missing = False
        found = {int(p.name): p for p in children if p.name.isdigit() and p.is_dir()}
        if not found:
            if not model.warned_empty:
                log.warning(
                    "No versions of servable %s found under base path %s. Did you forget to "
                    "name your leaf directory as a number (eg. '/1/')?",
                    model.name,
                    base,
                )
                model.warned_empty = True
            return {}
        model.warned_empty = False
        loaded = self._available.get(model.name, {})
        known = set(loaded) | model.failed
        candidates = {
            v: p
            for v, p in found.items()
            if v in known or any((p / f).is_file() for f in SAVED_MODEL_FILES)
        }
        # Only versions the policy would load next are checked for stability: a folder still
        # being copied changes between two looks and is left for a later poll, and the policy
        # then falls back to the versions that are complete.
        while True:
            new = sorted(v for v in self._aspired(model, candidates) if v not in known)
            if not new:
                return candidates
            before = {v: _fingerprint(candidates[v]) for v in new}
            time.sleep(SETTLE_SECONDS)
            changing = [v for v in new if _fingerprint(candidates[v]) != before[v]]
            if not changing:
                return candidates
            for version in changing:
                log.info(
                    "Version %d of servable %s is still being written; waiting",
                    version,
                    model.name,
                )
                del candidates[version]

    def _poll_model(self, model: _Model) -> None:
        ready = self._scan(model)
        if ready is None:
            return
        aspired = self._aspired(model, ready)
        for version in sorted(aspired, reverse=True):
            if version not in self._available.get(model.name, {}) and version not in model.failed:
                if self._stop.is_set():
                    return
                self._load(model, version, ready[version])
        loaded = self._available.get(model.name, {})
        aspired_available = any(v in loaded for v in aspired)
        for version in sorted(loaded):
            if version not in aspired and (aspired_available or not aspired):
                self._unload(model.name, version)

    # ------------------------------------------------------------------------ load / unload
    def _set_state(self, name: str, version: int, state: VersionState) -> None:
        with self._lock:
            self._states.setdefault(name, {})[version] = state

    def _load(self, model: _Model, version: int, path: Path) -> None:
        name = model.name
        sid = servable_id(name, version)
        self._set_state(name, version, VersionState(LOADING))
        log.info("Loading servable version %s from %s", sid, path)
        retries = max(0, self.options.max_num_load_retries)
        error: BaseException | None = None
        servable: Servable | None = None
        for attempt in range(retries + 1):
            started = time.monotonic()
            try:
                servable = Servable(
                    name,
                    version,
                    str(path),
                    method_check=self.options.enable_signature_method_name_check,
                )
                if self.options.enable_model_warmup:
                    servable.warm_up()
                if self.options.on_load is not None:
                    self.options.on_load(servable)
                log.info(
                    "Successfully loaded servable version %s in %.2f s",
                    sid,
                    time.monotonic() - started,
                )
                _record_load(str(path), True, time.monotonic() - started)
                break
            except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
                _record_load(str(path), False, time.monotonic() - started)
                servable, error = None, exc
                log.error("Loading servable: %s failed: %s", sid, first_line(str(exc)))
                if attempt < retries:
                    log.info(
                        "Retrying load of %s (%d of %d) in %.1f s",
                        sid,
                        attempt + 1,
                        retries,
                        self.options.load_retry_interval_micros / 1e6,
                    )
                    if self._stop.wait(self.options.load_retry_interval_micros / 1e6):
                        break
        if servable is None:
            model.failed.add(version)
            code = _error_code_of(error) if error is not None else grpc.StatusCode.CANCELLED
            message = first_line(str(error)) if error is not None else "server shutting down"
            self._set_state(name, version, VersionState(END, code.value[0], message))
            return
        with self._lock:
            available = dict(self._available)
            available[name] = {**available.get(name, {}), version: servable}
            self._available = available
            self._states.setdefault(name, {})[version] = VersionState(AVAILABLE)
        self._notify()

    def _unload(self, name: str, version: int) -> None:
        sid = servable_id(name, version)
        log.info("Unloading servable version %s", sid)
        self._set_state(name, version, VersionState(UNLOADING))
        with self._lock:
            available = dict(self._available)
            versions = dict(available.get(name, {}))
            versions.pop(version, None)
            if versions:
                available[name] = versions
            else:
                available.pop(name, None)
            self._available = available
            self._states.setdefault(name, {})[version] = VersionState(END)
        # Calls in flight still hold the Servable; its session closes when the last one ends.
        log.info("Done unloading servable version %s", sid)
        self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change(self.any_available())

    # ------------------------------------------------------------------------ lookups
    def any_available(self) -> bool:
        """True while at least one version of some model can serve (health: SERVING)."""
        return any(self._available.values())

    def model_names(self) -> list[str]:
        """Names of the configured models."""
        return sorted(self._models)

    def version_for_label(self, name: str, label: str) -> int:
        """The version a label points at, or TF Serving's error for an unknown label."""
        labels = self._labels
        if labels is None:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE, f"Model labels does not init yet.{label}"
            )
        version = labels.get(name, {}).get(label)
        if version is None:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        return version

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request asks for (ServerCore::GetServableHandle)."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        if label is not None:
            version = self.version_for_label(name, label)
        versions = self._available.get(name, {})
        if version is None:
            if versions:
                return versions[max(versions)]
            raise not_found(f"Servable not found for request: Latest({name})")
        servable = versions.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def servable_for_spec(self, spec: model_pb2.ModelSpec) -> Servable:
        """`servable()` from a request's ModelSpec (version or label oneof)."""
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return self.servable(spec.name, version=spec.version.value)
        if choice == "version_label":
            return self.servable(spec.name, label=spec.version_label)
        return self.servable(spec.name)

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every version's state (newest first), or one version's."""
        if label is not None:
            version = self.version_for_label(name, label)
        with self._lock:
            states = dict(self._states.get(name, {}))
        response = get_model_status_pb2.GetModelStatusResponse()
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            chosen = {version: states[version]}
        else:
            if not states:
                raise not_found(f"Could not find any versions of model {name}")
            chosen = states
        for v in sorted(chosen, reverse=True):
            st = chosen[v]
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = st.state
            entry.status.error_code = st.error_code
            entry.status.error_message = st.error_message
        return response


def _code_tuple(number: int) -> tuple:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


def _validate_config_list(configs: list[model_server_config_pb2.ModelConfig]) -> None:
    """The checks ServerCore makes before accepting a ModelConfigList."""
    names: set[str] = set()
    for mc in configs:
        if mc.name in names:
            raise invalid_argument(f"Illegal to list model {mc.name} multiple times in config list")
        names.add(mc.name)
    for mc in configs:
        if "://" not in mc.base_path and not os.path.isabs(mc.base_path):
            raise invalid_argument(
                f"Expected model {mc.name} to have an absolute path or URI; "
                f"got base_path()={mc.base_path}"
            )
    for mc in configs:
        platform = mc.model_platform
        if mc.model_type and not platform:
            platform = "tensorflow" if mc.model_type == 1 else "other"
        if not platform:
            raise invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                "ModelServerConfig::model_platform."
            )
        if platform != "tensorflow":
            raise invalid_argument(f"Model {mc.name} requests unsupported platform {platform}")
