"""Solutions to notebook 04's exercises (serve the model).

Each function works against the embedded server and against TensorFlow Serving alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import grpc
import requests

from helpers import client


def serve_and_label(
    channel: Any,
    model_name: str,
    base_path: str,
    labels: Mapping[str, int],
    *,
    timeout: float = 60.0,
) -> None:
    """Serve exactly the labelled versions, then point the labels at them.

    Exercise 1. One reload that loads a version *and* labels it fails with FAILED_PRECONDITION
    ("Request to assign label to version 1 of model mnist, which is not currently available for
    inference"): a label may only point at a version that is already AVAILABLE. So: load first,
    wait, then label.
    """
    versions = sorted(set(labels.values()))
    client.reload_config(
        channel, client.build_model_config(model_name, base_path, versions=versions)
    )
    for version in versions:
        client.wait_until_available(channel, model_name, version=version, timeout=timeout)
    client.reload_config(
        channel,
        client.build_model_config(model_name, base_path, versions=versions, labels=labels),
    )


def rest_version_states(rest_url: str, model_name: str, *, timeout: float = 5.0) -> dict[int, str]:
    """Exercise 2: {version: state} from `GET /v1/models/<name>` (REST only, no gRPC)."""
    response = requests.get(f"{rest_url}/v1/models/{model_name}", timeout=timeout)
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.json().get('error')}")
    return {int(row["version"]): row["state"] for row in response.json()["model_version_status"]}


def wait_until_unloaded(
    channel: Any,
    model_name: str,
    version: int,
    *,
    timeout: float = 60.0,
    poll_interval: float = 0.1,
) -> None:
    """Exercise 3: poll GetModelStatus until `version` is END or no longer reported."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = client.get_model_status(channel, model_name)
            states = {row.version: row.state for row in rows}
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: no versions at all
                raise
            states = {}
        if states.get(version, "END") == "END":
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"version {version} of {model_name!r} is still {states[version]} "
                f"after {timeout:g} s"
            )
        time.sleep(poll_interval)
