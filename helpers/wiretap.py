"""A recording TCP relay: see the bytes a client sends, as anyone on the network path could.

gRPC always speaks HTTP/2, and HTTP/2 by itself encrypts nothing. `Wiretap` sits between a
client and a server on this machine, passes every byte through unchanged, and keeps a copy of
what the client sent, so a lesson can search it for the model's name: readable on a plaintext
channel, gone on a TLS channel.

    with Wiretap(server.grpc_target) as tap:
        with grpc.insecure_channel(tap.target) as channel:
            ...                                  # call the server through the tap
    b"mnist" in tap.client_bytes()               # True: anyone on the path can read it
"""

from __future__ import annotations

from helpers.relay import TO_SERVER, TcpRelay, parse_address

#: Bytes every HTTP/2 connection in clear text starts with (RFC 9113, section 3.4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Wiretap(TcpRelay):
    """Listen on `localhost:<free port>` and relay each connection to `upstream` ("host:port").

    It listens from the moment it is made; `close()` (or the end of a `with` block) stops it.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__([parse_address(upstream, "upstream")])
        self._sent = bytearray()
        self.start()

    def observe(self, direction: int, data: bytes) -> None:
        if direction == TO_SERVER:
            self._sent += data

    @property
    def target(self) -> str:
        """Where clients connect instead of the server: `localhost:<port>` (the name a server
        certificate for localhost matches)."""
        return "localhost:" + super().target.rpartition(":")[2]

    def client_bytes(self) -> bytes:
        """Everything clients have sent so far, as the network carried it."""
        with self._lock:
            return bytes(self._sent)

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        self.stop()

    def __enter__(self) -> Wiretap:
        return self  # already listening
