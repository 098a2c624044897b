"""Solutions to notebook 07's exercises (compare gRPC and REST)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterable, Sequence

import numpy as np

from helpers import client, rest_client


def rounded_json_sizes(
    images: np.ndarray, decimals: Iterable[int | None] = (None, 4, 3, 2, 1)
) -> dict[int | None, int]:
    """Exercise 1: REST row-format body bytes with pixels rounded to each number of decimals
    (`None`: the floats as `json.dumps` writes them)."""
    batch = np.asarray(images, dtype=np.float32)
    sizes = {}
    for places in decimals:
        if places is None:
            sizes[None] = len(json.dumps({"instances": batch.tolist()}).encode())
        else:
            sizes[places] = len(rest_client.rounded_json_instances(batch, places))
    return sizes


def keep_alive_speedup(base_url: str, model: str, images: np.ndarray, calls: int = 20) -> float:
    """Exercise 2: median time of REST calls that each open a connection, divided by the median
    time of calls on one keep-alive session (above 1: keep-alive is faster)."""
    import requests

    url = rest_client.predict_url(base_url, model)
    data, headers = rest_client.encode_body(rest_client.row_body(np.asarray(images)))

    def median_seconds(post) -> float:
        post()  # warm-up
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            post()
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    def fresh_connection() -> None:
        with requests.Session() as once:  # a new session is a new TCP connection
            rest_client.post(once, url, data, headers)

    with requests.Session() as session:
        reused = median_seconds(lambda: rest_client.post(session, url, data, headers))
    return median_seconds(fresh_connection) / reused


def gzip_costs(
    images: np.ndarray, batch_sizes: Sequence[int] = (1, 8, 64, 256), repeats: int = 3
) -> dict[int, dict[str, float]]:
    """Exercise 3: per batch size, the `tensor_content` request's bytes plain and gzipped and
    the best time gzip took, in milliseconds."""
    costs = {}
    for size in batch_sizes:
        batch = np.asarray(images[:size], dtype=np.float32)
        if len(batch) < size:
            raise ValueError(f"need at least {size} images for batch size {size}, got {len(batch)}")
        body = client.make_predict_request(batch, "mnist", "image").SerializeToString()
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            zipped = gzip.compress(body, rest_client.GZIP_LEVEL)
            best = min(best, time.perf_counter() - started)
        costs[size] = {"bytes": len(body), "gzip_bytes": len(zipped), "gzip_ms": best * 1000}
    return costs


def break_even_mbit_per_s(cost: dict[str, float]) -> float:
    """The network speed below which gzip saves time: bytes saved / time spent compressing."""
    saved_bits = (cost["bytes"] - cost["gzip_bytes"]) * 8
    return saved_bits / (cost["gzip_ms"] / 1000) / 1e6
