"""One TCP relay for the course's network lessons: the same bytes out as in, looked at on the way.

Notebook 07 counts what a call puts on the wire (`wire.ByteCounter`), notebook 08 reads what a
plaintext channel shows anyone on the path (`wiretap.Wiretap`), and notebook 10 balances per
connection as a Kubernetes Service does (`l4proxy.L4Proxy`). Each is this relay with one thing
changed: what it notes about the bytes (`observe`), or where a new connection goes
(`choose_upstream`). Threads do the relaying, so a notebook starts and stops a relay like any
object while its own event loop is busy.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

#: Bytes read from a socket at a time.
CHUNK_BYTES = 256 * 1024
#: Seconds the relay waits for an upstream to accept a connection.
CONNECT_TIMEOUT = 5.0
#: `observe`'s direction for bytes from the client to the server, and back.
TO_SERVER, TO_CLIENT = 0, 1
#: Seconds the accept loop waits after running out of file descriptors (or memory) before it
#: tries again: the first pause, doubled on each failure in a row up to the last.
ACCEPT_BACKOFF = (0.01, 1.0)
#: accept() errors that mean "out of a resource for now": wait, then accept again.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

log = logging.getLogger("helpers.relay")


class RelayError(RuntimeError):
    """The relay could not listen (port in use), or was used while not running."""


def parse_address(address: str, what: str = "target") -> tuple[str, int]:
    """("host", port) from "host:port"; a ValueError that shows the expected form otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{what} must be 'host:port', e.g. 'localhost:8500'; got {address!r}")
    return host, int(port)


class TcpRelay:
    """Listen on `host:port` (0: a free port) and relay every connection to an upstream.

    Subclasses override `choose_upstream` (which upstream a new connection goes to; the first
    by default) and `observe` (called with each chunk before it is passed on).
    """

    def __init__(
        self, upstreams: Sequence[tuple[str, int]], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstreams = [(str(h), int(p)) for h, p in upstreams]
        self.host = host
        self.port: int | None = None
        self._requested_port = port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._connections: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()

    # ------------------------------------------------------------------ what subclasses change
    def choose_upstream(self) -> tuple[str, int]:
        """Where the next connection goes (called once per connection, as it is accepted)."""
        return self.upstreams[0]

    def observe(self, direction: int, data: bytes) -> None:
        """See `data` on its way (TO_SERVER or TO_CLIENT); called with the relay's lock held."""

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Any:
        """Listen, and relay in background threads; returns self."""
        if self._listener is not None:
            raise RelayError(f"{self!r} is already running; make another one to start a second")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((self.host, self._requested_port))
        except OSError as exc:
            listener.close()
            raise RelayError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}"
            ) from None
        listener.listen(64)
        self._stopping.clear()
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "relay-accept")
        return self

    def stop(self) -> None:
        """Close the listening port and every relayed connection; the port is free afterwards."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        _close(listener)  # shutdown() first: on Linux, close() alone leaves accept() waiting
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads.clear()
        self.port = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what it did
    @property
    def target(self) -> str:
        """`host:port` to give a client instead of the server's address."""
        if self.port is None:
            raise RelayError(
                f"{type(self).__name__} is not running: call start() (or use it in a with block)"
            )
        return f"{self.host}:{self.port}"

    def connections(self) -> dict[str, int]:
        """Client connections relayed so far, per upstream ("host:port" -> count)."""
        with self._lock:
            return {f"{h}:{p}": self._connections[f"{h}:{p}"] for h, p in self.upstreams}

    def failed_connections(self) -> dict[str, int]:
        """Connections an upstream refused (the client's connection was closed), per upstream."""
        with self._lock:
            return {f"{h}:{p}": self._failed[f"{h}:{p}"] for h, p in self.upstreams}

    # ------------------------------------------------------------------ inside
    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        """Accept until stop(). Running out of file descriptors (a flood of idle clients) is
        logged, waited out with a growing pause, and survived: the relay accepts again as soon
        as connections close."""
        pause = 0.0
        while (listener := self._listener) is not None:
            try:
                downstream, _ = listener.accept()
            except OSError as exc:
                if self._stopping.is_set() or self._listener is not listener:
                    return  # the listener was closed: stop()
                if exc.errno not in _EXHAUSTED:
                    # ECONNABORTED and the like: that one client is gone, the port is fine.
                    log.debug("%r: accept failed (%s); accepting again", self, exc)
                    continue
                if not pause:
                    log.warning(
                        "%r cannot accept a connection: %s. Waiting for connections to close "
                        "(raise the limit with `ulimit -n`, or close idle clients).",
                        self,
                        exc.strerror or exc,
                    )
                pause = min(ACCEPT_BACKOFF[1], pause * 2 or ACCEPT_BACKOFF[0])
                self._stopping.wait(pause)
                continue
            if pause:
                log.warning("%r accepts connections again", self)
                pause = 0.0
            host, port = self.choose_upstream()
            name = f"{host}:{port}"
            try:
                upstream = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            except OSError:
                with self._lock:
                    self._failed[name] += 1
                _close(downstream)  # nothing to relay to: the client sees the connection drop
                continue
            upstream.settimeout(None)
            for sock in (downstream, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections[name] += 1
                self._sockets.update((downstream, upstream))
            self._spawn(self._relay, "relay", downstream, upstream)

    def _relay(self, downstream: socket.socket, upstream: socket.socket) -> None:
        """Relay one connection both ways; close both ends once both directions are done."""
        back = threading.Thread(
            target=self._pump, args=(upstream, downstream, TO_CLIENT), daemon=True
        )
        back.start()
        self._pump(downstream, upstream, TO_SERVER)
        back.join()
        with self._lock:
            self._sockets.difference_update((downstream, upstream))
        _close(downstream)
        _close(upstream)

    def _pump(self, source: socket.socket, sink: socket.socket, direction: int) -> None:
        """Copy bytes one way, observed before they are passed on."""
        try:
            while data := source.recv(CHUNK_BYTES):
                with self._lock:
                    self.observe(direction, data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)  # pass the end of the stream on
            except OSError:
                pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
