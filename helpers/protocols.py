"""gRPC against REST, measured end to end: the same images, the same model, one run.

A *route* is one way of asking the server for predictions, split into the three steps a
client pays for, so that each can be timed on its own:

    payload = route.encode(images)   # client: build and serialise the request
    answer = route.send(payload)     # network and server: bytes in, bytes out
    probabilities = route.decode(answer)   # client: parse the answer

Both kinds of route keep their connection open (one gRPC channel; one keep-alive HTTP session
per thread), so neither pays for a new TCP connection per call. Routes are measured
interleaved (every round calls each route once, in a shuffled order), so a burst of other work
on the machine slows all of them alike.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from helpers import client, rest_client

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


def raw_pixels(images: np.ndarray) -> np.ndarray:
    """The 0-255 uint8 pixels behind float images in [0, 1]."""
    return np.rint(np.asarray(images, dtype=np.float32) * 255).astype(np.uint8)


@dataclass
class Route:
    """One way to get predictions: encode, send and decode, timed separately."""

    name: str
    encode: Callable[[np.ndarray], bytes]
    send: Callable[[bytes], bytes]
    decode: Callable[[bytes], np.ndarray]
    close: Callable[[], None] = field(default=lambda: None)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.decode(self.send(self.encode(images)))


def grpc_route(
    channel: grpc.Channel,
    model: str,
    *,
    input_key: str = "image",
    output_key: str = "probabilities",
    uint8: bool = False,
    compression: grpc.Compression | None = None,
    signature_name: str = "serving_default",
    timeout: float = 30.0,
    name: str | None = None,
) -> Route:
    """Predict over gRPC with a TensorProto in `tensor_content` (float32, or uint8 pixels)."""
    call = channel.unary_unary(PREDICT_METHOD)  # bytes in, bytes out: we (de)serialise

    def encode(images: np.ndarray) -> bytes:
        values = raw_pixels(images) if uint8 else np.asarray(images, dtype=np.float32)
        request = client.make_predict_request(
            values, model, input_key, signature_name=signature_name
        )
        return request.SerializeToString()

    def send(payload: bytes) -> bytes:
        return call(payload, timeout=timeout, compression=compression)

    def decode(answer: bytes) -> np.ndarray:
        response = predict_pb2.PredictResponse.FromString(answer)
        return client.decode_tensor(response.outputs[output_key])

    default = "gRPC uint8" if uint8 else "gRPC"
    return Route(name or (default + (" gzip" if compression else "")), encode, send, decode)


def rest_route(
    base_url: str,
    model: str,
    *,
    uint8: bool = False,
    compress: bool = False,
    decimals: int | None = None,
    timeout: float = 30.0,
    name: str | None = None,
) -> Route:
    """Predict over REST with the row format, one keep-alive `requests.Session` per thread.

    `uint8` sends 0-255 integers (to a model that accepts them); `decimals` rounds floats;
    `compress` gzips the request body (`Content-Encoding: gzip`).
    """
    import requests

    url = rest_client.predict_url(base_url, model)
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            with lock:
                sessions.append(local.session)
        return local.session

    headers = {"Content-Type": "application/json"}
    if compress:
        headers["Content-Encoding"] = "gzip"

    def encode(images: np.ndarray) -> bytes:
        if uint8:
            rows = raw_pixels(images).tolist()
        elif decimals is not None:
            rows = np.round(np.asarray(images, dtype=np.float64), decimals).tolist()
        else:
            rows = np.asarray(images, dtype=np.float32).tolist()
        data = json.dumps({"instances": rows}).encode()
        return gzip.compress(data, rest_client.GZIP_LEVEL) if compress else data

    def send(payload: bytes) -> bytes:
        return rest_client.post(session(), url, payload, headers, timeout)

    def decode(answer: bytes) -> np.ndarray:
        return np.asarray(json.loads(answer)["predictions"], dtype=np.float32)

    def close() -> None:
        with lock:
            for each in sessions:
                each.close()
            sessions.clear()

    default = "REST uint8" if uint8 else "REST"
    if decimals is not None:
        default += f" {decimals} decimals"
    return Route(name or (default + (" gzip" if compress else "")), encode, send, decode, close)


# ------------------------------------------------------------------------------ latency
def time_repeated(call: Callable[[], object], count: int, warmup: int = 2) -> list[float]:
    """Seconds of each of `count` calls of `call()`, after `warmup` untimed ones."""
    from helpers.bench import time_calls

    return time_calls(call, count, warmup)


def timed_call(route: Route, images: np.ndarray) -> tuple[float, float, float]:
    """Seconds spent encoding, calling and decoding one request."""
    t0 = time.perf_counter()
    payload = route.encode(images)
    t1 = time.perf_counter()
    answer = route.send(payload)
    t2 = time.perf_counter()
    route.decode(answer)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def interleaved_latency(
    routes: Sequence[Route],
    batches: Mapping[int, np.ndarray],
    calls: int,
    *,
    warmup: int = 3,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
):
    """`calls` timed calls per (route, batch size), interleaved; returns a pandas DataFrame
    with one row per call: route, batch, encode_ms, call_ms, decode_ms, total_ms."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    pairs = [(route, size) for size in batches for route in routes]
    for route, size in pairs:
        for _ in range(warmup):
            route(batches[size])
    rows = []
    for done in range(calls):
        for index in rng.permutation(len(pairs)):
            route, size = pairs[index]
            encode_s, call_s, decode_s = timed_call(route, batches[size])
            rows.append((route.name, size, encode_s, call_s, decode_s))
        if progress is not None:
            progress(done + 1, calls)
    frame = pd.DataFrame(rows, columns=["route", "batch", "encode_ms", "call_ms", "decode_ms"])
    frame[["encode_ms", "call_ms", "decode_ms"]] *= 1000.0
    frame["total_ms"] = frame[["encode_ms", "call_ms", "decode_ms"]].sum(axis=1)
    return frame


