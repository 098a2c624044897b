"""The course's own small gRPC service: one RPC of each kind, on handwritten digits.

Notebook 01 uses it to show gRPC itself before TensorFlow Serving enters: the four call
kinds, deadlines, metadata, status codes and rich error details. The service has no model;
its answers come from simple pixel rules (ink, bounding box, closed loops), so they are
quick and known in advance.

    with start_digits_server(images, labels) as server:
        channel = grpc.insecure_channel(server.target)
        stub = digits_grpc.DigitsStub(channel)
        stub.Measure(to_message(images[0]), timeout=5)

The messages and stubs are generated from `helpers/protos/digits.proto` at run time
(`helpers.protos.load_proto`); `digits_pb2` and `digits_grpc` below are those modules.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import grpc
import numpy as np
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from scipy import ndimage

from helpers.protos import load_proto

digits_pb2, digits_grpc = load_proto("digits")

#: Full name of the service, as it appears in method paths (`/course.digits.Digits/Measure`).
SERVICE_NAME = digits_pb2.DESCRIPTOR.services_by_name["Digits"].full_name
#: Pixels at or above this value count as ink.
INK_THRESHOLD = 128
#: Enclosed paper regions smaller than this many pixels are specks, not loops.
MIN_HOLE_PIXELS = 4
#: The digits whose usual handwritten shape has this many closed loops (4 is written both ways).
DIGITS_BY_HOLES = {0: (1, 2, 3, 4, 5, 7), 1: (0, 4, 6, 9), 2: (8,)}
#: The longest pause StreamDigits accepts between two images.
MAX_DELAY_MS = 10_000
#: Metadata keys the service reads and writes (gRPC metadata keys are lower case).
REQUEST_ID_KEY = "x-request-id"
SERVER_TIME_KEY = "x-server-time-ms"
IMAGES_SEEN_KEY = "x-images-seen"


# --- images <-> messages ---------------------------------------------------------------------


def to_uint8(image) -> np.ndarray:
    """One image as a 2-D uint8 array: accepts 0-255 pixels or floats in [0, 1] (the model's input).

    Shapes (H, W) and (H, W, 1) are accepted; floats in [0, 1] are scaled by 255 and rounded.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(
            f"expected one image of shape (H, W) or (H, W, 1), got shape {np.asarray(image).shape}"
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"expected numeric pixels, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if array.min() < 0 or array.max() > 1:
            raise ValueError(
                f"float pixels must lie in [0, 1], got [{array.min():g}, {array.max():g}]; "
                "pass raw 0-255 pixels as an integer array"
            )
        return np.rint(array * 255).astype(np.uint8)
    if array.min() < 0 or array.max() > 255:
        raise ValueError(f"pixels must lie in 0..255, got [{array.min()}, {array.max()}]")
    return array.astype(np.uint8)


def to_message(image, *, image_id: str = "", label: int | None = None):
    """Build a `DigitImage` message from one image (see `to_uint8` for what is accepted)."""
    pixels = to_uint8(image)
    message = digits_pb2.DigitImage(
        id=image_id, height=pixels.shape[0], width=pixels.shape[1], pixels=pixels.tobytes()
    )
    if label is not None:
        message.label = int(label)
    return message


def to_messages(images, labels=None, *, prefix: str = "img") -> Iterator:
    """`DigitImage` messages for a batch, ids `<prefix>-00000`, ... (a generator: a stream)."""
    for index, image in enumerate(images):
        label = None if labels is None else int(labels[index])
        yield to_message(image, image_id=f"{prefix}-{index:05d}", label=label)


def from_message(message) -> np.ndarray:
    """The pixels of a `DigitImage` as a (height, width) uint8 array."""
    problem = image_problem(message)
    if problem:
        raise ValueError(problem[1])
    return np.frombuffer(message.pixels, dtype=np.uint8).reshape(message.height, message.width)


def image_problem(message) -> tuple[str, str] | None:
    """What is wrong with a `DigitImage` as (field, description), or None when it is valid."""
    name = f"DigitImage {message.id!r}" if message.id else "DigitImage"
    if message.height == 0 or message.width == 0:
        size = f"{message.height} x {message.width}"
        return "height", f"{name}: height and width must be positive, got {size}"
    expected = message.height * message.width
    if len(message.pixels) != expected:
        return "pixels", (
            f"{name}: pixels has {len(message.pixels)} bytes but height x width is "
            f"{message.height} x {message.width} = {expected}"
        )
    if message.HasField("label") and message.label > 9:
        return "label", f"{name}: label must be a digit 0-9, got {message.label}"
    return None


# --- the pixel rules -------------------------------------------------------------------------


def count_holes(ink: np.ndarray) -> int:
    """Closed loops in a boolean ink mask: 4-connected paper regions that do not reach the edge."""
    paper = np.pad(~np.asarray(ink, dtype=bool), 1, constant_values=True)
    regions, count = ndimage.label(paper)
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    outside = regions[0, 0]
    inside = [region for region in range(1, count + 1) if region != outside]
    return sum(1 for region in inside if sizes[region] >= MIN_HOLE_PIXELS)


def measure(pixels: np.ndarray, *, image_id: str = "", sequence: int = 0):
    """`DigitStats` of one uint8 image: ink, mean intensity, bounding box, loops, candidates."""
    pixels = np.asarray(pixels)
    ink = pixels >= INK_THRESHOLD
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    box = digits_pb2.BoundingBox()
    if rows.size:
        box = digits_pb2.BoundingBox(
            top=rows[0], left=cols[0], bottom=rows[-1] + 1, right=cols[-1] + 1
        )
    holes = count_holes(ink) if rows.size else 0
    return digits_pb2.DigitStats(
        id=image_id,
        ink_pixels=int(ink.sum()),
        ink_fraction=float(ink.mean()),
        mean_intensity=float(pixels.mean()),
        box=box,
        holes=holes,
        candidates=DIGITS_BY_HOLES.get(holes, ()),
        sequence=sequence,
    )


# --- the service -----------------------------------------------------------------------------


def _abort_invalid(context: grpc.ServicerContext, field: str, description: str) -> None:
    """End the call with INVALID_ARGUMENT, a clear message and a google.rpc.BadRequest detail."""
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=description, details=[detail]
    )
    context.abort_with_status(rpc_status.to_status(status))


class DigitsServicer(digits_grpc.DigitsServicer):
    """The Digits service. `images`/`labels` are the dataset StreamDigits serves from.

    `calls` counts calls per method; `last_stream` says how the latest StreamDigits call
    ended (images sent, and whether the client went away first), so a notebook can show
    what a deadline does on the server side.
    """

    def __init__(self, images: np.ndarray | None = None, labels: Iterable[int] | None = None):
        self.images = None if images is None else np.stack([to_uint8(i) for i in images])
        self.labels = None if labels is None else np.asarray(list(labels), dtype=np.int64)
        if self.labels is not None and (
            self.images is None or len(self.labels) != len(self.images)
        ):
            raise ValueError("labels need images, one label per image")
        self.calls: Counter[str] = Counter()
        self.last_stream: dict[str, object] = {}
        self._lock = threading.Lock()

    # Metadata: echo the caller's request id at the start, report timing at the end.
    def _begin(self, method: str, context: grpc.ServicerContext) -> float:
        with self._lock:
            self.calls[method] += 1
        request_id = dict(context.invocation_metadata()).get(REQUEST_ID_KEY)
        if request_id is not None:
            context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        return time.perf_counter()

    @staticmethod
    def _finish(context: grpc.ServicerContext, started: float, images_seen: int) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        context.set_trailing_metadata(
            ((SERVER_TIME_KEY, f"{elapsed_ms:.3f}"), (IMAGES_SEEN_KEY, str(images_seen)))
        )

    def _pixels(self, message, context: grpc.ServicerContext) -> np.ndarray:
        problem = image_problem(message)
        if problem:
            _abort_invalid(context, *problem)
        return from_message(message)

    def Measure(self, request, context):  # noqa: N802 (name set by the .proto)
        """Unary: measure one image."""
        started = self._begin("Measure", context)
        stats = measure(self._pixels(request, context), image_id=request.id, sequence=1)
        self._finish(context, started, 1)
        return stats

    def StreamDigits(self, request, context):  # noqa: N802
        """Server streaming: the dataset's images that match the query, one message each."""
        started = self._begin("StreamDigits", context)
        if self.images is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this server has no dataset: start it with start_digits_server(images, labels)",
            )
        if request.HasField("label") and request.label > 9:
            _abort_invalid(context, "label", f"label must be a digit 0-9, got {request.label}")
        if request.delay_ms > MAX_DELAY_MS:
            problem = f"delay_ms must be at most {MAX_DELAY_MS}, got {request.delay_ms}"
            _abort_invalid(context, "delay_ms", problem)
        if request.HasField("label"):
            if self.labels is None:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "this server's dataset has no labels, so it cannot filter by label",
                )
            matches = np.flatnonzero(self.labels == request.label)
        else:
            matches = np.arange(len(self.images))
        if request.offset and request.offset >= len(matches):
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"offset {request.offset} is past the {len(matches)} matching images",
            )
        selected = matches[request.offset :]
        if request.limit:
            selected = selected[: request.limit]

        # A deadline or a cancel on the client side ends the call; the callback wakes the
        # pause at once, and the loop stops instead of working for nobody.
        gone = threading.Event()
        context.add_callback(gone.set)
        sent = 0
        self.last_stream = {"requested": len(selected), "sent": 0, "client_left": False}
        for index in selected:
            if request.delay_ms and gone.wait(request.delay_ms / 1000):
                break
            if not context.is_active():
                break
            label = None if self.labels is None else int(self.labels[index])
            yield to_message(self.images[index], image_id=f"dataset-{index:05d}", label=label)
            sent += 1
            self.last_stream["sent"] = sent
        self.last_stream["client_left"] = not context.is_active()
        if context.is_active():
            self._finish(context, started, sent)

    def Summarize(self, request_iterator, context):  # noqa: N802
        """Client streaming: read every image the client sends, then answer once."""
        started = self._begin("Summarize", context)
        count, pixel_bytes, ink_total = 0, 0, 0.0
        label_counts: Counter[int] = Counter()
        total: np.ndarray | None = None
        for message in request_iterator:
            pixels = self._pixels(message, context)
            if total is None:
                total = np.zeros(pixels.shape, dtype=np.float64)
            elif pixels.shape != total.shape:
                _abort_invalid(
                    context,
                    "height",
                    f"DigitImage {message.id!r} is {pixels.shape[0]} x {pixels.shape[1]} but the "
                    f"first image was {total.shape[0]} x {total.shape[1]}; send one size per call",
                )
            total += pixels
            count += 1
            pixel_bytes += len(message.pixels)
            ink_total += float((pixels >= INK_THRESHOLD).mean())
            if message.HasField("label"):
                label_counts[message.label] += 1
        summary = digits_pb2.BatchSummary(
            count=count, label_counts=dict(label_counts), pixel_bytes=pixel_bytes
        )
        if count:
            mean = np.rint(total / count).astype(np.uint8)
            summary.mean_ink_fraction = ink_total / count
            summary.mean_pixels = mean.tobytes()
            summary.height, summary.width = mean.shape
        self._finish(context, started, count)
        return summary

    def MeasureEach(self, request_iterator, context):  # noqa: N802
        """Bidirectional streaming: answer each image as soon as it arrives."""
        started = self._begin("MeasureEach", context)
        sequence = 0
        for message in request_iterator:
            sequence += 1
            yield measure(self._pixels(message, context), image_id=message.id, sequence=sequence)
        self._finish(context, started, sequence)


