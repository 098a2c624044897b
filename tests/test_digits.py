"""The Digits service of notebook 01: call kinds, metadata, deadlines, errors, exercises."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from helpers import payloads, protos
from helpers.digits import (
    IMAGES_SEEN_KEY,
    REQUEST_ID_KEY,
    SERVER_TIME_KEY,
    count_holes,
    digits_grpc,
    digits_pb2,
    from_message,
    measure,
    start_digits_server,
    status_details,
    to_message,
    to_messages,
    to_uint8,
)
from helpers.server.process import port_is_free
from helpers.solutions import ex01


def ring(size: int = 28, outer: int = 9, inner: int = 5, center=(14, 14)) -> np.ndarray:
    """A '0'-like ring of ink: one closed loop."""
    rows, cols = np.mgrid[:size, :size]
    distance = np.hypot(rows - center[0], cols - center[1])
    return np.where((distance <= outer) & (distance >= inner), 255, 0).astype(np.uint8)


def eight() -> np.ndarray:
    """Two small rings stacked: an '8' with two closed loops."""
    return np.maximum(
        ring(outer=6, inner=3, center=(8, 14)), ring(outer=6, inner=3, center=(20, 14))
    )


def bar() -> np.ndarray:
    """A vertical stroke: a '1' with no loop."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 13:16] = 200
    return image


#: A small dataset: 3 rings (label 0), 2 bars (label 1), 1 eight (label 8).
IMAGES = np.stack([ring(), bar(), ring(), eight(), bar(), ring()])
LABELS = np.array([0, 1, 0, 8, 1, 0])


@pytest.fixture(scope="module")
def server():
    with start_digits_server(IMAGES, LABELS) as running:
        yield running
    assert not running.running


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.target)
    yield digits_grpc.DigitsStub(channel)
    channel.close()


# --- images, messages and the pixel rules ---------------------------------------------------


def test_loops_are_counted_like_handwritten_digits():
    assert count_holes(ring() >= 128) == 1
    assert count_holes(eight() >= 128) == 2
    assert count_holes(bar() >= 128) == 0
    assert count_holes(np.zeros((28, 28), dtype=bool)) == 0


def test_measure_reports_ink_box_and_candidates():
    stats = measure(bar(), image_id="b", sequence=3)
    assert (stats.id, stats.sequence, stats.ink_pixels) == ("b", 3, 20 * 3)
    assert stats.ink_fraction == pytest.approx(60 / 784)
    assert stats.mean_intensity == pytest.approx(60 * 200 / 784, rel=1e-6)
    box = stats.box
    assert (box.top, box.left, box.bottom, box.right) == (4, 13, 24, 16)
    assert 1 in stats.candidates and 8 not in stats.candidates
    assert list(measure(eight()).candidates) == [8]


def test_blank_image_has_no_box_and_no_loops():
    stats = measure(np.zeros((28, 28), dtype=np.uint8))
    assert stats.ink_pixels == 0 and stats.holes == 0
    assert stats.box == digits_pb2.BoundingBox()


def test_messages_round_trip_uint8_and_float_images():
    message = to_message(ring(), image_id="r", label=0)
    assert (message.height, message.width, len(message.pixels)) == (28, 28, 784)
    assert message.HasField("label") and message.label == 0
    np.testing.assert_array_equal(from_message(message), ring())
    as_float = (ring() / 255).astype(np.float32)[..., np.newaxis]  # the model's input form
    np.testing.assert_array_equal(from_message(to_message(as_float)), ring())
    assert not to_message(bar()).HasField("label")


def test_to_messages_numbers_ids_and_carries_labels():
    messages = list(to_messages(IMAGES[:3], LABELS[:3], prefix="t"))
    assert [m.id for m in messages] == ["t-00000", "t-00001", "t-00002"]
    assert [m.label for m in messages] == [0, 1, 0]


