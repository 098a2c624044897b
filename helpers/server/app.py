"""`python -m helpers.server`: start the embedded model server from TF Serving's flags.

Order of start-up: flags and configuration files are checked first (a typo fails in a second,
with one line, before TensorFlow is imported); then the ports are checked (a port in use is
refused, never shared); then the models load; only then are the ports opened, as TF Serving
opens them after its initial models have loaded (server.cc: ServerCore::Create runs before the
gRPC server is built), so a client that connects earlier is refused rather than answered
NOT_FOUND. The server runs until SIGTERM/SIGINT (or the --parent_pid process ends), when it
stops taking calls, finishes the ones in flight and exits 0.

A start-up that fails ends as `tensorflow_model_server`'s main() does: one line
`Failed to start server. Error: <CODE>: <message>` on stdout and exit status 255 (its -1);
a command line that cannot be read is a usage error (`error: ...` on stderr, status 2).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
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
    OptionsError,
    channel_arguments,
    check_flags,
    grpc_threads,
    parse_flags,
    usage,
)
from helpers.server.process import port_is_free, process_alive
from helpers.server.unix_socket import SocketPathError, check_socket_path, listen_on_unix_socket

log = logging.getLogger("helpers.server")

#: TF Serving raises gRPC's message limits to the largest int32 (server.cc SetMaxMessageSize).
MAX_MESSAGE_BYTES = 2**31 - 1
#: Seconds a stopping server gives calls in flight to finish.
STOP_GRACE_SECONDS = 5.0
#: How often --parent_pid is checked.
PARENT_CHECK_SECONDS = 0.25
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
#: What `tensorflow_model_server` returns when it cannot start (main() returns -1).
STARTUP_FAILURE_STATUS = 255


class StartupError(RuntimeError):
    """The server cannot start; the message is the one line printed before exiting."""


class StoppedDuringStartup(RuntimeError):
    """SIGTERM/SIGINT or the parent's death arrived before the models had loaded."""


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
        self.signal_sockets: tuple[socket.socket, socket.socket] | None = None

    def request_stop(self) -> None:
        """Stop now, whatever the state: serving, loading, or waiting to retry a failed load.

        Safe from any thread (signals reach it through _stop_on_signals' thread); the main
        thread does the stopping.
        """
        self.stopping.set()
        manager = self.manager
        if manager is not None:
            manager.stop()  # ends start-up's wait, load retries and new loads at once

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Check the ports (fast failure), load TensorFlow and the models, then open the ports."""
        import grpc

        from helpers.server.tls import TLSConfigError, server_credentials

        flags = self.flags
        if flags.parent_pid:  # watch from the start: a parent can die while models load
            threading.Thread(target=self._watch_parent, name="parent-watch", daemon=True).start()
        try:
            extra = channel_arguments(flags.grpc_channel_arguments)
        except FlagError as exc:
            raise StartupError(str(exc)) from None
        credentials = None
        if self.configs["ssl"] is not None:
            try:
                credentials = server_credentials(self.configs["ssl"])
            except TLSConfigError as exc:
                raise StartupError(f"INVALID_ARGUMENT: Invalid SSL config: {exc}") from None
        address = f"{flags.host}:{flags.port}"
        if flags.port and not port_is_free(flags.port, flags.host):  # 0: only the socket
            raise StartupError(_port_taken(address))
        if flags.grpc_socket_path:
            try:
                check_socket_path(flags.grpc_socket_path)
            except SocketPathError as exc:
                raise StartupError(f"INVALID_ARGUMENT: {exc}") from None
        if flags.rest_api_port and not port_is_free(flags.rest_api_port, flags.host):
            raise StartupError(
                f"could not bind the REST port {flags.host}:{flags.rest_api_port}: it is in use "
                "by another process (choose another --rest_api_port, or 0 to disable REST)"
            )
        batch_size = 0
        if flags.enable_batching:
            params = self.configs["batching"]
            has_size = params is not None and params.HasField("max_batch_size")
            batch_size = params.max_batch_size.value if has_size else 1000
        workers = grpc_threads(flags, batch_size)
        defaults = [
            ("grpc.so_reuseport", 0),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        overridden = {key for key, _ in extra}  # --grpc_channel_arguments win, as in TF Serving
        options = [(k, v) for k, v in defaults if k not in overridden] + extra
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
        self.grpc_server = server

        # Only now the heavy imports (TensorFlow): a taken port was refused in well under a second.
        from grpc_reflection.v1alpha import reflection

        from helpers.server.batching import Batcher, BatchingOptions
        from helpers.server.errors import ServingError
        from helpers.server.grpc_service import add_services
        from helpers.server.models import ManagerOptions, ServerCore
        from helpers.server.session_threads import apply_session_threads

        apply_session_threads(flags)
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
        self.manager = ServerCore(manager_options, on_change=self._on_availability)
        if self.stopping.is_set():  # a stop that came while TensorFlow was being imported
            raise StoppedDuringStartup()
        names = add_services(server, self.manager)
        if flags.enable_grpc_healthcheck_service:
            from grpc_health.v1 import health as health_module

            from helpers.server.health import HealthReporter

            self.health = HealthReporter(server)
            names.append(health_module.SERVICE_NAME)
        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)

        from helpers.server.models import Stopped

        try:
            self.manager.start(self.configs["models"])
        except Stopped:
            raise StoppedDuringStartup() from None
        except ServingError as exc:
            if self.stopping.is_set():
                raise StoppedDuringStartup() from None
            raise StartupError(f"{exc.code.name}: {exc.message}") from None
        # TensorFlow and the loaded models leave a few hundred thousand Python objects behind.
        # Python's garbage collector would walk all of them again and again while a large JSON
        # request builds its lists (a 256-image REST body took several times longer to parse);
        # frozen, they are left out of every later collection.
        gc.freeze()

        # The initial models are loaded: open the ports, as TF Serving does.
        try:
            if not flags.port:  # --grpc_socket_path only
                bound = 1
            elif credentials is not None:
                bound = server.add_secure_port(address, credentials)
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise StartupError(_bind_failure(flags, address, credentials))
        if flags.grpc_socket_path:
            try:
                listen_on_unix_socket(server, flags.grpc_socket_path, credentials)
            except SocketPathError as exc:
                raise StartupError(f"INVALID_ARGUMENT: {exc}") from None
        self._start_rest()  # before gRPC: a client that sees gRPC answer finds REST up too
        server.start()
        tls = " (TLS)" if credentials is not None else ""
        if flags.port:
            log.info("Running gRPC ModelServer at %s%s ...", address, tls)
        if flags.grpc_socket_path:
            log.info(
                "Running gRPC ModelServer at UNIX socket %s%s ...", flags.grpc_socket_path, tls
            )
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
                num_threads=flags.rest_api_num_threads or None,
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
            log.info("Model config file %s changed: reloading", path)
            try:
                config = read_model_server_config(path)
            except ConfigError as exc:  # keep serving the old config (PollFilesystemAndReload...)
                if exc.detail:
                    log.error("%s", exc.detail)
                log.error("Failed to read ModelServerConfig file: %s", exc)
                continue
            try:
                self.manager.reload_config(config)
            except Exception as exc:  # noqa: BLE001 - keep serving the old config
                message = getattr(exc, "message", None) or str(exc)
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", message)

    def _stop_rest(self) -> None:
        try:
            self.rest_handle.stop(timeout=STOP_GRACE_SECONDS)
        except Exception:  # noqa: BLE001 - we are exiting anyway
            log.exception("Stopping the REST server failed")

    def _watch_parent(self) -> None:
        pid = self.flags.parent_pid
        while not self.stopping.wait(PARENT_CHECK_SECONDS):
            if not process_alive(pid):
                log.info("Parent process %d ended: stopping", pid)
                self.request_stop()
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
        # Both front ends stop at once, within one grace period (not one after the other).
        rest_stopper = None
        if self.rest_handle is not None:
            rest_stopper = threading.Thread(target=self._stop_rest, name="rest-stop", daemon=True)
            rest_stopper.start()
        if self.grpc_server is not None:
            self.grpc_server.stop(STOP_GRACE_SECONDS).wait()
        if rest_stopper is not None:
            rest_stopper.join(STOP_GRACE_SECONDS + 1)
        if self.manager is not None:
            self.manager.close()
        if self.batcher is not None:
            self.batcher.close()
        log.info("Server stopped")


def _startup_failed(status: str) -> int:
    """End a failed start-up as tensorflow_model_server does: one stdout line, status 255."""
    print(f"Failed to start server. Error: {status}", flush=True)
    return STARTUP_FAILURE_STATUS


def _bind_failure(flags: Flags, address: str, credentials: Any) -> str:
    """Why gRPC could not open its port, as far as can be told (gRPC itself says nothing)."""
    if not port_is_free(flags.port, flags.host):
        return _port_taken(address)
    cause = (
        "gRPC refused the TLS key or certificate of --ssl_config_file"
        if credentials is not None
        else f"gRPC could not listen on {address} (is --host an address of this machine?)"
    )
    # TF Serving's own words for this (server.cc), then the cause.
    return f"INVALID_ARGUMENT: Failed to BuildAndStart gRPC server: {cause}"


def _port_taken(address: str) -> str:
    return (
        f"could not bind the gRPC port {address}: it is in use by another process "
        "(stop that server or choose another --port)"
    )


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Run the server; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("--help", "-h", "--helpfull") for a in argv):
        print(usage())
        return 0
    try:
        flags = parse_flags(argv)
    except FlagError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if flags.version:
        print("TensorFlow ModelServer: helpers.server (TF Serving compatible embedded server)")
        return 0
    try:
        check_flags(flags)
    except OptionsError as exc:
        return _startup_failed(f"INVALID_ARGUMENT: {exc}")
    _setup_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        configs = _read_configs(flags)
    except ConfigError as exc:
        if exc.detail:  # protobuf's own parser logs this line to stderr
            log.error("%s", exc.detail)
        return _startup_failed(exc.status)

    server = ModelServer(flags, configs)
    _stop_on_signals(server)
    started = time.monotonic()
    try:
        server.start()
    except StartupError as exc:
        server.stop(quiet=True)
        return _exit_now(_startup_failed(str(exc)))
    except StoppedDuringStartup:
        log.info("Stop requested before the models finished loading")
        server.stop()
        return _exit_now(0)
    log.info("Server ready in %.1f s", time.monotonic() - started)
    while not server.stopping.wait(0.5):
        pass
    server.stop()
    return _exit_now(0)


def _stop_on_signals(server: ModelServer) -> None:
    """SIGTERM and SIGINT stop the server from a thread of their own.

    A Python signal handler runs on the main thread between two bytecodes, so a handler that
    takes a lock (Event.set does) deadlocks when a second signal lands while the first handler
    holds it: a parent's death signal and a stop often arrive together. Here the handlers do
    nothing; Python writes each signal's number to a socket (set_wakeup_fd, no lock taken),
    and a thread waiting on that socket asks the server to stop.
    """
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)

    def watch() -> None:
        reader.recv(1)
        server.request_stop()

    server.signal_sockets = (reader, writer)  # kept open for the life of the server
    threading.Thread(target=watch, name="signal-watch", daemon=True).start()


def _exit_now(code: int) -> int:
    """Exit at once, the grace period being over.

    A Session run that ignored the grace period (a call with no deadline) or a model load
    still inside TensorFlow would otherwise keep the interpreter alive at exit, joining its
    worker threads for as long as TensorFlow takes. The log is flushed first.
    """
    if threading.current_thread() is not threading.main_thread():
        return code  # main() run inside a test's thread: leave the process alone
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
