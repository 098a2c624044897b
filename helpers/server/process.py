"""Start, wait for and stop the embedded server from Python (notebooks and tests).

`start_server` runs `python -m helpers.server` as a child process and waits for the model by
polling GetModelStatus until a version is AVAILABLE, as a client of the real TF Serving should
(never a bare sleep). The child dies with its parent: a --parent_pid watchdog in the server
(every platform, whatever thread started it) and an atexit stop. `connect` honours
$MODEL_SERVER: the embedded server by default, otherwise an external TF Serving whose model it
only waits for.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from helpers import config

#: What the server logs once its gRPC port (or socket) is open, as TF Serving does.
LISTENING_LINE = "Running gRPC ModelServer at"
#: Log lines kept from the server process (for error reports and .log_lines()).
LOG_LINES_KEPT = 2000
#: The flag of each port, by the name the server's "could not bind the ... port" error uses.
_PORT_FLAGS = {"gRPC": "--port", "REST": "--rest_api_port"}
#: How many times one start may move a port the OS picked that another process took first.
MAX_PORT_MOVES = 5


class ServerStartError(RuntimeError):
    """The server process exited, or its model did not become AVAILABLE in time."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could listen on `host:port` now: nothing listens there.

    SO_REUSEADDR on POSIX lets the check pass over connections of a stopped server still in
    TIME_WAIT (servers bind with it, gRPC's and TF Serving's too), but never over a live
    listener; on Windows, where it would allow taking a port over, the plain bind is tested.

    Every address the host name resolves to is checked: `localhost` is both 127.0.0.1 and
    ::1, and a port held on either one is taken (a client of `localhost:PORT` may reach it).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    if host == "localhost":  # gRPC resolves it to both, whatever /etc/hosts says
        infos += [
            (socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 0, "", ("::1", port, 0, 0)),
        ]
    seen = set()
    for family, kind, proto, _, sockaddr in infos:
        if (family, sockaddr[:2]) in seen:
            continue
        seen.add((family, sockaddr[:2]))
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # no IPv6 on this machine: nothing can listen there either
            continue
        with probe:
            if os.name == "posix":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


#: Default ports this process has claimed for a server it started: port -> the claiming socket.
_claims: dict[int, socket.socket] = {}


def _claim_default_port(port: int) -> bool:
    """Claim `port` among course processes on this machine, until our server stops.

    "Free" alone is not enough: the server opens its ports only after its models load, so two
    notebooks starting at once would both see 8500 free. The claim is a UDP socket bound to the
    same port number: UDP ports are apart from TCP ones, so it never blocks our own server; one
    process at most can hold it, whatever its user or temporary folder; and the OS drops it when
    the process ends, so a crash leaves no stale claim behind.
    """
    if port in _claims:
        return False
    claim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        claim.bind(("127.0.0.1", port))
    except OSError:
        claim.close()
        return False
    _claims[port] = claim
    return True


def _release_claim(port: int) -> None:
    """Drop this process's claim on `port` (its server stopped): the next start may take it."""
    claim = _claims.pop(port, None)
    if claim is not None:
        claim.close()


def process_alive(pid: int) -> bool:
    """True while process `pid` runs (a zombie, exited but not reaped, is not running)."""
    if pid <= 0:
        return False
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


def _pick_port(wanted: int | None, default: int, taken: set[int]) -> int:
    """`wanted`; else `default` if free and claimed (0: no default); else one the OS picks."""
    if wanted is not None:
        return wanted
    if default and default not in taken and port_is_free(default) and _claim_default_port(default):
        return default
    port = free_port()
    while port in taken:
        port = free_port()
    return port


