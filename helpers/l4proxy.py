"""A connection-level (L4) TCP proxy: what a Kubernetes ClusterIP Service does to gRPC traffic.

kube-proxy picks a backend pod once per TCP *connection*, then only copies bytes. It never sees
the HTTP/2 requests inside, so every call a client sends over its one long-lived connection lands
on the same pod. `L4Proxy` does exactly that on loopback: it accepts a connection, picks the next
backend in round-robin order, and relays bytes both ways until either side closes.

    with L4Proxy([("127.0.0.1", 9001), ("127.0.0.1", 9002)]) as proxy:
        channel = grpc.insecure_channel(proxy.target)   # one connection -> one backend
        ...
        proxy.connections()                             # {"127.0.0.1:9001": 1, ...}

It runs an asyncio event loop in a background thread, so a notebook (whose own loop is busy)
can start and stop it like any object. It is a teaching tool: no TLS, no health checks, and a
backend that refuses a connection makes the proxy close the client's connection (as a Service
with a dead endpoint does) instead of trying another backend.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Iterable

#: Bytes read from one side before they are written to the other.
CHUNK_BYTES = 64 * 1024
#: Seconds the proxy waits for a backend to accept a connection.
CONNECT_TIMEOUT = 5.0


class ProxyError(RuntimeError):
    """The proxy could not start (bad backend list, port in use) or was used after stopping."""


def _parse_backends(backends: Iterable[object]) -> list[tuple[str, int]]:
    """Backends as (host, port) pairs, from pairs or "host:port" strings."""
    parsed: list[tuple[str, int]] = []
    for backend in backends:
        if isinstance(backend, str):
            host, sep, port = backend.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ProxyError(f"backend {backend!r} is not 'host:port' (e.g. '127.0.0.1:8500')")
            parsed.append((host, int(port)))
        elif isinstance(backend, tuple) and len(backend) == 2:
            parsed.append((str(backend[0]), int(backend[1])))
        else:
            raise ProxyError(f"backend {backend!r} is neither 'host:port' nor a (host, port) pair")
    if not parsed:
        raise ProxyError("an L4 proxy needs at least one backend")
    return parsed


class L4Proxy:
    """A TCP proxy on `host:port` (0: a free port) that picks a backend per connection."""

    def __init__(self, backends: Iterable[object], host: str = "127.0.0.1", port: int = 0):
        self.backends = _parse_backends(backends)
        self.host = host
        self._requested_port = port
        self._next_backend = itertools.cycle(self.backends)
        self._connections: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port: int | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> L4Proxy:
        """Bind the listening port and serve in a background thread; returns self."""
        if self._thread is not None:
            raise ProxyError("this proxy is already running; make a new L4Proxy to start another")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="l4proxy", daemon=True)
        self._thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        except OSError as exc:
            self._shutdown_loop()
            raise ProxyError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listening port and every relayed connection, then end the thread."""
        if self._loop is None:
            return
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._shutdown_loop()

    def __enter__(self) -> L4Proxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what it did
    @property
    def target(self) -> str:
        """`host:port` for `grpc.insecure_channel`."""
        if self.port is None:
            raise ProxyError("the proxy is not running: call start() (or use it in a with block)")
        return f"{self.host}:{self.port}"

    def connections(self) -> dict[str, int]:
        """Client connections relayed so far, per backend ("host:port" -> count)."""
        with self._lock:
            return {f"{h}:{p}": self._connections[f"{h}:{p}"] for h, p in self.backends}

    def failed_connections(self) -> dict[str, int]:
        """Connections a backend refused (the client's connection was closed), per backend."""
        with self._lock:
            return {f"{h}:{p}": self._failed[f"{h}:{p}"] for h, p in self.backends}

    def __repr__(self) -> str:
        where = self.target if self.port is not None else "not running"
        return f"<L4Proxy {where} -> {len(self.backends)} backends, per connection>"

    # ------------------------------------------------------------------ inside the loop
    async def _listen(self) -> asyncio.base_events.Server:
        return await asyncio.start_server(self._accept, self.host, self._requested_port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        host, port = next(self._next_backend)  # the one decision an L4 balancer makes
        name = f"{host}:{port}"
        try:
            try:
                backend_reader, backend_writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT
                )
            except (OSError, asyncio.TimeoutError):
                with self._lock:
                    self._failed[name] += 1
                return
            with self._lock:
                self._connections[name] += 1
            try:
                await asyncio.gather(_relay(reader, backend_writer), _relay(backend_reader, writer))
            finally:
                backend_writer.close()
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def _shutdown_loop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None
        self._thread = None
        self.port = None


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy bytes until `source` ends, then half-close `sink` (the other direction goes on)."""
    try:
        while data := await source.read(CHUNK_BYTES):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()
