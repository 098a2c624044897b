"""helpers.drawpad: drawings become MNIST-style images, and the server names the digit."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest

from helpers import drawpad
from helpers.server.process import ServerStartError

#: A "1" as a learner draws it: one slightly slanted stroke, top to bottom, off-centre.
ONE = [[(170, 50), (166, 100), (162, 160), (158, 230)]]
#: A "0": an ellipse, drawn small in a corner of the canvas.
ZERO = [[(70 + 35 * math.cos(a), 80 + 50 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 40)]]


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0:28, 0:28]
    return float((ys * image).sum() / image.sum()), float((xs * image).sum() / image.sum())


def test_strokes_become_a_centred_mnist_style_image():
    image = drawpad.drawing_to_image(ZERO)
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() == pytest.approx(1.0)
    rows = np.flatnonzero(image.max(axis=1) > 0.05)
    assert rows[-1] - rows[0] + 1 in (19, 20, 21)  # the ink fills MNIST's 20-pixel box
    centre_y, centre_x = _centre_of_mass(image)
    assert abs(centre_y - 13.5) <= 1.0 and abs(centre_x - 13.5) <= 1.0


def test_a_vertical_stroke_stays_thin_and_tall():
    image = drawpad.drawing_to_image(ONE)
    columns = np.flatnonzero(image.max(axis=0) > 0.3)
    rows = np.flatnonzero(image.max(axis=1) > 0.3)
    assert len(columns) <= 6  # the aspect ratio survives: a "1" is not stretched into a blob
    assert len(rows) >= 18


def test_arrays_of_any_size_and_scale_are_accepted():
    big = drawpad.render_strokes(ZERO)
    from_float = drawpad.drawing_to_image(big)
    from_uint8 = drawpad.drawing_to_image((big * 255).astype(np.uint8))
    np.testing.assert_allclose(from_float, from_uint8, atol=0.02)
    from_list = drawpad.drawing_to_image(big.tolist())  # a 2-D list is an image, not strokes
    np.testing.assert_allclose(from_list, from_float)


def test_an_empty_drawing_gives_a_blank_image():
    assert not drawpad.drawing_to_image([]).any()
    assert not drawpad.drawing_to_image(np.zeros((28, 28))).any()


def test_a_drawing_must_be_two_dimensional():
    with pytest.raises(ValueError, match="2-D image; got shape \\(2, 3, 4\\)"):
        drawpad.to_mnist_style(np.ones((2, 3, 4)))


def test_classifying_an_empty_drawing_says_what_to_do():
    with pytest.raises(ValueError, match="draw a digit first"):
        drawpad.classify_drawing([], channel=None)


# --------------------------------------------------------------------------------------
# Through a live embedded server
# --------------------------------------------------------------------------------------

pytest_plugins = ["served_mnist"]


def test_a_drawn_one_is_classified_as_one(served_channel):
    label, probabilities = drawpad.classify_drawing(ONE, served_channel)
    assert label == 1
    assert probabilities.shape == (10,)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    assert probabilities[1] == probabilities.max()


def test_a_drawn_image_array_works_too(served_channel):
    image = drawpad.render_strokes(ONE)  # 70x70, not MNIST's size
    label, _ = drawpad.classify_drawing(image, served_channel)
    assert label == 1


def test_the_panel_answers_strokes_drawn_from_code(served_channel):
    pad = drawpad.DrawPad(served_channel)
    assert pad.label is None
    label, probabilities = pad.draw(ONE)
    assert label == 1 and pad.label == 1
    assert "The server says: 1" in pad.answer.value
    assert pad.bars[1].value == pytest.approx(float(probabilities[1]))
    assert pad.bars[1].bar_style == "success"
    assert bytes(pad.preview.value).startswith(b"\x89PNG")
    pad.clear()
    assert pad.strokes == [] and pad.label is None and pad.bars[1].value == 0.0


def test_the_panel_follows_the_mouse(served_channel):
    pad = drawpad.DrawPad(served_channel)
    pad._on_down(150, 40)
    for y in range(60, 241, 20):
        pad._on_move(150 - y / 60, y)
    pad._on_up(146, 240)
    assert len(pad.strokes) == 1 and len(pad.strokes[0]) == 11
    assert pad.label == 1
    pad._on_move(10, 10)  # pen up: moving draws nothing
    assert len(pad.strokes[0]) == 11


def _stroke_with_the_mouse(pad) -> None:
    pad._on_down(150, 40)
    pad._on_move(148, 140)
    pad._on_up(146, 240)


def test_the_panel_explains_a_server_that_went_away(served_channel):
    import socket

    from helpers import client

    with socket.socket() as probe:  # a port nobody listens on: a stopped server
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    signature = client.get_signature(served_channel)
    channel = client.open_channel(f"localhost:{port}")
    pad = drawpad.DrawPad(channel, signature=signature, reconnect=False)
    _stroke_with_the_mouse(pad)
    assert "the model server is not running (UNAVAILABLE)" in pad.answer.value
    assert "failed to connect" not in pad.answer.value  # gRPC's raw words stay out
    assert pad.label is None
    channel.close()


def test_a_closed_channel_is_explained_not_shown_raw(served_mnist):
    from helpers import client

    channel = client.open_channel(served_mnist)
    pad = drawpad.DrawPad(channel, reconnect=False)
    channel.close()  # what the notebook's clean-up step does
    _stroke_with_the_mouse(pad)
    assert "connection to the model server was closed" in pad.answer.value
    assert "Cannot invoke RPC" not in pad.answer.value
    assert pad.error is not None and pad.label is None


def test_the_panel_opens_a_new_channel_when_its_own_was_closed(served_mnist, monkeypatch):
    from helpers import client

    address = served_mnist.address
    monkeypatch.setenv("MODEL_SERVER", f"localhost:{address.grpc_port}:{address.rest_port}")
    channel = client.open_channel(served_mnist)
    pad = drawpad.DrawPad(channel)
    channel.close()
    _stroke_with_the_mouse(pad)
    assert pad.label == 1, pad.answer.value
    assert pad.channel is not channel and "The server says: 1" in pad.answer.value
    pad.close()
    pad.channel.close()


def test_after_the_clean_up_step_the_panel_starts_a_server_and_stops_it(
    served_mnist, models_dir, monkeypatch
):
    """Run All ends with the notebook's clean-up step; drawing afterwards must still work."""
    import shutil

    from helpers import client
    from helpers.server.process import start_server

    monkeypatch.delenv("MODEL_SERVER", raising=False)
    shutil.copytree(served_mnist.base_path, models_dir / "mnist")
    first = start_server(default_ports=False)
    channel = client.open_channel(first)
    pad = drawpad.DrawPad(channel)
    assert pad.draw(ONE)[0] == 1
    channel.close()  # the notebook's last cell: close the channel, stop the server
    first.stop()

    _stroke_with_the_mouse(pad)
    assert pad.label == 1, pad.answer.value
    started = pad._server
    assert started is not None and started.is_running()
    pad.close()
    assert not started.is_running() and pad._server is None