def wait_for_model(
    target: str,
    model_name: str = config.MODEL_NAME,
    version: int | None = None,
    timeout: float = 60.0,
    *,
    credentials: Any = None,
    is_alive: Any = None,
) -> int:
    """Poll GetModelStatus on `target` until the model (or `version`) is AVAILABLE.

    Returns the available version. Raises TimeoutError, or ServerStartError if `is_alive()`
    turns False (the server process died). The polling itself is the client's own
    (`helpers.client.wait_until_available`): a notebook waits for a server the same way.
    """
    import grpc

    from helpers import client

    def check() -> None:
        if is_alive is not None and not is_alive():
            raise ServerStartError("the server process exited")

    # The ports open only once the models are loaded (as in TF Serving): until then every
    # connection is refused, and gRPC would wait longer and longer between attempts (1 s, then
    # x1.6 each time). Short reconnect backoffs notice the open port within half a second.
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
    channel = (
        grpc.secure_channel(target, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(target, options=options)
    )
    try:
        return client.wait_until_available(
            channel, model_name, version, timeout=timeout, poll_interval=0.1, check=check
        )
    finally:
        channel.close()


class ServerProcess:
    """A running `python -m helpers.server` child process."""

    def __init__(
        self,
        args: list[str],
        grpc_port: int,
        rest_port: int,
        model_name: str,
        *,
        credentials: Any = None,
        env: dict[str, str] | None = None,
        movable_ports: Collection[str] = (),
    ) -> None:
        """`movable_ports` ("gRPC", "REST"): ports the OS picked for us, which may move.

        A picked port is free when picked but not reserved: the server binds it only once its
        models load, seconds later, and by then another process may hold it. A server that
        loses a movable port that way is started again on a new one while waiting for it.
        """
        self.args = list(args)
        self.model_name = model_name
        self.credentials = credentials
        self.address = config.ServerAddress("localhost", grpc_port, rest_port, embedded=True)
        self.movable_ports = frozenset(movable_ports) & set(_PORT_FLAGS)
        self._moves_left = MAX_PORT_MOVES
        self._lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES_KEPT)
        self._env = dict(os.environ if env is None else env)
        self._env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._env["PYTHONUNBUFFERED"] = "1"
        self._launch()
        _running.add(self)

    def _launch(self) -> None:
        # No preexec_fn: it is unsafe in a process with threads (gRPC's), and the server's
        # --parent_pid watchdog already ends the child when this process ends.
        self._process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._listening = threading.Event()
        self._launch_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    def _move_lost_port(self) -> bool:
        """The server exited: if only because another process took a movable port, start it
        again on a new port the OS picks, and say so in its log. False if it cannot."""
        self._reader.join(timeout=2)
        lost = [
            kind
            for kind in _PORT_FLAGS
            if any(f"could not bind the {kind} port" in line for line in self._launch_tail)
        ]
        if not lost or not set(lost) <= self.movable_ports or self._moves_left <= 0:
            return False
        self._moves_left -= 1
        ports = {"gRPC": self.address.grpc_port, "REST": self.address.rest_port}
        for kind in lost:
            _release_claim(ports[kind])
            new = free_port()
            while new in ports.values():
                new = free_port()
            flag = _PORT_FLAGS[kind]
            self.args = [f"{flag}={new}" if a.startswith(f"{flag}=") else a for a in self.args]
            self._lines.append(
                f"(another process took the {kind} port {ports[kind]} before this server could "
                f"listen there: starting it again on port {new})"
            )
            ports[kind] = new
        self.address = dataclasses.replace(
            self.address, grpc_port=ports["gRPC"], rest_port=ports["REST"]
        )
        self._launch()
        return True

    # ---------------------------------------------------------------- addresses
    @property
    def grpc_target(self) -> str:
        """`localhost:PORT`, for grpc.insecure_channel / secure_channel."""
        return self.address.grpc_target

    @property
    def rest_url(self) -> str:
        """`http://localhost:PORT` (the REST API; nothing listens there if REST is off)."""
        return self.address.rest_url

    @property
    def grpc_port(self) -> int:
        return self.address.grpc_port

    @property
    def rest_port(self) -> int:
        return self.address.rest_port

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """None while running, else the exit code."""
        return self._process.poll()

    def is_running(self) -> bool:
        return self._process.poll() is None

    # ---------------------------------------------------------------- logs
    def _read_output(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.append(line.rstrip("\n"))
            self._launch_tail.append(self._lines[-1])
            if LISTENING_LINE in line:
                self._listening.set()

    def log_lines(self) -> list[str]:
        """What the server has logged so far (the last LOG_LINES_KEPT lines)."""
        return list(self._lines)

    def wait_for_log(self, text: str, timeout: float = 30.0) -> bool:
        """True once a logged line contains `text`, False if none does within `timeout` s.

        The log reaches this process through a reader thread, so a line the server has just
        written (say, before answering a call) may not be in `log_lines()` yet.
        """
        deadline = time.monotonic() + timeout
        while True:
            if any(text in line for line in self.log_lines()):
                return True
            if time.monotonic() >= deadline:
                return False
            if not self.is_running():
                self._reader.join(timeout=0.5)  # what the process wrote last is still coming
                return any(text in line for line in self.log_lines())
            time.sleep(0.05)

    def _tail(self, count: int = 15) -> str:
        if not self.is_running():
            self._reader.join(timeout=0.5)  # let the reader drain what the process wrote last
        return "\n".join(self.log_lines()[-count:]) or "(no output)"

    # ---------------------------------------------------------------- waiting
    def wait_until_listening(self, timeout: float = 60.0, model_name: str | None = None) -> None:
        """Block until the server says it listens: its initial models are loaded (TF Serving
        opens its ports only then). A movable port lost meanwhile is moved here.

        Raises ServerStartError with the server's last log lines if it dies or times out.
        """
        deadline = time.monotonic() + timeout
        # Until this server says it listens, whatever answers on its port is someone else's.
        while not self._listening.wait(0.1):
            if not self.is_running():
                if self._move_lost_port():
                    continue
                raise self._exited_before(model_name or self.model_name)
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"the model server did not open its port in {timeout:g} s. "
                    f"Its last log lines:\n{self._tail()}"
                )

    def wait_until_available(
        self, model_name: str | None = None, version: int | None = None, timeout: float = 60.0
    ) -> int:
        """Block until GetModelStatus says the model (or `version`) is AVAILABLE; returns it.

        Raises ServerStartError with the server's last log lines if it dies or times out.
        """
        name = model_name or self.model_name
        deadline = time.monotonic() + timeout
        self.wait_until_listening(timeout, name)
        try:
            return wait_for_model(
                self.grpc_target,
                name,
                version,
                max(deadline - time.monotonic(), 0.1),
                credentials=self.credentials,
                is_alive=self.is_running,
            )
        except ServerStartError:
            raise self._exited_before(name) from None
        except TimeoutError as exc:
            raise ServerStartError(f"{exc}. The server's last log lines:\n{self._tail()}") from None

    def _exited_before(self, name: str) -> ServerStartError:
        return ServerStartError(
            f"the model server exited with code {self.returncode} before model '{name}' was "
            f"available. Its last log lines:\n{self._tail()}"
        )

    # ---------------------------------------------------------------- stopping
    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (calls in flight finish), then kill after `timeout` s. Returns the exit code."""
        _running.discard(self)
        if self._process.poll() is None:
            try:
                self._process.send_signal(signal.SIGTERM)
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            except ProcessLookupError:
                pass
        self._reader.join(timeout=2)
        for port in (self.address.grpc_port, self.address.rest_port):
            _release_claim(port)
        return self._process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited {self.returncode}"
        return (
            f"<ServerProcess pid={self.pid} grpc={self.grpc_target} rest={self.rest_url} {state}>"
        )


_running: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        try:
            server.stop(timeout=5)
        except Exception:  # noqa: BLE001 - interpreter is exiting
            pass


def start_server(
    model_base_path: str | os.PathLike[str] | None = None,
    model_name: str = config.MODEL_NAME,
    *,
    grpc_port: int | None = None,
    rest_port: int | None = None,
    default_ports: bool = True,
    extra_flags: Sequence[str] = (),
    wait: bool = True,
    timeout: float = 60.0,
    credentials: Any = None,
) -> ServerProcess:
    """Start the embedded server for one model and (by default) wait until it is AVAILABLE.

    Ports left as None are 8500/8501 when free (never, with `default_ports=False`), else ports
    the OS picks: two notebooks never fight over a port, and a picked port that another process
    takes before the server listens is picked again (so read the ports from the returned
    server, once available). `extra_flags` are more TF Serving flags, e.g.
    `["--enable_batching"]`; with `--model_config_file=...` among them, the model name and base
    path are not passed. `credentials` (grpc.ChannelCredentials) polls a server started with TLS.
    """
    flags = list(extra_flags)
    uses_config_file = any(f.startswith("--model_config_file") for f in flags)
    defaults = (config.DEFAULT_GRPC_PORT, config.DEFAULT_REST_PORT) if default_ports else (0, 0)
    chosen_grpc = _pick_port(grpc_port, defaults[0], set())
    chosen_rest = _pick_port(rest_port, defaults[1], {chosen_grpc})
    args = [sys.executable, "-m", "helpers.server", f"--port={chosen_grpc}"]
    args.append(f"--rest_api_port={chosen_rest}")
    if not uses_config_file:
        base = Path(model_base_path) if model_base_path else config.model_base_path(model_name)
        args += [f"--model_name={model_name}", f"--model_base_path={base.resolve()}"]
    args.append(f"--parent_pid={os.getpid()}")
    args += flags
    movable = [kind for kind, port in (("gRPC", grpc_port), ("REST", rest_port)) if port is None]
    server = ServerProcess(
        args, chosen_grpc, chosen_rest, model_name, credentials=credentials, movable_ports=movable
    )
    if wait:
        try:
            server.wait_until_available(model_name, timeout=timeout)
        except BaseException:
            server.stop()
            raise
    return server


class ExternalServer:
    """A model server this process did not start (TF Serving in Docker, a remote host)."""

    def __init__(self, address: config.ServerAddress, model_name: str) -> None:
        self.address = address
        self.model_name = model_name
        self.pid: int | None = None

    @property
    def grpc_target(self) -> str:
        return self.address.grpc_target

    @property
    def rest_url(self) -> str:
        return self.address.rest_url

    def wait_until_available(
        self, model_name: str | None = None, version: int | None = None, timeout: float = 60.0
    ) -> int:
        return wait_for_model(self.grpc_target, model_name or self.model_name, version, timeout)

    def log_lines(self) -> list[str]:
        return []

    def wait_for_log(self, text: str, timeout: float = 30.0) -> bool:
        """Always False: this process cannot read the server's log."""
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Nothing to do: this process does not own the server."""

    def __enter__(self) -> ExternalServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ExternalServer grpc={self.grpc_target} rest={self.rest_url}>"


ServerHandle = ServerProcess | ExternalServer


def connect(model_name: str = config.MODEL_NAME, timeout: float = 60.0) -> ServerHandle:
    """The model server the course should talk to, ready to answer for `model_name`.

    $MODEL_SERVER unset or `embedded`: start the embedded server (see start_server).
    Otherwise wait for the external server there to report the model AVAILABLE.
    """
    address = config.server_address()
    if address.embedded:
        return start_server(model_name=model_name, timeout=timeout)
    server = ExternalServer(address, model_name)
    server.wait_until_available(model_name, timeout=timeout)
    return server
