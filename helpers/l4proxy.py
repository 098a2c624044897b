"""A connection-level (L4) TCP proxy: what a Kubernetes ClusterIP Service does to gRPC traffic.

kube-proxy picks a backend pod once per TCP *connection*, then only copies bytes. It never sees
the HTTP/2 requests inside, so every call a client sends over its one long-lived connection lands
on the same pod. `L4Proxy` does exactly that on loopback: it accepts a connection, picks the next
backend in round-robin order, and relays bytes both ways until either side closes.

    with L4Proxy([("127.0.0.1", 9001), ("127.0.0.1", 9002)]) as proxy:
        channel = grpc.insecure_channel(proxy.target)   # one connection -> one backend
        ...
        proxy.connections()                             # {"127.0.0.1:9001": 1, ...}

It is the course's TCP relay (`helpers.relay`) with a round-robin choice of upstream, and a
teaching tool: no TLS, no health checks, and a backend that refuses a connection makes the proxy
close the client's connection (as a Service with a dead endpoint does) instead of trying another.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from helpers.relay import RelayError, TcpRelay

#: The error of a bad backend list, a port in use, or a proxy used while not running.
ProxyError = RelayError


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


class L4Proxy(TcpRelay):
    """A TCP proxy on `host:port` (0: a free port) that picks a backend per connection."""

    def __init__(self, backends: Iterable[object], host: str = "127.0.0.1", port: int = 0):
        super().__init__(_parse_backends(backends), host=host, port=port)
        self.backends = self.upstreams
        self._next_backend = itertools.cycle(self.backends)

    def choose_upstream(self) -> tuple[str, int]:
        return next(self._next_backend)  # the one decision an L4 balancer makes

    def __repr__(self) -> str:
        where = self.target if self.port is not None else "not running"
        return f"<L4Proxy {where} -> {len(self.backends)} backends, per connection>"