@pytest.mark.parametrize(
    ("image", "error", "text"),
    [
        (np.zeros((2, 28, 28)), ValueError, "shape"),
        (np.zeros(784), ValueError, "shape"),
        (np.full((28, 28), 1.5), ValueError, r"\[0, 1\]"),
        (np.full((28, 28), 300), ValueError, "0..255"),
        (np.array([["a"]]), TypeError, "numeric"),
    ],
)
def test_bad_images_get_clear_errors(image, error, text):
    with pytest.raises(error, match=text):
        to_uint8(image)


def test_from_message_rejects_a_short_pixel_buffer():
    bad = digits_pb2.DigitImage(id="x", height=28, width=28, pixels=b"\0" * 10)
    with pytest.raises(ValueError, match="pixels has 10 bytes"):
        from_message(bad)


# --- the four call kinds ---------------------------------------------------------------------


def test_unary_measure_with_metadata(server, stub):
    stats, call = stub.Measure.with_call(
        to_message(eight(), image_id="e"), metadata=((REQUEST_ID_KEY, "req-7"),), timeout=5
    )
    assert (stats.id, stats.holes, list(stats.candidates)) == ("e", 2, [8])
    assert dict(call.initial_metadata())[REQUEST_ID_KEY] == "req-7"
    trailing = dict(call.trailing_metadata())
    assert float(trailing[SERVER_TIME_KEY]) >= 0
    assert trailing[IMAGES_SEEN_KEY] == "1"
    assert call.code() == grpc.StatusCode.OK


def test_server_streaming_filters_limits_and_skips(stub):
    everything = list(stub.StreamDigits(digits_pb2.DigitQuery(), timeout=5))
    assert len(everything) == len(IMAGES)
    np.testing.assert_array_equal(from_message(everything[3]), eight())
    zeros = list(stub.StreamDigits(digits_pb2.DigitQuery(label=0), timeout=5))
    assert [m.id for m in zeros] == ["dataset-00000", "dataset-00002", "dataset-00005"]
    assert all(m.label == 0 for m in zeros)
    page = list(stub.StreamDigits(digits_pb2.DigitQuery(label=0, offset=1, limit=1), timeout=5))
    assert [m.id for m in page] == ["dataset-00002"]


def test_client_streaming_summarizes_the_whole_stream(stub):
    summary = stub.Summarize(to_messages(IMAGES, LABELS), timeout=5)
    assert summary.count == len(IMAGES)
    assert dict(summary.label_counts) == {0: 3, 1: 2, 8: 1}
    assert summary.pixel_bytes == IMAGES.size
    mean = np.frombuffer(summary.mean_pixels, dtype=np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(mean, np.rint(IMAGES.mean(axis=0)).astype(np.uint8))
    ink = np.mean([(image >= 128).mean() for image in IMAGES])
    assert summary.mean_ink_fraction == pytest.approx(ink, rel=1e-6)


def test_client_streaming_of_nothing_is_an_empty_summary(stub):
    summary = stub.Summarize(iter(()), timeout=5)
    assert summary.count == 0 and summary.mean_pixels == b"" and not summary.label_counts


def test_bidirectional_answers_each_image_before_the_next_is_sent(stub):
    outbox: queue.Queue = queue.Queue()

    def requests():
        while (message := outbox.get()) is not None:
            yield message

    answers = stub.MeasureEach(requests(), timeout=10)
    seen = []
    for index, image in enumerate([ring(), eight(), bar()]):
        outbox.put(to_message(image, image_id=f"live-{index}"))
        seen.append(next(answers))  # the answer arrives while the request stream is still open
    outbox.put(None)
    assert list(answers) == []
    assert [(s.id, s.sequence, s.holes) for s in seen] == [
        ("live-0", 1, 1),
        ("live-1", 2, 2),
        ("live-2", 3, 0),
    ]


# --- deadlines, status codes, error details --------------------------------------------------


def test_deadline_exceeded_and_the_server_stops_streaming(server, stub):
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in stub.StreamDigits(digits_pb2.DigitQuery(delay_ms=150), timeout=0.4):
            received.append(message)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 1 <= len(received) < len(IMAGES)
    deadline = time.monotonic() + 5
    while not server.servicer.last_stream.get("client_left") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.servicer.last_stream["client_left"] is True
    assert server.servicer.last_stream["sent"] < len(IMAGES)


def test_invalid_image_is_invalid_argument_with_field_details(stub):
    bad = digits_pb2.DigitImage(id="short", height=28, width=28, pixels=b"\0" * 100)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Measure(bad, timeout=5)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "DigitImage 'short': pixels has 100 bytes but height x width is 28 x 28 = 784"
    )
    assert status_details(error) == [f"pixels: {error.details()}"]