# --- running it ------------------------------------------------------------------------------


class DigitsServer:
    """A running Digits server. Stop it with `.stop()` or use it as a context manager."""

    def __init__(self, server: grpc.Server, host: str, port: int, servicer: DigitsServicer):
        self.server, self.host, self.port, self.servicer = server, host, port, servicer
        self._stopped = False

    @property
    def target(self) -> str:
        """The address a client channel connects to, e.g. `127.0.0.1:50051`."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return not self._stopped

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop taking calls, give running calls `grace` seconds, then free the port. Idempotent."""
        if not self._stopped:
            self._stopped = True
            self.server.stop(grace).wait()

    def __enter__(self) -> DigitsServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DigitsServer {self.target} {state}>"


def start_digits_server(
    images: np.ndarray | None = None,
    labels: Iterable[int] | None = None,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    max_workers: int = 4,
) -> DigitsServer:
    """Start the Digits service (with server reflection) on `host:port` and return at once.

    port=0 lets the operating system pick a free port (read it from `.port`). The server
    only listens on this machine (127.0.0.1) and speaks plaintext: fine for a lesson,
    never for a network (notebook 08 adds TLS).
    """
    from concurrent import futures

    servicer = DigitsServicer(images, labels)
    # so_reuseport=0: a port already in use is an error here, not a silent second listener.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="digits"),
        options=[("grpc.so_reuseport", 0)],
    )
    digits_grpc.add_DigitsServicer_to_server(servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        bound, cause = 0, error
    else:
        cause = None
    if not bound:
        server.stop(None)
        raise OSError(
            f"cannot listen on {host}:{port} (in use or not allowed); pass port=0 for a free port"
        ) from cause
    server.start()
    return DigitsServer(server, host, bound, servicer)


def status_details(error: grpc.RpcError) -> list[str]:
    """The rich error details of a failed call (google.rpc.Status), as readable lines.

    Returns [] when the server sent only a code and a message.
    """
    status = rpc_status.from_call(error)
    if status is None:
        return []
    lines = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            lines += [f"{v.field}: {v.description}" for v in bad_request.field_violations]
        else:
            lines.append(f"{detail.TypeName()} ({len(detail.value)} bytes)")
    return lines
