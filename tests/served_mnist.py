"""A trained MNIST model served by the embedded server, for the client-side tests.

Imported by the test modules that need it (`pytest_plugins = ["served_mnist"]`). The model is
trained once per test worker (a quick dense network on the offline digits, a few seconds).
`served_mnist` is one server per worker that every module shares: tests may call it, open and
close their own channels and read its files, but never reconfigure, reload or stop it. A test
that changes what a server serves takes `private_served_mnist`, a server of its module's own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import config


def trained_version(base: Path) -> Path:
    """`<models dir>/client-tests/mnist/1`: a trained model, made on first use."""
    from helpers.export import ensure_model

    os.environ.setdefault("MNIST_SOURCE", "offline")
    return ensure_model(config.MODEL_NAME, 1, base_dir=base)


def copy_model(source: Path, base_path: Path, versions: tuple[int, ...]) -> Path:
    """Copy one exported version into `base_path` under each of `versions`."""
    for version in versions:
        staging = base_path / f".staging-{version}"
        shutil.copytree(source, staging)
        os.replace(staging, base_path / str(version))
    return base_path


def _start(base_dir: Path) -> object:
    """The embedded server for `mnist` (version 1 only), on ports nobody else uses."""
    from helpers.server.process import start_server

    source = trained_version(config.models_dir() / "client-tests")
    base_path = copy_model(source, base_dir / config.MODEL_NAME, (1,))
    handle = start_server(base_path, config.MODEL_NAME, default_ports=False, timeout=120)
    handle.base_path = base_path
    return handle


#: This worker's shared, read-only server, started by the first module that asks for it.
_shared = None


@pytest.fixture(scope="module")
def served_mnist(tmp_path_factory, pytestconfig) -> object:
    """The worker's shared server (read-only: see the module's docstring), started again if a
    test left it stopped."""
    global _shared
    if _shared is None or not _shared.is_running():
        _shared = _start(tmp_path_factory.mktemp("served-shared"))
        pytestconfig.add_cleanup(_shared.stop)  # when this worker's session ends
    return _shared


@pytest.fixture(scope="module")
def private_served_mnist(tmp_path_factory) -> Iterator[object]:
    """A server of this module's own, for tests that reconfigure or stop it."""
    handle = _start(tmp_path_factory.mktemp("served"))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def served_channel(served_mnist) -> Iterator[object]:
    from helpers import client

    channel = client.open_channel(served_mnist.grpc_target)
    yield channel
    channel.close()