def test_bad_label_in_a_stream_ends_the_bidirectional_call(stub):
    stream = [
        to_message(ring(), image_id="ok"),
        digits_pb2.DigitImage(height=1, width=1, pixels=b"\0", label=12),
    ]
    answers = stub.MeasureEach(iter(stream), timeout=5)
    assert next(answers).id == "ok"
    with pytest.raises(grpc.RpcError) as caught:
        next(answers)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_details(caught.value) == ["label: DigitImage: label must be a digit 0-9, got 12"]


def test_mixed_image_sizes_in_one_summary_are_rejected(stub):
    small = digits_pb2.DigitImage(id="small", height=2, width=2, pixels=b"\0" * 4)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Summarize(iter([to_message(ring()), small]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is 2 x 2 but the first image was 28 x 28" in caught.value.details()


@pytest.mark.parametrize(
    ("query", "code", "text"),
    [
        (digits_pb2.DigitQuery(offset=99), grpc.StatusCode.OUT_OF_RANGE, "past the 6 matching"),
        (digits_pb2.DigitQuery(label=10), grpc.StatusCode.INVALID_ARGUMENT, "0-9, got 10"),
        (digits_pb2.DigitQuery(delay_ms=60_000), grpc.StatusCode.INVALID_ARGUMENT, "at most"),
    ],
)
def test_bad_queries_get_the_right_status_code(stub, query, code, text):
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamDigits(query, timeout=5))
    assert caught.value.code() == code
    assert text in caught.value.details()


def test_plain_errors_have_no_rich_details(stub):
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamDigits(digits_pb2.DigitQuery(offset=99), timeout=5))
    assert status_details(caught.value) == []


