"""Measure the embedded model server on this machine: `python -m helpers.bench`.

One run, one model, every number the course quotes:

- the in-process signature call (the floor a network call cannot beat);
- one-image Predict over gRPC and over REST (p50/p99, reused channel and connection);
- closed-loop throughput at concurrency 1, 4 and 16, without and with server-side batching;
- a sustained run at a fixed request rate (default 300 req/s for 60 s), counting errors;
- cold start: from process start to the first successful Predict.

The load generator runs in this process with grpc.aio while the server runs in its own, so the
two never share a GIL. Numbers depend on the machine and on whatever else runs on it: read them
as this machine's numbers, not as constants.

    python -m helpers.bench            # the full run (about two minutes)
    python -m helpers.bench --quick    # a short smoke run (about twenty seconds)

`--bounded-load` runs the hostile, bounded load instead (loopback only; every part bounded in
calls and seconds): 32 callers for `--load-seconds` on gRPC and on REST (calls, errors,
p50/p99, server RSS before and after), a rolling version update under that load (failed calls
must be 0), a 50 MB REST body with a gRPC probe beside it, gzip bombs (peak RSS growth), and
300 slow half-sent requests while both ports are probed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from helpers import config

#: The full run's defaults are the course's goals; --quick shortens everything.
DEFAULTS = {"requests": 2000, "duration": 5.0, "rate": 300.0, "sustain": 60.0}
QUICK = {"requests": 300, "duration": 1.0, "rate": 300.0, "sustain": 5.0}
CONCURRENCY = (1, 4, 16)
#: Throughput is measured in this many alternating rounds per server; the median is reported.
ROUNDS = 3
#: No timeout: a batch never waits for company, so a lone call pays nothing; one batch thread
#: lets the calls that arrive while it runs gather into the next batch.
BATCHING_PARAMETERS = """\
max_batch_size { value: 32 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 1 }
"""


@dataclass
class Row:
    """One line of the results table."""

    measurement: str
    value: str
    detail: str = ""
    numbers: dict[str, float] = field(default_factory=dict)


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ms = np.asarray(seconds) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def time_calls(call: Callable[[], Any], count: int, warmup: int = 20) -> list[float]:
    """Wall time of `count` sequential calls (after `warmup` untimed ones)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def image_batch(count: int = 1) -> np.ndarray:
    """MNIST-shaped inputs in [0, 1] (the values do not change the timing)."""
    return np.random.default_rng(0).random((count, 28, 28, 1), dtype=np.float32)


def predict_request(model_name: str, image: np.ndarray):
    """A PredictRequest built from NumPy bytes (tensor_content), as a fast client builds it."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.inputs["image"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in image.shape]
            ),
            tensor_content=image.tobytes(),
        )
    )
    return request


# ------------------------------------------------------------------------------ measurements
def _latency_row(measurement: str, times_ms: Sequence[float]) -> Row:
    """A table row of one latency measurement: p50 as the value, p99 as the detail."""
    p50, p99 = percentiles(times_ms)
    return Row(
        measurement, f"p50 {p50:.3f} ms", f"p99 {p99:.3f} ms", {"p50_ms": p50, "p99_ms": p99}
    )


def measure_in_process(version_path: Path, count: int) -> Row:
    """The SavedModel's signature called in this process: the floor for any served call."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_path)).signatures["serving_default"]
    image = tf.constant(image_batch(1))
    return _latency_row(
        "in-process signature call", time_calls(lambda: signature(image=image), count)
    )


def measure_grpc_latency(target: str, model_name: str, count: int) -> Row:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_request(model_name, image_batch(1))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        times = time_calls(lambda: stub.Predict(request, timeout=10), count)
    return _latency_row("gRPC Predict, one image", times)


