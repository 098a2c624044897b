"""`python -m helpers.server`: start the embedded model server from TF Serving's flags.

Order of start-up: flags and configuration files are checked first (a typo fails in a second,
with one line, before TensorFlow is imported); then the ports are bound (a port in use is
refused, never shared); then the models load; then the server runs until SIGTERM/SIGINT (or the
--parent_pid process ends), when it stops taking calls, finishes the ones in flight and exits 0.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Any

from helpers.server.config_files import (
    ConfigError,
    read_batching_parameters,
    read_model_server_config,
    read_monitoring_config,
    read_ssl_config,
    single_model_config,
)
from helpers.server.flags import (
    FlagError,
    Flags,
    channel_arguments,
    check_flags,
    parse_flags,
    usage,
)

log = logging.getLogger("helpers.server")

#: TF Serving raises gRPC's message limits to the largest int32 (server.cc SetMaxMessageSize).
MAX_MESSAGE_BYTES = 2**31 - 1
#: Seconds a stopping server gives calls in flight to finish.
STOP_GRACE_SECONDS = 5.0
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class StartupError(RuntimeError):
    """The server cannot start; the message is the one line printed before exiting."""


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(levelname).1s server] %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger("helpers.server")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _read_configs(flags: Flags) -> dict[str, Any]:
    """Every configuration file, parsed before anything heavy starts."""
    configs: dict[str, Any] = {"batching": None, "ssl": None, "monitoring": None}
    if flags.model_config_file:
        configs["models"] = read_model_server_config(flags.model_config_file)
    else:
        log.info(
            "Building single TensorFlow model file config:  model_name: %s model_base_path: %s",
            flags.model_name,
            flags.model_base_path,
        )
        configs["models"] = single_model_config(flags.model_name, flags.model_base_path)
    if flags.batching_parameters_file:
        configs["batching"] = read_batching_parameters(flags.batching_parameters_file)
    if flags.ssl_config_file:
        configs["ssl"] = read_ssl_config(flags.ssl_config_file)
    if flags.monitoring_config_file:
        configs["monitoring"] = read_monitoring_config(flags.monitoring_config_file)
    return configs


class ModelServer:
    """The running server: gRPC (+ health, reflection), optional REST, the model manager."""

    def __init__(self, flags: Flags, configs: dict[str, Any]) -> None:
        self.flags = flags
        self.configs = configs
        self.stopping = threading.Event()
        self.grpc_server: Any = None
        self.rest_handle: Any = None
        self.health: Any = None
        self.batcher: Any = None
        self.manager: Any = None

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Bind the ports (fast failure), then load TensorFlow, the services and the models."""
        import grpc

        from helpers.server.tls import TLSConfigError, server_credentials

        flags = self.flags
        if flags.parent_pid:  # watch from the start: a parent can die while models load
            threading.Thread(target=self._watch_parent, name="parent-watch", daemon=True).start()
        try:
            extra = channel_arguments(flags.grpc_channel_arguments)
        except FlagError as exc:
            raise StartupError(str(exc)) from None
        batch_size = 0
        if flags.enable_batching:
            params = self.configs["batching"]
            has_size = params is not None and params.HasField("max_batch_size")
            batch_size = params.max_batch_size.value if has_size else 1000
        workers = max(32, min(256, 2 * batch_size))
        defaults = [
            ("grpc.so_reuseport", 0),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        overridden = {key for key, _ in extra}  # --grpc_channel_arguments win, as in TF Serving
        options = [(k, v) for k, v in defaults if k not in overridden] + extra
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
        address = f"{flags.host}:{flags.port}"
        try:
            if self.configs["ssl"] is not None:
                bound = server.add_secure_port(address, server_credentials(self.configs["ssl"]))
            else:
                bound = server.add_insecure_port(address)
        except TLSConfigError as exc:
            raise StartupError(f"Invalid SSL config: {exc}") from None
        except RuntimeError:
            bound = 0
        if not bound:
            raise StartupError(
                f"could not bind the gRPC port {address}: it is in use by another process "
                "(stop that server or choose another --port)"
            )
        self.grpc_server = server

        # Only now the heavy imports (TensorFlow): a taken port was refused in well under a second.
        from grpc_reflection.v1alpha import reflection

        from helpers.server.batching import Batcher, BatchingOptions
        from helpers.server.errors import ServingError
        from helpers.server.grpc_service import add_services
        from helpers.server.models import ManagerOptions, ModelManager

        if flags.enable_batching:
            try:
                batching = BatchingOptions.from_proto(self.configs["batching"], os.cpu_count() or 2)
            except ValueError as exc:
                raise StartupError(f"Invalid batching parameters: {exc}") from None
            self.batcher = Batcher(batching)
            log.info("Batching enabled: %s", batching)
        manager_options = ManagerOptions(
            file_system_poll_wait_seconds=flags.file_system_poll_wait_seconds,
            max_num_load_retries=flags.max_num_load_retries,
            load_retry_interval_micros=flags.load_retry_interval_micros,
            allow_version_labels_for_unavailable_models=(
                flags.allow_version_labels_for_unavailable_models
            ),
            enable_model_warmup=flags.enable_model_warmup,
            enable_signature_method_name_check=flags.enable_signature_method_name_check,
            on_load=self._attach_batcher if self.batcher is not None else None,
        )
        self.manager = ModelManager(manager_options, on_change=self._on_availability)
        names = add_services(server, self.manager)
        if flags.enable_grpc_healthcheck_service:
            from grpc_health.v1 import health as health_module

            from helpers.server.health import HealthReporter

            self.health = HealthReporter(server)
            names.append(health_module.SERVICE_NAME)
        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        server.start()
        self._start_rest()

        try:
            self.manager.start(self.configs["models"])
        except ServingError as exc:
            raise StartupError(f"{exc.code.name}: {exc.message}") from None
        # TensorFlow and the loaded models leave a few hundred thousand Python objects behind.
        # Python's garbage collector would walk all of them again and again while a large JSON
        # request builds its lists (a 256-image REST body took several times longer to parse);
        # frozen, they are left out of every later collection.
        gc.freeze()
        tls = " (TLS)" if self.configs["ssl"] is not None else ""
        log.info("Running gRPC ModelServer at %s%s ...", address, tls)
        if self.rest_handle is not None:
            log.info("Exporting HTTP/REST API at:%s:%d ...", flags.host, flags.rest_api_port)
        if flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
            threading.Thread(target=self._poll_config_file, name="config-poll", daemon=True).start()

    def _start_rest(self) -> None:
        flags = self.flags
        if not flags.rest_api_port:
            return
        monitoring_path = None
        monitoring = self.configs["monitoring"]
        if monitoring is not None and monitoring.prometheus_config.enable:
            monitoring_path = monitoring.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
        try:
            from helpers.server import rest
        except ImportError as exc:
            raise StartupError(f"the REST API is not available: {exc}") from None
        try:
            self.rest_handle = rest.start_rest_server(
                self.manager,
                flags.host,
                flags.rest_api_port,
                timeout_ms=flags.rest_api_timeout_in_ms,
                monitoring_path=monitoring_path,
            )
        except OSError as exc:
            raise StartupError(
                f"could not bind the REST port {flags.host}:{flags.rest_api_port}: "
                f"{exc.strerror or exc} (choose another --rest_api_port, or 0 to disable REST)"
            ) from None

    def _attach_batcher(self, servable: Any) -> None:
        servable.batcher = self.batcher

    def _on_availability(self, available: bool) -> None:
        if self.health is not None:
            self.health.set_serving(available)

    def _poll_config_file(self) -> None:
        path = self.flags.model_config_file
        last = _read_bytes(path)
        while not self.stopping.wait(self.flags.model_config_file_poll_wait_seconds):
            current = _read_bytes(path)
            if current is None or current == last:
                continue
            last = current
            try:
                log.info("Model config file %s changed: reloading", path)
                self.manager.reload_config(read_model_server_config(path))
            except Exception as exc:  # noqa: BLE001 - keep serving the old config
                log.error("ReloadConfig failed: %s", exc)

    def _watch_parent(self) -> None:
        pid = self.flags.parent_pid
        while not self.stopping.wait(1.0):
            if not _process_alive(pid):
                log.info("Parent process %d ended: stopping", pid)
                self.stopping.set()
                return

    # ------------------------------------------------------------------ stop
    def stop(self, *, quiet: bool = False) -> None:
        """Refuse new calls, let calls in flight finish (up to the grace period), unload.

        `quiet` (a failed start-up) keeps the log's last line the reason for the failure.
        """
        if quiet:
            log.setLevel(logging.ERROR)
        log.info("Stopping: finishing calls in flight")
        if self.health is not None:
            self.health.shutdown()
        if self.grpc_server is not None:
            self.grpc_server.stop(STOP_GRACE_SECONDS).wait()
        if self.rest_handle is not None:
            try:
                self.rest_handle.stop()
            except Exception:  # noqa: BLE001 - we are exiting anyway
                log.exception("Stopping the REST server failed")
        if self.manager is not None:
            self.manager.close()
        if self.batcher is not None:
            self.batcher.close()
        log.info("Server stopped")


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _process_alive(pid: int) -> bool:
    if os.name == "posix":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by someone else
            return True
        try:  # Linux: an exited parent not yet reaped is a zombie, not alive
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
                return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
        except OSError:
            return True
    import ctypes  # Windows: ask for a handle and its exit code

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)
    if not handle:
        return False
    code = ctypes.c_ulong()
    kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
    kernel32.CloseHandle(handle)
    return code.value == 259  # STILL_ACTIVE


def main(argv: list[str] | None = None) -> int:
    """Run the server; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("--help", "-h", "--helpfull") for a in argv):
        print(usage())
        return 0
    try:
        flags = parse_flags(argv)
        check_flags(flags)
    except FlagError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if flags.version:
        print("TensorFlow ModelServer: helpers.server (TF Serving compatible embedded server)")
        return 0
    _setup_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        configs = _read_configs(flags)
    except ConfigError as exc:
        log.error("Failed to start server. Error: %s", exc)
        return 1

    server = ModelServer(flags, configs)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stopping.set())
    started = time.monotonic()
    try:
        server.start()
    except StartupError as exc:
        server.stop(quiet=True)
        log.error("Failed to start server. Error: %s", exc)
        return 1
    log.info("Server ready in %.1f s", time.monotonic() - started)
    while not server.stopping.wait(0.5):
        pass
    server.stop()
    return 0