class FakeRpcError(grpc.RpcError):
    """A failed call as gRPC raises it: a status code and the server's details."""

    def __init__(self, code, details):
        super().__init__(details)
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    ("error", "explanation"),
    [
        (
            FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"),
            "the model server is not running",
        ),
        (FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "did not answer"),
        (FakeRpcError(grpc.StatusCode.NOT_FOUND, "Servable not found"), "no such model loaded"),
        (
            FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "a <b>bad</b> tensor"),
            "the server refused the drawing (INVALID_ARGUMENT)",
        ),
        (ValueError("Cannot invoke RPC on closed channel!"), "connection to the model server"),
        (ServerStartError("the server process exited"), "could not be started again"),
        (ValueError("The drawing is empty: draw a digit first."), "draw a digit first"),
        (RuntimeError("boom"), "something unexpected went wrong (RuntimeError: boom)"),
    ],
)
def test_every_failure_gets_an_explanation_and_a_next_step(error, explanation):
    text = drawpad.explain(error)
    assert explanation in text
    assert "<b>" not in text  # the server's words are escaped, never rendered as HTML
    assert any(word in text for word in ("again", "check", "wait", "draw", "Run")), text


def test_the_panel_shows_a_picture_where_widgets_cannot_run(served_channel):
    """A fresh clone is untrusted: JupyterLab shows the stored picture, not `HBox(...)`."""
    pad = drawpad.DrawPad(served_channel)
    bundle = pad._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == pad.widget.model_id
    assert bytes(bundle["image/png"]).startswith(b"\x89PNG")
    assert bundle["text/plain"] == drawpad.PANEL_PLACEHOLDER
    assert "HBox(" not in bundle["text/plain"]


def test_the_panel_has_stable_classes_for_browser_tests(served_channel):
    pad = drawpad.DrawPad(served_channel)
    assert "course-drawpad" in pad.widget._dom_classes
    assert "course-drawpad-canvas" in pad.canvas._dom_classes
    assert "course-drawpad-answer" in pad.answer._dom_classes
    assert "course-drawpad-preview" in pad.preview._dom_classes
    assert all(f"course-drawpad-bar-{d}" in bar._dom_classes for d, bar in enumerate(pad.bars))
