"""Client-side load balancing and retries for gRPC, set through gRPC's own service config.

A gRPC channel resolves its target to a list of addresses, then a load-balancing *policy* picks
one address per call. The default policy, `pick_first`, uses one address for everything;
`round_robin` keeps a connection to every address and rotates calls over them. Both the policy
and a `retryPolicy` travel in the channel's *service config* (JSON), here given by the client
with the `grpc.service_config` channel option:

    channel = balanced_channel(["127.0.0.1:9001", "127.0.0.1:9002"], retry=retry_policy())

`multi_address_target` writes the `ipv4:` target that gRPC's C core (and so grpcio) resolves to
several addresses; in Kubernetes, `dns:///NAME.NAMESPACE.svc.cluster.local:8500` of a headless
Service resolves to one address per ready pod in the same way.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

#: TF Serving's inference service, as the service config names it (package.Service).
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
#: The codes a retry may safely repeat for Predict: the call did not reach a working server.
RETRYABLE_CODES = ("UNAVAILABLE",)
#: gRPC clients cap maxAttempts at this many (original call included), whatever the config says.
MAX_ATTEMPTS_CAP = 5


def multi_address_target(addresses: Iterable[Any]) -> str:
    """`ipv4:127.0.0.1:9001,127.0.0.1:9002`: one channel target naming several servers.

    `addresses` are "IP:port" strings, (IP, port) pairs, or anything with a `.grpc_port`
    (a server handle on this machine). Host names are refused: the `ipv4:` scheme takes IPv4
    literals only; a name that resolves to several addresses is a `dns:///` target instead.
    """
    parts = []
    for address in addresses:
        if hasattr(address, "grpc_port"):
            host, port = "127.0.0.1", int(address.grpc_port)
        elif isinstance(address, tuple) and len(address) == 2:
            host, port = str(address[0]), int(address[1])
        elif isinstance(address, str) and address.count(":") == 1:
            host, _, raw_port = address.partition(":")
            if not raw_port.isdigit():
                raise ValueError(f"{address!r}: the port must be a number, e.g. '127.0.0.1:8500'")
            port = int(raw_port)
        else:
            raise ValueError(f"{address!r} is not 'IP:port', an (IP, port) pair or a server handle")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"{host!r} is not an IPv4 address: the ipv4: target takes literals such as "
                f"127.0.0.1 (for a host name, use the target 'dns:///{host}:{port}')"
            ) from None
        if not 0 < port < 65536:
            raise ValueError(f"{address!r}: port {port} is not in 1-65535")
        parts.append(f"{host}:{port}")
    if not parts:
        raise ValueError("a multi-address target needs at least one address")
    return "ipv4:" + ",".join(parts)


def _duration(seconds: float) -> str:
    """A proto3 JSON Duration, as the service config wants it: 0.1 -> "0.1s"."""
    if seconds <= 0:
        raise ValueError(f"a backoff must be positive, got {seconds} s")
    return f"{seconds:g}s"


def retry_policy(
    max_attempts: int = 4,
    initial_backoff: float = 0.1,
    max_backoff: float = 1.0,
    backoff_multiplier: float = 2.0,
    retryable_codes: Sequence[str] = RETRYABLE_CODES,
) -> dict[str, Any]:
    """A service-config `retryPolicy` (gRFC A6): up to `max_attempts` tries in all.

    Retry only what is safe to repeat: Predict changes nothing on the server, and UNAVAILABLE
    means the call did not get an answer from a working server. The n-th retry waits a random
    time in [0, min(initial_backoff * multiplier**(n-1), max_backoff)]; the call's deadline
    still bounds all the attempts together.
    """
    if not 2 <= max_attempts <= MAX_ATTEMPTS_CAP:
        raise ValueError(
            f"max_attempts={max_attempts}: gRPC needs at least 2 (the call and one retry) and "
            f"uses at most {MAX_ATTEMPTS_CAP}"
        )
    codes = [str(code).upper() for code in retryable_codes]
    unknown = [code for code in codes if code not in grpc.StatusCode.__members__]
    if not codes or unknown:
        raise ValueError(f"retryable_codes must be gRPC status names such as UNAVAILABLE: {codes}")
    if backoff_multiplier <= 0:
        raise ValueError(f"backoff_multiplier must be positive, got {backoff_multiplier}")
    return {
        "maxAttempts": int(max_attempts),
        "initialBackoff": _duration(initial_backoff),
        "maxBackoff": _duration(max_backoff),
        "backoffMultiplier": backoff_multiplier,
        "retryableStatusCodes": codes,
    }


def service_config(
    *,
    policy: str = "round_robin",
    retry: dict[str, Any] | None = None,
    services: Sequence[str] = (PREDICTION_SERVICE,),
    health_service: str | None = None,
) -> str:
    """The service config JSON: a load-balancing policy, and a retryPolicy for `services`.

    With `health_service` (e.g. "PredictionService", a name TF Serving's health service
    reports), the channel watches each server's grpc.health.v1 status and sends calls only to
    servers that say SERVING: a server still loading its model gets none.
    """
    if policy not in ("round_robin", "pick_first"):
        raise ValueError(f"policy must be 'round_robin' or 'pick_first', not {policy!r}")
    config: dict[str, Any] = {"loadBalancingConfig": [{policy: {}}]}
    if health_service is not None:
        config["healthCheckConfig"] = {"serviceName": health_service}
    if retry is not None:
        config["methodConfig"] = [
            {"name": [{"service": service} for service in services], "retryPolicy": retry}
        ]
    return json.dumps(config)


def balanced_channel(
    addresses: Iterable[Any] | str,
    *,
    policy: str = "round_robin",
    retry: dict[str, Any] | None = None,
    health_service: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A plaintext channel over several servers, balanced by gRPC itself.

    `addresses` is a list for `multi_address_target`, or a ready target string such as
    `dns:///tf-serving-grpc.default.svc.cluster.local:8500`.
    """
    target = addresses if isinstance(addresses, str) else multi_address_target(addresses)
    config = service_config(policy=policy, retry=retry, health_service=health_service)
    channel_options = [("grpc.service_config", config)]
    return grpc.insecure_channel(target, options=[*channel_options, *options])