def latency_summary(frame):
    """Per route and batch size: calls, p50/p90/p99 of the whole call, median of each step."""
    grouped = frame.groupby(["batch", "route"], sort=True)
    summary = grouped["total_ms"].describe(percentiles=[0.5, 0.9, 0.99])
    table = summary[["count", "50%", "90%", "99%"]].rename(
        columns={"count": "calls", "50%": "p50_ms", "90%": "p90_ms", "99%": "p99_ms"}
    )
    table["calls"] = table["calls"].astype(int)
    for step in ("encode_ms", "call_ms", "decode_ms"):
        table[f"median_{step}"] = grouped[step].median()
    return table


# ------------------------------------------------------------------------------ server side
def embedded_server_steps(
    routes: Mapping[str, Route],
    images: np.ndarray,
    probabilities: np.ndarray,
    *,
    input_key: str = "image",
    output_key: str = "probabilities",
    repeats: int = 5,
) -> dict[str, dict[str, float]]:
    """Median milliseconds the embedded server spends reading a request and writing its answer.

    `routes` maps "gRPC" and "REST" to the routes whose request bodies are measured. The steps
    are timed in this process with the embedded server's own functions (`helpers.server`), on
    the very bytes each route sends:

    - REST parse: the JSON body read as TF Serving reads it (`json_tensors.parse_request`; a body
      of `json_document.PARSE_ELSEWHERE_BYTES` or more goes to a child process and its tensor
      comes back as one array, as in the server's predict route) and turned into a float32
      tensor (`predict_inputs`);
    - REST write: the answer written as TF Serving's JSON (`predict_response`), then encoded;
    - gRPC parse: `PredictRequest.FromString` (grpcio does this before the servicer runs) and
      the TensorProto turned into an array (`tensors.decode`);
    - gRPC write: the output put into a PredictResponse (`tensors.encode`, `float_val` as TF
      Serving answers) and serialised.

    Returns {"gRPC": {"parse_ms": ..., "write_ms": ...}, "REST": {...}}.
    """
    from tensorflow.core.framework import types_pb2

    from helpers.server import json_document, json_tensors, tensors

    missing = {"gRPC", "REST"} - set(routes)
    if missing:
        raise ValueError(f"routes needs a route for each of gRPC and REST; missing: {missing}")
    outputs = {output_key: np.asarray(probabilities, dtype=np.float32)}
    rest_body = routes["REST"].encode(images)
    grpc_body = routes["gRPC"].encode(images)

    def rest_parse() -> None:
        doc = json_tensors.parse_request(rest_body, dense=True)
        booleans = b"true" in rest_body or b"false" in rest_body
        json_tensors.predict_inputs(doc, {input_key: types_pb2.DT_FLOAT}, has_booleans=booleans)

    def rest_write() -> None:
        json_tensors.predict_response(outputs, True).encode()

    def grpc_parse() -> None:
        request = predict_pb2.PredictRequest.FromString(grpc_body)
        tensors.decode(request.inputs[input_key], input_key)

    def grpc_write() -> None:
        response = predict_pb2.PredictResponse()
        tensors.encode(outputs[output_key], response.outputs[output_key])
        response.SerializeToString()

    steps = {
        "REST": {"parse_ms": rest_parse, "write_ms": rest_write},
        "gRPC": {"parse_ms": grpc_parse, "write_ms": grpc_write},
    }
    try:
        return {
            protocol: {
                step: float(np.median(time_repeated(call, repeats))) * 1000.0
                for step, call in calls.items()
            }
            for protocol, calls in steps.items()
        }
    finally:
        json_document.stop_parser_process()


