"""The model side of the server: TF Serving's ServerCore, over the parts it is made of.

`ServerCore` is what the gRPC and REST front ends talk to (through `calls`). Like TF Serving's
ServerCore (model_servers/server_core.cc) it delegates to the components TF Serving has:

- `storage_path_source.FileSystemStoragePathSource` lists each base path and applies the
  version policy (which versions *should* serve);
- `aspired_versions.AspiredVersionsManager` loads and unloads versions towards that, with the
  availability-preserving policy and load retries (which versions *do* serve);
- `state_monitor.ServableStateMonitor` records every version's state (GetModelStatus) and
  lets start-up and config reloads wait for models.

What ServerCore itself does is here: validating a ModelConfigList, version labels (which must
name an AVAILABLE version unless --allow_version_labels_for_unavailable_models), waiting at
start-up until every model has loaded (or failed: then the server does not start, as
load_servables_fast.cc decides), waiting in a reload for the models it adds, and lookups with
TF Serving's codes and messages. Serving never waits for loading: lookups read a snapshot.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from helpers.server.aspired_versions import AspiredVersionsManager, RetryOptions
from helpers.server.config_files import single_model_config  # noqa: F401 - re-exported
from helpers.server.errors import (
    ServingError,
    failed_precondition,
    invalid_argument,
    not_found,
)
from helpers.server.servable import Servable
from helpers.server.state_monitor import (
    AVAILABLE,
    ServableStateMonitor,
    Stopped,
    VersionState,
    servable_id,
)
from helpers.server.storage_path_source import (
    FileSystemStoragePathSource,
    PollResult,
    ServableToMonitor,
)

log = logging.getLogger("helpers.server")

__all__ = ["ManagerOptions", "ServerCore", "Stopped", "VersionState", "servable_id"]


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


def _record_load(path: str, ok: bool, seconds: float) -> None:
    """Count a SavedModel load attempt in the Prometheus metrics, as TensorFlow does."""
    try:
        from helpers.server import metrics

        metrics.record_model_load(path, ok, seconds)
    except Exception:  # noqa: BLE001 - metrics are optional and must never break a load
        pass


class ServerCore:
    """ServerCore: configs, labels, waits and lookups over the source, manager and monitor."""

    def __init__(
        self,
        options: ManagerOptions | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.options = options or ManagerOptions()
        self._on_change = on_change
        self._monitor = ServableStateMonitor()
        self._manager = AspiredVersionsManager(
            self._load_servable,
            self._monitor,
            RetryOptions(
                max_num_load_retries=self.options.max_num_load_retries,
                load_retry_interval_micros=self.options.load_retry_interval_micros,
            ),
            on_change=self._notify,
        )
        self._source = FileSystemStoragePathSource(
            self._manager.set_aspired_versions, self.options.file_system_poll_wait_seconds
        )
        self._models: dict[str, model_server_config_pb2.ModelConfig] = {}
        self._labels: dict[str, dict[str, int]] | None = None
        self._config_lock = threading.Lock()  # one config change at a time (config_mu_)
        self._stop = threading.Event()

    # ------------------------------------------------------------------------ lifecycle
    def start(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Apply the first config and wait until every model has a version AVAILABLE.

        As TF Serving's start-up: a model whose base path holds no version yet is waited for;
        a model whose version failed to load fails the start with TF Serving's message
        (UNKNOWN "N servable(s) did not become available: ..."). Raises Stopped if `stop()` is
        called meanwhile.
        """
        mark = self._monitor.current_sequence()
        names, _polls = self._apply(config)
        self._source.start()
        failures = self._monitor.wait_until_done(names, since=mark, stop=self._stop)
        if failures:
            raise _did_not_become_available(failures, "servable(s)")

    def stop(self) -> None:
        """Abandon loading: waits end, retries stop, no new load starts (a prompt exit)."""
        self._stop.set()
        self._source.stop()
        self._manager.stop()
        self._monitor.wake()

    def close(self) -> None:
        """Stop polling and unload everything (server shutdown)."""
        self.stop()
        self._manager.unload_all()

    def loading(self) -> bool:
        """True while some version is being loaded (or waits to retry)."""
        return self._manager.loading()

    # ------------------------------------------------------------------------ config
    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Replace the model list: new models load, left-out ones unload (ServerCore::ReloadConfig).

        Returns once the models this config adds are AVAILABLE. Raises ServingError with TF
        Serving's code and message when the config is refused or an added model does not become
        available. Loads of other models never hold it up.
        """
        mark = self._monitor.current_sequence()
        before = set(self._models)
        names, polls = self._apply(config)
        failures = self._monitor.wait_until_done(
            set(names) - before,
            since=mark,
            stop=self._stop,
            give_up=lambda name: _nothing_found(polls, name),
        )
        if failures:
            raise _did_not_become_available(failures, "model(s)")
        log.info("Finished reloading config")

    def _apply(
        self, config: model_server_config_pb2.ModelServerConfig
    ) -> tuple[list[str], dict[str, PollResult]]:
        """Check and apply a config (under the config lock).

        Returns the configured model names and what the first look at each new or changed
        base path found.
        """
        kind = config.WhichOneof("config")
        if kind is None:
            log.info("Taking no action for empty config.")
            return [], {}
        if kind != "model_config_list":
            raise invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        configs = list(config.model_config_list.config)
        _validate_config_list(configs)
        with self._config_lock:
            self._labels = self._checked_labels(configs)
            self._models = {mc.name: mc for mc in configs}
            servables = []
            for mc in configs:
                log.info(" (Re-)adding model: %s", mc.name)
                servables.append(ServableToMonitor(mc.name, mc.base_path, mc.model_version_policy))
            polls = self._source.update_config(servables)
        return [mc.name for mc in configs], polls

    def _checked_labels(
        self, configs: list[model_server_config_pb2.ModelConfig]
    ) -> dict[str, dict[str, int]]:
        """Labels of the new config; each must name an AVAILABLE version unless allowed."""
        labels: dict[str, dict[str, int]] = {}
        for mc in configs:
            states = self._monitor.versions(mc.name)
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

    # ------------------------------------------------------------------------ loading
    def _load_servable(self, name: str, version: int, path: Path) -> Servable:
        """The loader the manager calls: SavedModel -> Servable, warmed up, hooks attached."""
        started = time.monotonic()
        try:
            servable = Servable(
                name,
                version,
                str(path),
                method_check=self.options.enable_signature_method_name_check,
            )
            try:
                if self.options.enable_model_warmup:
                    servable.warm_up()
                if self.options.on_load is not None:
                    self.options.on_load(servable)
            except BaseException:
                servable.close()  # its session and memory go now, not at some later GC
                raise
        except BaseException:
            _record_load(str(path), False, time.monotonic() - started)
            raise
        _record_load(str(path), True, time.monotonic() - started)
        return servable

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change(self.any_available())

    # ------------------------------------------------------------------------ lookups
    def any_available(self) -> bool:
        """True while at least one version of some model can serve (health: SERVING)."""
        return any(self._manager.available().values())

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
        versions = self._manager.available().get(name, {})
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
        states = self._monitor.versions(name)
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
            entry.status.error_code = st.error_code.value[0]
            entry.status.error_message = st.error_message
        return response


def _nothing_found(polls: dict[str, PollResult], name: str) -> str | None:
    """Why a model added by a reload cannot become available now (no version on disk)."""
    poll = polls.get(name)
    if poll is None or poll.aspired:
        return None
    return poll.error or f"no version found under base path {poll.base_path}"


def _did_not_become_available(
    failures: dict[str, tuple[int, VersionState] | str], what: str
) -> ServingError:
    """TF Serving's message for models that did not load (server_core.cc, load_servables_fast)."""
    parts = []
    for name, failure in sorted(failures.items()):
        if isinstance(failure, str):
            parts.append(f"{{{{name: {name}}} due to error: NOT_FOUND: {failure}}}, ")
            continue
        version, state = failure
        reason = f" due to error: {state.health}" if state.error_code != grpc.StatusCode.OK else ""
        parts.append(f"{{{servable_id(name, version)}{reason}}}, ")
    return ServingError(
        grpc.StatusCode.UNKNOWN,
        f"{len(failures)} {what} did not become available: {{{''.join(parts)}}}",
    )


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