def measure_rest_latency(rest_url: str, model_name: str, count: int) -> Row:
    import requests

    body = json.dumps({"instances": image_batch(1).tolist()})
    url = f"{rest_url}/v1/models/{model_name}:predict"
    with requests.Session() as session:

        def call() -> None:
            response = session.post(url, data=body, timeout=10)
            response.raise_for_status()

        times = time_calls(call, count)
    return _latency_row("REST predict, one image", times)


async def _closed_loop(target: str, model_name: str, concurrency: int, seconds: float):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_request(model_name, image_batch(1))
    done = 0
    errors = 0
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(10):  # warm the connection
            await stub.Predict(request, timeout=10)
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    await stub.Predict(request, timeout=10)
                    done += 1
                    latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done / elapsed, errors, latencies


def run_coroutine(coroutine):
    """`asyncio.run`, also from code that already runs in an event loop (a Jupyter kernel does):
    there the coroutine runs in a worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def measure_throughput(
    target: str, model_name: str, concurrency: int, seconds: float, label: str
) -> Row:
    """Closed loop: `concurrency` callers, each sending its next call when the last one returns."""
    rate, errors, latencies = run_coroutine(_closed_loop(target, model_name, concurrency, seconds))
    p50, p99 = percentiles(latencies) if latencies else (float("nan"), float("nan"))
    return Row(
        f"throughput, concurrency {concurrency:>2}, {label}",
        f"{rate:,.0f} req/s",
        f"p50 {p50:.2f} ms, {errors} errors",
        {
            "req_per_s": rate,
            "errors": errors,
            "p50_ms": p50,
            "p99_ms": p99,
            "concurrency": concurrency,
        },
    )


async def _open_loop(target: str, model_name: str, rate: float, seconds: float):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_request(model_name, image_batch(1))
    latencies: list[float] = []
    failures: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        await stub.Predict(request, timeout=10)

        async def one() -> None:
            started = time.perf_counter()
            try:
                await stub.Predict(request, timeout=10)
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

        tasks = []
        total = int(rate * seconds)
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return total / elapsed, latencies, failures


def measure_sustained(target: str, model_name: str, rate: float, seconds: float) -> Row:
    achieved, latencies, failures = run_coroutine(_open_loop(target, model_name, rate, seconds))
    p50, p99 = percentiles(latencies) if latencies else (float("nan"), float("nan"))
    detail = f"{len(failures)} errors, p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    if failures:
        detail += f" (first: {failures[0]})"
    return Row(
        f"sustained {rate:.0f} req/s for {seconds:.0f} s",
        f"{achieved:,.0f} req/s",
        detail,
        {"req_per_s": achieved, "errors": len(failures), "p50_ms": p50, "p99_ms": p99},
    )


def measure_cold_start(base_path: Path, model_name: str, extra_flags: Sequence[str] = ()):
    """Start a server and time process start -> first successful Predict. Returns (row, server)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from helpers.server.process import start_server

    started = time.perf_counter()
    server = start_server(base_path, model_name, extra_flags=extra_flags, wait=False)
    request = predict_request(model_name, image_batch(1))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while True:
            try:
                stub.Predict(request, timeout=2)
                break
            except grpc.RpcError:
                if not server.is_running():
                    server.wait_until_available(model_name, timeout=1)  # raises with the log
                if time.perf_counter() - started > 120:
                    server.stop()
                    raise TimeoutError("the server did not answer a Predict within 120 s") from None
                time.sleep(0.02)
    seconds = time.perf_counter() - started
    return Row(
        "cold start (process start -> first Predict)",
        f"{seconds:.2f} s",
        numbers={"seconds": seconds},
    ), server


