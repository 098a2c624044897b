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

import socket
import threading

#: Bytes every HTTP/2 connection in clear text starts with (RFC 9113, section 3.4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Wiretap:
    """Listen on `localhost:<free port>` and relay each connection to `upstream` ("host:port")."""

    def __init__(self, upstream: str) -> None:
        host, sep, port = upstream.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"upstream must be 'host:port', got {upstream!r}")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sent = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def target(self) -> str:
        """Where clients connect instead of the server: `localhost:<port>` (the name a server
        certificate for localhost matches)."""
        return f"localhost:{self._listener.getsockname()[1]}"

    def client_bytes(self) -> bytes:
        """Everything clients have sent so far, as the network carried it."""
        with self._lock:
            return bytes(self._sent)

    def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        self._stopping.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        self._acceptor.join(timeout=2)

    def __enter__(self) -> Wiretap:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                downstream.close()
                continue
            with self._lock:
                self._sockets += [downstream, upstream]
            for source, sink, keep in ((downstream, upstream, True), (upstream, downstream, False)):
                threading.Thread(target=self._pump, args=(source, sink, keep), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, keep: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if keep:
                    with self._lock:
                        self._sent += chunk
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
