"""Count the bytes a call really puts on the wire: a small TCP relay between client and server.

Message sizes (`len(request.SerializeToString())`, `len(json_body)`) leave out what travels
around them: HTTP/1.1 headers for REST; HTTP/2 frames, HPACK-compressed headers and trailers
for gRPC; and whatever compression the two sides agreed on. Pointing a client at a relay that
forwards every byte to the real server and counts them gives the honest figure, for the
embedded server and for `tensorflow/serving` alike.

    with ByteCounter("localhost:8500") as relay:
        channel = grpc.insecure_channel(relay.target)      # or requests to relay.url
        sent, received = relay.measure(lambda: stub.Predict(request, timeout=10))

The counts are TCP payload bytes: everything HTTP and gRPC send, but not the TCP/IP packet
headers under them (about 50-70 bytes a packet, the same for both protocols).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

#: Bytes read from a socket at a time.
CHUNK = 256 * 1024


class ByteCounter:
    """A TCP relay on 127.0.0.1 that forwards to `target` ("host:port") and counts bytes.

    `sent` counts client -> server bytes, `received` server -> client bytes, over every
    connection since the last `reset()`. Start it with `start()` or a `with` block.
    """

    def __init__(self, target: str, *, host: str = "127.0.0.1") -> None:
        server_host, _, port = target.rpartition(":")
        if not server_host or not port.isdigit():
            raise ValueError(f"target must be 'host:port', e.g. 'localhost:8500'; got {target!r}")
        self.upstream = (server_host, int(port))
        self.host = host
        self.port = 0
        self._counts = [0, 0]  # client -> server, server -> client
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._last_activity = time.monotonic()

    # ------------------------------------------------------------------ addresses
    @property
    def target(self) -> str:
        """`127.0.0.1:PORT`: give this to `grpc.insecure_channel` instead of the server's."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`: use it instead of the server's REST URL."""
        return f"http://{self.target}"

    # ------------------------------------------------------------------ counting
    @property
    def sent(self) -> int:
        with self._lock:
            return self._counts[0]

    @property
    def received(self) -> int:
        with self._lock:
            return self._counts[1]

    def reset(self) -> None:
        with self._lock:
            self._counts = [0, 0]

    def wait_until_quiet(self, quiet: float = 0.02, timeout: float = 2.0) -> None:
        """Wait until no byte has moved for `quiet` seconds (late frames, such as HTTP/2
        flow-control updates, arrive just after a call returns)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = time.monotonic() - self._last_activity
            if idle >= quiet:
                return
            time.sleep(quiet - idle)

    def measure(self, call: Callable[[], Any]) -> tuple[int, int]:
        """Run `call()` and return (bytes sent, bytes received) while it ran.

        Warm the connection up first (one call through the relay): the first call on a new
        connection also pays for the TCP and HTTP/2 set-up.
        """
        self.wait_until_quiet()
        self.reset()
        call()
        self.wait_until_quiet()
        with self._lock:
            return self._counts[0], self._counts[1]

    # ------------------------------------------------------------------ running
    def start(self) -> ByteCounter:
        """Listen on a free port (read it from `.port`) and relay in background threads."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((self.host, 0))
        listener.listen(16)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "relay-accept")
        return self

    def stop(self) -> None:
        """Close the listener and every relayed connection; the port is free afterwards."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> ByteCounter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        host, port = self.upstream
        counts = f"sent={self.sent} received={self.received}"
        return f"<ByteCounter {self.target} -> {host}:{port} {counts}>"

    # ------------------------------------------------------------------ internals
    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed: stop()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(client)  # nothing to relay to: the client sees the connection drop
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, server))
            self._spawn(self._relay, "relay", client, server)

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        """Relay one connection both ways; close both ends once both directions are done."""
        down = threading.Thread(
            target=self._pump, args=(server, client, 1), name="relay-down", daemon=True
        )
        down.start()
        self._pump(client, server, 0)
        down.join()
        with self._lock:
            self._sockets.difference_update((client, server))
        _close(client)
        _close(server)

    def _pump(self, source: socket.socket, sink: socket.socket, direction: int) -> None:
        """Copy bytes one way, counting them before they are passed on."""
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                with self._lock:
                    self._counts[direction] += len(data)
                    self._last_activity = time.monotonic()
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