# ------------------------------------------------------------------------------ the run
def _median_row(rows: list[Row]) -> Row:
    """The round with the median throughput, its errors counted over every round."""
    ordered = sorted(rows, key=lambda r: r.numbers["req_per_s"])
    middle = ordered[len(ordered) // 2]
    errors = sum(r.numbers["errors"] for r in rows)
    numbers = {**middle.numbers, "errors": errors, "rounds": len(rows)}
    detail = f"p50 {middle.numbers['p50_ms']:.2f} ms, {errors} errors, median of {len(rows)} rounds"
    return Row(middle.measurement, middle.value, detail, numbers)


def run(
    base_path: Path,
    model_name: str,
    *,
    requests: int,
    duration: float,
    rate: float,
    sustain: float,
    rounds: int = ROUNDS,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Run every measurement and return the rows (servers are started and stopped here).

    The throughput of the unbatched and the batched server is measured in alternating rounds,
    so a burst of other work on the machine slows both, not just one of them.
    """
    from helpers.server.process import start_server

    rows: list[Row] = []
    versions = sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit())
    version_path = base_path / str(versions[-1])

    log("cold start ...")
    row, server = measure_cold_start(base_path, model_name)
    rows.append(row)
    with tempfile.TemporaryDirectory() as folder:
        params = Path(folder) / "batching.config"
        params.write_text(BATCHING_PARAMETERS)
        batched = None
        try:
            log("in-process floor ...")
            rows.append(measure_in_process(version_path, requests))
            log("gRPC latency ...")
            rows.append(measure_grpc_latency(server.grpc_target, model_name, requests))
            log("REST latency ...")
            rows.append(measure_rest_latency(server.rest_url, model_name, requests))
            log(f"sustained {rate:.0f} req/s for {sustain:.0f} s ...")
            sustained = measure_sustained(server.grpc_target, model_name, rate, sustain)
            batched = start_server(
                base_path,
                model_name,
                rest_port=0,
                extra_flags=["--enable_batching", f"--batching_parameters_file={params}"],
            )
            for concurrency in CONCURRENCY:
                log(f"throughput, concurrency {concurrency}, {rounds} rounds each way ...")
                plain, merged = [], []
                for _ in range(rounds):
                    plain.append(
                        measure_throughput(
                            server.grpc_target, model_name, concurrency, duration, "no batching"
                        )
                    )
                    merged.append(
                        measure_throughput(
                            batched.grpc_target, model_name, concurrency, duration, "batching"
                        )
                    )
                rows += [_median_row(plain), _median_row(merged)]
            rows.append(sustained)
        finally:
            server.stop()
            if batched is not None:
                batched.stop()
    return rows


def verdicts(rows: list[Row]) -> list[str]:
    """The course's goals, checked against this run's numbers."""
    by_name = {r.measurement: r.numbers for r in rows}
    grpc_p50 = by_name["gRPC Predict, one image"]["p50_ms"]
    floor = by_name["in-process signature call"]["p50_ms"]
    c4 = by_name["throughput, concurrency  4, no batching"]["req_per_s"]
    c16 = by_name["throughput, concurrency 16, no batching"]["req_per_s"]
    c16b = by_name["throughput, concurrency 16, batching"]["req_per_s"]
    sustained = next(r.numbers for r in rows if r.measurement.startswith("sustained"))
    cold = by_name["cold start (process start -> first Predict)"]["seconds"]

    def mark(ok: bool) -> str:
        return "[OK]  " if ok else "[MISS]"

    return [
        f"{mark(grpc_p50 <= 2.0)} gRPC one-image p50 {grpc_p50:.2f} ms <= 2 ms",
        f"{mark(grpc_p50 - floor <= 1.0)} gRPC p50 within 1 ms of in-process "
        f"({grpc_p50 - floor:+.2f} ms)",
        f"{mark(c4 >= 1500)} {c4:,.0f} req/s at concurrency 4 >= 1,500",
        f"{mark(c16b > c16)} batching at concurrency 16: {c16b:,.0f} vs {c16:,.0f} req/s",
        f"{mark(sustained['errors'] == 0)} {sustained['errors']:.0f} errors in the sustained run",
        f"{mark(cold <= 8.0)} cold start {cold:.2f} s <= 8 s",
    ]


def format_table(rows: list[Row]) -> str:
    width = max(len(r.measurement) for r in rows)
    value_width = max(len(r.value) for r in rows)
    lines = [
        f"{'measurement':<{width}}  {'value':>{value_width}}  detail",
        "-" * (width + value_width + 30),
    ]
    lines += [f"{r.measurement:<{width}}  {r.value:>{value_width}}  {r.detail}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.bench",
        description="Measure the embedded server: latency, throughput, batching, cold start.",
    )
    parser.add_argument(
        "--model-base-path",
        type=Path,
        default=None,
        help="folder of numeric versions (default: a freshly trained course model, "
        "see --model-kind)",
    )
    parser.add_argument(
        "--model-kind",
        choices=("cnn", "mlp"),
        default="cnn",
        help="the course model to train for the run when no --model-base-path is given "
        "(cnn: notebook 04's version 2, where inference is a real share of each call)",
    )
    parser.add_argument("--model-name", default=config.MODEL_NAME)
    parser.add_argument("--quick", action="store_true", help="short run for a smoke test")
    parser.add_argument("--requests", type=int, help="sequential calls per latency measurement")
    parser.add_argument("--duration", type=float, help="seconds per throughput measurement")
    parser.add_argument("--rate", type=float, help="requests per second of the sustained run")
    parser.add_argument("--sustain", type=float, help="seconds of the sustained run")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument(
        "--bounded-load", action="store_true", help="run the bounded hostile load instead"
    )
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=LOAD_SECONDS,
        help="seconds of each sustained part of --bounded-load",
    )
    args = parser.parse_args(argv)
    if args.bounded_load:
        if not 0 < args.load_seconds <= 600:
            parser.error("--load-seconds must be between 0 and 600")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return _bounded_load_main(args)

    settings = dict(QUICK if args.quick else DEFAULTS)
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if (
        settings["requests"] < 1
        or settings["duration"] <= 0
        or settings["rate"] <= 0
        or settings["sustain"] <= 0
    ):
        parser.error("--requests, --duration, --rate and --sustain must be positive")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory(prefix="course-bench-") as scratch:
        base_path = args.model_base_path
        if base_path is None:
            from helpers.export import ensure_model

            print(f"Training the course's '{args.model_kind}' model for the run ...", flush=True)
            base_path = ensure_model(
                args.model_name, kind=args.model_kind, base_dir=scratch, epochs=1
            ).parent
        return _report(parser, args, base_path.resolve(), settings)


def _report(parser, args, base_path: Path, settings: dict) -> int:
    """Check the model folder, run every measurement and print the table and verdicts."""
    if not base_path.is_dir() or not any(p.name.isdigit() for p in base_path.iterdir()):
        parser.error(f"{base_path} holds no numeric version folder (e.g. {base_path}/1/)")

    print(
        f"Benchmarking {args.model_name} from {base_path} on {os.cpu_count()} cores "
        f"({'quick' if args.quick else 'full'} run) ...",
        flush=True,
    )
    rows = run(base_path, args.model_name, log=lambda m: print(f"  {m}", flush=True), **settings)
    print()
    print(format_table(rows))
    print()
    print("\n".join(verdicts(rows)))
    print(
        "\nOther programs running on this machine slow these numbers down; compare runs made "
        "on a quiet machine."
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


# ------------------------------------------------------------------------------ bounded load
#: Callers of the sustained loads, and the bounded-load defaults.
LOAD_CALLERS = 32
LOAD_SECONDS = 60.0
BIG_BODY_BYTES = 50 * 1024 * 1024
SLOW_CLIENTS = 300


def _server_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process in kB, from /proc (Linux; {} elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def _reset_peak_memory(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux's clear_refs "5"), so a later peak is this
    part's own and not an earlier part's high-water mark."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then includes earlier parts


def _load(call: Callable[[], Any], callers: int, seconds: float, during=None) -> dict[str, Any]:
    """`callers` threads calling `call` in a loop for `seconds`; `during()` runs alongside."""
    import threading

    stop_at = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def caller() -> None:
        mine, failed = [], []
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                failed.append(f"{type(exc).__name__}: {str(exc)[:160]}")
            else:
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            errors.extend(failed)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    extra = during() if during is not None else None
    for thread in threads:
        thread.join(seconds + 120)
    p50, p99 = percentiles(latencies) if latencies else (float("nan"), float("nan"))
    return {
        "calls": len(latencies) + len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "p50_ms": p50,
        "p99_ms": p99,
        "during": extra,
    }


def bounded_load(base_path: Path, model_name: str, seconds: float, log=print) -> dict:
    """Run every bounded-load part against one embedded server; returns the numbers."""
    import shutil
    import socket
    import threading
    import zlib

    import grpc
    import requests
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from helpers.server.process import start_server

    results: dict[str, Any] = {"cores": os.cpu_count(), "seconds": seconds}
    server = start_server(base_path, model_name, timeout=180)
    try:
        pid = server.pid
        request = predict_request(model_name, image_batch(1))
        body = json.dumps({"instances": image_batch(1).tolist()})
        url = f"{server.rest_url}/v1/models/{model_name}:predict"
        local = threading.local()

        def grpc_call() -> None:
            if not hasattr(local, "stub"):
                local.channel = grpc.insecure_channel(server.grpc_target)
                local.stub = prediction_service_pb2_grpc.PredictionServiceStub(local.channel)
            local.stub.Predict(request, timeout=30)

        def rest_call() -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            reply = local.session.post(url, data=body, timeout=30)
            if reply.status_code != 200:
                raise RuntimeError(f"HTTP {reply.status_code}: {reply.text[:120]}")

        for name, call in (("grpc", grpc_call), ("rest", rest_call)):
            log(f"{LOAD_CALLERS} callers on {name} for {seconds:g} s ...")
            before = _server_memory_kb(pid)
            row = _load(call, LOAD_CALLERS, seconds)
            row.update(
                rss_before_kb=before.get("VmRSS"), rss_after_kb=_server_memory_kb(pid).get("VmRSS")
            )
            results[name] = row
            log(f"  {row}")

        # A rolling update: version N+1 appears (written elsewhere, then renamed), is loaded
        # and takes over, and the old one unloads, all while the callers keep calling.
        versions = sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit())
        newest = versions[-1]
        staging = base_path.parent / f".staging-{newest + 1}"

        def roll() -> dict:
            time.sleep(min(5.0, seconds / 4))
            shutil.copytree(base_path / str(newest), staging)
            staging.rename(base_path / str(newest + 1))
            started = time.monotonic()
            with grpc.insecure_channel(server.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                while time.monotonic() - started < seconds:
                    if stub.Predict(request, timeout=30).model_spec.version.value == newest + 1:
                        return {"new_version_serving_after_s": time.monotonic() - started}
                    time.sleep(0.05)
            return {"new_version_serving_after_s": None}

        log(f"rolling update to version {newest + 1} under {LOAD_CALLERS} gRPC callers ...")
        results["rolling_update"] = _load(grpc_call, LOAD_CALLERS, seconds, during=roll)
        log(f"  {results['rolling_update']}")

        # A 50 MB REST body, with a gRPC probe calling every 10 ms beside it.
        images = max(1, BIG_BODY_BYTES // len(body))
        big = (
            '{"instances": [' + ",".join([body[len('{"instances": [') : -2]] * images) + "]}"
        ).encode()
        probe_s: list[float] = []
        finished = threading.Event()

        def probe() -> None:
            with grpc.insecure_channel(server.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                while not finished.is_set():
                    started = time.perf_counter()
                    stub.Predict(request, timeout=30)
                    probe_s.append(time.perf_counter() - started)
                    time.sleep(0.01)

        log(f"one {len(big) / 1e6:.0f} MB REST body with a gRPC probe beside it ...")
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        before = _server_memory_kb(pid)
        started = time.monotonic()
        reply = requests.post(url, data=big, timeout=300)
        took = time.monotonic() - started
        finished.set()
        prober.join(60)
        p50, p99 = percentiles(probe_s)
        results["big_body"] = {
            "body_mb": len(big) / 1e6,
            "status": reply.status_code,
            "seconds": took,
            "probe_calls": len(probe_s),
            "probe_p50_ms": p50,
            "probe_p99_ms": p99,
            "rss_before_kb": before.get("VmRSS"),
            "rss_after_kb": _server_memory_kb(pid).get("VmRSS"),
        }
        log(f"  {results['big_body']}")
        del big

        # gzip bombs: 1 GB of zeros in about 1 MB, sent four at a time, twice.
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        chunk = bytes(16 * 1024 * 1024)
        bomb = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()
        log(f"gzip bombs ({len(bomb) / 1e6:.1f} MB inflating to 1 GB), 8 of them ...")
        _reset_peak_memory(pid)
        before = _server_memory_kb(pid)
        statuses: list[int] = []

        def send_bomb() -> None:
            answer = requests.post(
                url, data=bomb, headers={"Content-Encoding": "gzip"}, timeout=120
            )
            statuses.append(answer.status_code)

        for _ in range(2):
            bombers = [threading.Thread(target=send_bomb) for _ in range(4)]
            for thread in bombers:
                thread.start()
            for thread in bombers:
                thread.join(180)
        after = _server_memory_kb(pid)
        results["gzip_bombs"] = {
            "statuses": sorted(set(statuses)),
            "count": len(statuses),
            "peak_rss_before_kb": before.get("VmHWM"),
            "peak_rss_after_kb": after.get("VmHWM"),
            "peak_growth_mb": (after.get("VmHWM", 0) - before.get("VmHWM", 0)) / 1024,
        }
        log(f"  {results['gzip_bombs']}")

        # 300 clients that send half a request and then nothing, while both ports are probed.
        log(f"{SLOW_CLIENTS} slow half-sent requests, probing both ports ...")
        slow: list[socket.socket] = []
        refused = 0
        half = (
            f"POST /v1/models/{model_name}:predict HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 100000\r\n"
        ).encode()
        for index in range(SLOW_CLIENTS):
            port = server.address.rest_port if index % 2 == 0 else server.address.grpc_port
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(half if index % 2 == 0 else b"PRI * HTTP/2.0\r\n")
                slow.append(sock)
            except OSError:
                refused += 1
        probes = {"grpc_ok": 0, "rest_ok": 0, "failures": []}
        try:
            for _ in range(20):
                for kind, call in (("grpc_ok", grpc_call), ("rest_ok", rest_call)):
                    try:
                        call()
                        probes[kind] += 1
                    except Exception as exc:  # noqa: BLE001
                        probes["failures"].append(f"{kind}: {exc}"[:160])
                time.sleep(0.1)
        finally:
            for sock in slow:
                sock.close()
        results["slow_clients"] = {"opened": len(slow), "refused": refused, **probes}
        log(f"  {results['slow_clients']}")
    finally:
        server.stop()
    return results


def _bounded_load_main(args) -> int:
    with tempfile.TemporaryDirectory(prefix="course-load-") as scratch:
        base_path = args.model_base_path
        if base_path is None:
            from helpers.export import export_model
            from helpers.model import build_model

            print("Exporting an untrained 'mlp' course model for the run ...", flush=True)
            export_model(build_model(seed=0), args.model_name, 1, base_dir=scratch)
            base_path = Path(scratch) / args.model_name
        else:
            import shutil

            copy = Path(scratch) / args.model_name  # the rolling update writes a new version
            shutil.copytree(base_path, copy)
            base_path = copy
        results = bounded_load(
            base_path.resolve(),
            args.model_name,
            args.load_seconds,
            log=lambda m: print(m, flush=True),
        )
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