def test_a_server_without_a_dataset_cannot_stream():
    with start_digits_server() as empty, grpc.insecure_channel(empty.target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(digits_grpc.DigitsStub(channel).StreamDigits(digits_pb2.DigitQuery(), timeout=5))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no dataset" in caught.value.details()


def test_labels_without_images_are_refused():
    with pytest.raises(ValueError, match="one label per image"):
        start_digits_server(None, [1, 2])
    with pytest.raises(ValueError, match="one label per image"):
        start_digits_server(IMAGES, LABELS[:2])


def test_an_unknown_method_is_unimplemented(server):
    with grpc.insecure_channel(server.target) as channel:
        recognize = channel.unary_unary("/course.digits.Digits/Recognize")
        with pytest.raises(grpc.RpcError) as caught:
            recognize(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_the_service(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(server.target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "course.digits.Digits" in services


# --- starting and stopping -------------------------------------------------------------------


def test_stop_frees_the_port_and_later_calls_are_unavailable():
    server = start_digits_server(IMAGES, LABELS)
    assert server.host == "127.0.0.1" and server.port > 0 and server.running
    with grpc.insecure_channel(server.target) as channel:
        stub = digits_grpc.DigitsStub(channel)
        assert stub.Measure(to_message(bar()), timeout=5).holes == 0
        server.stop()
        server.stop()  # idempotent
        assert not server.running and "stopped" in repr(server)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Measure(to_message(bar()), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # Nothing listens: connections the server closed may sit in TIME_WAIT, which a new server
    # binds over, so a plain bind() would be the wrong test.
    assert port_is_free(server.port)


def test_a_busy_port_is_a_clear_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{busy}.*port=0"):
            start_digits_server(port=busy)


# --- compiling the proto ---------------------------------------------------------------------


def test_protoc_command_compiles_into_a_folder(tmp_path):
    command = protos.protoc_command("digits", tmp_path)
    assert command[1:3] == ["-m", "grpc_tools.protoc"]
    assert command[-1] == "helpers/protos/digits.proto"
    files = protos.compile_proto("digits", tmp_path)
    assert [f.name for f in files] == ["digits_pb2.py", "digits_pb2.pyi", "digits_pb2_grpc.py"]
    assert "from helpers.protos import digits_pb2" in files[2].read_text()


def test_load_proto_is_cached_by_hash_in_the_cache_folder(tmp_path):
    code = "from helpers.protos import load_proto; print(load_proto('digits').pb2.__file__)"
    env = {**os.environ, protos.CACHE_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    key = protos.proto_hash("digits")
    expected = tmp_path / f"digits-{key}" / "helpers" / "protos" / "digits_pb2.py"
    assert done.stdout.strip() == str(expected)
    assert protos.load_proto("digits").pb2 is digits_pb2  # one module per process


def test_an_unwritable_cache_falls_back_to_the_temporary_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = "from helpers.protos import load_proto; print(load_proto('digits').pb2.__file__)"
    env = {**os.environ, protos.CACHE_ENV: str(blocker / "cache"), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(tmp_path / "grpc-serving-course-protos"))


def test_unknown_or_malformed_proto_names_are_refused():
    with pytest.raises(FileNotFoundError, match="no proto named 'nope'.*digits"):
        protos.load_proto("nope")
    with pytest.raises(ValueError, match="plain identifier"):
        protos.load_proto("../digits")


def test_a_broken_proto_reports_protoc_error(tmp_path, monkeypatch):
    folder = tmp_path / "helpers" / "protos"
    folder.mkdir(parents=True)
    (folder / "broken.proto").write_text('syntax = "proto3";\nmessage Broken { int32 x = ; }\n')
    monkeypatch.setattr(protos, "PROTO_DIR", folder)
    monkeypatch.setattr(protos, "INCLUDE_ROOT", tmp_path)
    with pytest.raises(protos.ProtoCompileError, match="broken.proto.*broken.proto:2"):
        protos.compile_proto("broken", tmp_path / "out")


# --- notebook 01's exercise solutions (helpers/solutions/ex01.py) ---------------------------


def test_candidate_hit_rate_per_digit():
    with start_digits_server(IMAGES, LABELS) as server:
        rates = ex01.candidate_hit_rate(server.target)
    # the synthetic rings, bars and eight all have the loops their label expects
    assert rates == {0: 1.0, 1: 1.0, 8: 1.0}


def test_retrying_channel_waits_for_a_late_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started: list = []
    timer = threading.Timer(0.3, lambda: started.append(start_digits_server(port=port)))
    timer.start()
    try:
        with ex01.retrying_channel(f"127.0.0.1:{port}", max_attempts=5) as channel:
            stats = digits_grpc.DigitsStub(channel).Measure(to_message(bar()), timeout=10)
        assert stats.holes == 0
    finally:
        timer.join()
        for server in started:
            server.stop()


def test_retrying_channel_does_not_retry_invalid_arguments():
    bad = digits_pb2.DigitImage(height=28, width=28, pixels=b"\0")
    with start_digits_server() as server, ex01.retrying_channel(server.target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            digits_grpc.DigitsStub(channel).Measure(bad, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert server.servicer.calls["Measure"] == 1


@pytest.mark.parametrize("encoding", payloads.ENCODINGS)
def test_largest_batch_is_the_last_that_fits(encoding):
    image = (bar() / 255).astype(np.float32)
    limit = 200_000
    count = ex01.largest_batch(image, encoding, limit)
    batch = np.repeat(payloads.as_batch(image), count + 1, axis=0)
    assert len(payloads.encode(batch[:count], encoding)) <= limit
    assert len(payloads.encode(batch, encoding)) > limit


def test_largest_batch_under_the_default_limit():
    image = (bar() / 255).astype(np.float32)
    assert ex01.largest_batch(image, "tensor_content") == (4 * 1024 * 1024 - 30) // 3136
    assert ex01.largest_batch(image, "uint8") > 4 * ex01.largest_batch(image, "tensor_content") - 4
