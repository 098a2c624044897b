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

import time
from collections.abc import Callable
from typing import Any

from helpers.relay import TO_SERVER, TcpRelay, parse_address


class ByteCounter(TcpRelay):
    """A TCP relay on 127.0.0.1 that forwards to `target` ("host:port") and counts bytes.

    `sent` counts client -> server bytes, `received` server -> client bytes, over every
    connection since the last `reset()`. Start it with `start()` or a `with` block.
    """

    def __init__(self, target: str, *, host: str = "127.0.0.1") -> None:
        super().__init__([parse_address(target)], host=host)
        self.upstream = self.upstreams[0]
        self._counts = [0, 0]  # client -> server, server -> client
        self._last_activity = time.monotonic()

    def observe(self, direction: int, data: bytes) -> None:
        self._counts[0 if direction == TO_SERVER else 1] += len(data)
        self._last_activity = time.monotonic()

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

    def __repr__(self) -> str:
        host, port = self.upstream
        where = f"127.0.0.1:{self.port}" if self.port is not None else "not running"
        return f"<ByteCounter {where} -> {host}:{port} sent={self.sent} received={self.received}>"