# ------------------------------------------------------------------------------ throughput
#: Calls each thread makes at least, however short the time asked for: a busy machine can spend
#: a whole short window on one call, and a rate measured over no call says nothing.
MIN_CALLS_PER_THREAD = 5


def throughput(
    route: Route,
    images: np.ndarray,
    concurrency: int,
    seconds: float,
    *,
    min_calls: int = MIN_CALLS_PER_THREAD,
) -> tuple[float, int]:
    """Closed loop: `concurrency` threads call `route` back to back.

    Every thread first warms its connection; then all start together and call until `seconds`
    have passed *and* each has made at least `min_calls` calls. Returns (calls per second,
    errors); the rate counts successful calls only. The threads share the route's channel
    (gRPC) or hold one keep-alive session each (REST).
    """
    if concurrency < 1 or min_calls < 1:
        raise ValueError(
            f"concurrency ({concurrency}) and min_calls ({min_calls}) must be at least 1"
        )
    counts = [0] * concurrency
    errors = [0] * concurrency
    window: dict[str, float] = {}

    def start_clock() -> None:  # run once, when every thread is warm, before any is released
        window["started"] = time.perf_counter()
        window["stop_at"] = window["started"] + seconds

    warmed = threading.Barrier(concurrency, action=start_clock)

    def worker(slot: int) -> None:
        try:
            route(images)  # warm this thread's connection, outside the timed window
        except (grpc.RpcError, rest_client.RestError, OSError):
            errors[slot] += 1
        finally:
            warmed.wait()
        made = 0  # calls made in the timed window, answered or failed
        while made < min_calls or time.perf_counter() < window["stop_at"]:
            made += 1
            try:
                route(images)
                counts[slot] += 1
            except (grpc.RpcError, rest_client.RestError, OSError):
                errors[slot] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - window["started"]
    return sum(counts) / elapsed, sum(errors)


def throughput_table(
    routes: Sequence[Route],
    images: np.ndarray,
    concurrencies: Sequence[int] = (1, 4, 16),
    seconds: float = 1.0,
    *,
    min_calls: int = MIN_CALLS_PER_THREAD,
):
    """Calls per second of each route at each concurrency (routes alternate at each level)."""
    import pandas as pd

    rows = []
    for concurrency in concurrencies:
        for route in routes:
            rate, errors = throughput(route, images, concurrency, seconds, min_calls=min_calls)
            rows.append((route.name, concurrency, rate, rate * len(images), errors))
    return pd.DataFrame(
        rows, columns=["route", "concurrency", "calls_per_s", "images_per_s", "errors"]
    )


# ------------------------------------------------------------------------------ bytes
def gzip_size(data: bytes) -> int:
    """Bytes after gzip at the level the REST routes use."""
    return len(gzip.compress(data, rest_client.GZIP_LEVEL))


def message_sizes(images: np.ndarray, encoders: Mapping[str, Callable[[np.ndarray], bytes]]):
    """Request body bytes of each encoding, plain and gzipped."""
    return {
        name: (len(body := encode(images)), gzip_size(body)) for name, encode in encoders.items()
    }


def wire_bytes(relay, route: Route, images: np.ndarray) -> tuple[int, int]:
    """(sent, received) TCP payload bytes of one warm call of `route` through `relay`
    (a `helpers.wire.ByteCounter`)."""
    route(images)  # warm: connection set-up is not part of a call
    return relay.measure(lambda: route(images))


def ratio_table(summary, grpc_name: str = "gRPC", rest_name: str = "REST"):
    """REST / gRPC for p50, p90 and p99 at each batch size (above 1: gRPC is faster)."""
    import pandas as pd

    rows = {}
    for size in sorted({batch for batch, _ in summary.index}):
        g = summary.loc[(size, grpc_name)]
        r = summary.loc[(size, rest_name)]
        rows[size] = {f"{q} REST/gRPC": r[f"{q}_ms"] / g[f"{q}_ms"] for q in ("p50", "p90", "p99")}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "batch"
    return frame


__all__ = [
    "Route",
    "grpc_route",
    "rest_route",
    "time_repeated",
    "timed_call",
    "interleaved_latency",
    "latency_summary",
    "embedded_server_steps",
    "throughput",
    "throughput_table",
    "message_sizes",
    "wire_bytes",
    "ratio_table",
    "raw_pixels",
    "gzip_size",
]
