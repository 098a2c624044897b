"""Solutions to notebook 00's exercises."""

from __future__ import annotations

import os
import socket

from helpers import envcheck


def data_check_with_source(source: str) -> envcheck.Check:
    """Exercise 1: the data check as it reads with MNIST_SOURCE set to `source`."""
    saved = os.environ.get("MNIST_SOURCE")
    os.environ["MNIST_SOURCE"] = source
    try:
        return envcheck.check_data_source()
    finally:
        if saved is None:
            os.environ.pop("MNIST_SOURCE", None)
        else:
            os.environ["MNIST_SOURCE"] = saved


def who_holds(port: int) -> str | None:
    """Exercise 2: hold `port` with a listening socket and name the holder (this process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return envcheck.port_holder(port)
