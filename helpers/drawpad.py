"""Draw a digit with the mouse and ask the model server what it is (notebook 06).

The panel is a thin shell: `classify_drawing` does the work and is an ordinary function, so
tests call it with a drawn image. A drawing only looks like MNIST after the same treatment
MNIST's digits had: ink cropped, scaled to fit a 20x20 box (keeping its aspect ratio) and
centred by its centre of mass in a 28x28 frame. Without that, a digit drawn small or in a
corner is a different picture from everything the model was trained on.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from helpers import client, config

#: A stroke is a list of (x, y) points in canvas pixels; a drawing is a list of strokes.
Stroke = Sequence[tuple[float, float]]

#: Side of the drawing canvas in screen pixels (10x MNIST's 28, so strokes feel natural).
CANVAS_SIZE = 280
#: Pen width in canvas pixels: about MNIST's stroke width once scaled down to 28x28.
LINE_WIDTH = 22


def render_strokes(
    strokes: Sequence[Stroke], *, canvas_size: int = CANVAS_SIZE, line_width: float = LINE_WIDTH
) -> np.ndarray:
    """Rasterise strokes into a (canvas_size, canvas_size) float32 image, ink 1.0 on 0.0.

    Each segment becomes a capsule (a thick line with round ends) with a soft one-pixel edge,
    like a pen on the canvas. Works at a quarter of the canvas resolution: plenty for 28x28.
    """
    scale = 4
    side = max(canvas_size // scale, 1)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    image = np.zeros((side, side), dtype=np.float32)
    radius = line_width / scale / 2
    for stroke in strokes:
        points = np.asarray(stroke, dtype=np.float32).reshape(-1, 2) / scale
        if len(points) == 0:
            continue
        if len(points) == 1:
            points = np.vstack([points, points])
        for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
            dx, dy = x1 - x0, y1 - y0
            length2 = dx * dx + dy * dy
            t = np.zeros_like(xs) if length2 == 0 else ((xs - x0) * dx + (ys - y0) * dy) / length2
            t = np.clip(t, 0.0, 1.0)
            distance = np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))
            np.maximum(image, np.clip(radius + 0.5 - distance, 0.0, 1.0), out=image)
    return image


def _area_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Weights that average input pixels over each output pixel's span (area resampling)."""
    edges = np.linspace(0.0, size_in, size_out + 1)
    weights = np.zeros((size_out, size_in), dtype=np.float64)
    for i in range(size_out):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), size_in)):
            weights[i, j] = min(hi, j + 1) - max(lo, j)
        weights[i] /= hi - lo
    return weights


def to_mnist_style(image: Any, *, box: int = 20, size: int = 28) -> np.ndarray:
    """Crop the ink, fit it into a `box` square and centre it by mass in a `size` frame.

    `image` is any 2-D array of ink intensities (0-1 floats, or 0-255). Returns float32
    (size, size) in [0, 1]; an image without ink comes back as zeros.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"A drawing is a 2-D image; got shape {array.shape}.")
    if array.max(initial=0.0) > 1.0:
        array = array / 255.0
    array = np.clip(array, 0.0, 1.0)
    rows = np.flatnonzero(array.max(axis=1) > 0.05)
    cols = np.flatnonzero(array.max(axis=0) > 0.05)
    if len(rows) == 0:
        return np.zeros((size, size), dtype=np.float32)
    ink = array[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    side = max(height, width)  # pad to a square so the aspect ratio survives the resize
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = ink
    resized = _area_resize_matrix(side, box) @ square @ _area_resize_matrix(side, box).T
    resized = np.clip(resized / max(resized.max(), 1e-6), 0.0, 1.0)  # full-strength ink

    frame = np.zeros((size, size), dtype=np.float32)
    offset = (size - box) // 2
    frame[offset : offset + box, offset : offset + box] = resized
    total = frame.sum()
    centre_y = (frame.sum(axis=1) * np.arange(size)).sum() / total
    centre_x = (frame.sum(axis=0) * np.arange(size)).sum() / total
    limit = offset  # never push ink out of the frame
    shift_y = int(np.clip(round((size - 1) / 2 - centre_y), -limit, limit))
    shift_x = int(np.clip(round((size - 1) / 2 - centre_x), -limit, limit))
    return np.roll(frame, (shift_y, shift_x), axis=(0, 1)).astype(np.float32)


def drawing_to_image(drawing: Any, *, canvas_size: int = CANVAS_SIZE) -> np.ndarray:
    """A drawing (strokes, or a 2-D array such as a 28x28 image) as an MNIST-style 28x28 image."""
    if isinstance(drawing, np.ndarray) and drawing.ndim >= 2:
        image = drawing
    elif _looks_like_strokes(drawing):
        image = render_strokes(drawing, canvas_size=canvas_size)
    else:
        image = np.asarray(drawing)
    return to_mnist_style(image)


def _looks_like_strokes(drawing: Any) -> bool:
    """True for a list of strokes: each one a list of (x, y) pairs."""
    try:
        shapes = [np.asarray(stroke, dtype=float).shape for stroke in drawing]
    except (TypeError, ValueError):
        return False
    return all(len(shape) == 2 and shape[1] == 2 for shape in shapes)


def classify_drawing(
    drawing: Any,
    channel: Any,
    *,
    model_name: str = config.MODEL_NAME,
    signature: client.Signature | str = "serving_default",
    canvas_size: int = CANVAS_SIZE,
    timeout: float = 10.0,
) -> tuple[int, np.ndarray]:
    """Ask the server which digit a drawing shows; return (label, 10 probabilities).

    `drawing` is a list of strokes (lists of (x, y) canvas points) or a 2-D image array.
    """
    image = drawing_to_image(drawing, canvas_size=canvas_size)
    if not image.any():
        raise ValueError("The drawing is empty: draw a digit first.")
    probabilities = client.predict(
        channel, image[np.newaxis], model_name, signature=signature, timeout=timeout
    )[0]
    return int(np.argmax(probabilities)), probabilities


#: Why asking the server can fail, as the panel explains it (what happened, what to do).
_CLOSED_CHANNEL = "Cannot invoke RPC on closed channel"


def explain(error: Exception) -> str:
    """What the panel says when asking failed: what happened, in words, and what to do.

    Never gRPC's raw text alone: a learner drawing a digit needs the cause and the next step.
    """
    import grpc

    from helpers.server.process import ServerStartError

    if isinstance(error, grpc.RpcError):
        code = error.code() if hasattr(error, "code") else None
        if code == grpc.StatusCode.UNAVAILABLE:
            return (
                "the model server is not running (UNAVAILABLE). Start it again (the notebook's "
                "server cell), then draw again."
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return (
                "the model server did not answer in time (DEADLINE_EXCEEDED): it may be busy "
                "or still loading the model. Draw again in a moment."
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return (
                "the server has no such model loaded (NOT_FOUND): check the panel's "
                "model_name, or wait until the model has loaded."
            )
        return (
            f"the server refused the drawing ({code.name if code else 'UNKNOWN'}). "
            f"Its message: {html.escape(client.describe_rpc_error(error))}"
        )
    if isinstance(error, ValueError) and _CLOSED_CHANNEL in str(error):
        return (
            "the connection to the model server was closed (the notebook's clean-up step "
            "closes it). Run the cell that creates this panel again."
        )
    if isinstance(error, (ServerStartError, TimeoutError)):
        return (
            "the model server could not be started again "
            f"({html.escape(str(error))}). Run the notebook's server cell, then this panel's cell."
        )
    if isinstance(error, ValueError) and "empty" in str(error):
        return "the drawing is empty: draw a digit first."
    return (
        f"something unexpected went wrong ({type(error).__name__}: {html.escape(str(error))}). "
        "Press Clear and draw again; if it keeps happening, run this panel's cell again."
    )


def _connection_lost(error: Exception) -> bool:
    """True for the failures a fresh connection (and, if need be, a fresh server) can cure."""
    import grpc

    if isinstance(error, ValueError):
        return _CLOSED_CHANNEL in str(error)
    return isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


def _png(image: np.ndarray, zoom: int = 4) -> bytes:
    """Encode a grey image as PNG bytes (black ink on white), enlarged without blurring."""
    import matplotlib.image

    big = np.kron(np.clip(image, 0, 1), np.ones((zoom, zoom)))
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, big, cmap="gray_r", vmin=0.0, vmax=1.0, format="png")
    return buffer.getvalue()


#: Text shown where the live panel cannot be (a saved notebook not yet run, a terminal).
PANEL_PLACEHOLDER = (
    "Drawing panel: run the notebook's cells in JupyterLab to draw a digit here "
    "and see the server's answer."
)


def panel_picture(
    strokes: Sequence[Stroke],
    probabilities: np.ndarray | None = None,
    *,
    canvas_size: int = CANVAS_SIZE,
) -> bytes:
    """A PNG picture of the panel: the strokes, the 28x28 image sent, and the answer bars.

    Stored in the notebook beside the live widget, it is what a front end shows when it cannot
    run the widget (a fresh, untrusted clone; a notebook viewer), instead of a raw `HBox(...)`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.6))
    FigureCanvasAgg(figure)
    canvas_ax, image_ax, bars_ax = figure.subplots(1, 3, gridspec_kw={"width_ratios": [3, 2, 3]})
    canvas_ax.imshow(
        render_strokes(strokes, canvas_size=canvas_size), cmap="gray_r", vmin=0, vmax=1
    )
    canvas_ax.set_title("draw here", fontsize=9)
    image_ax.imshow(
        drawing_to_image(strokes, canvas_size=canvas_size), cmap="gray_r", vmin=0, vmax=1
    )
    image_ax.set_title("what the server receives", fontsize=9)
    for ax in (canvas_ax, image_ax):
        ax.set_xticks([])
        ax.set_yticks([])
    values = np.zeros(10) if probabilities is None else np.asarray(probabilities, dtype=float)
    colours = [
        "tab:green" if probabilities is not None and d == values.argmax() else "tab:gray"
        for d in range(10)
    ]
    bars_ax.barh(range(10), values, color=colours)
    bars_ax.set_yticks(range(10))
    bars_ax.set_xlim(0, 1)
    bars_ax.invert_yaxis()
    bars_ax.set_title("the server's answer", fontsize=9)
    figure.suptitle("A picture of the drawing panel: run the notebook to draw", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


class DrawPad:
    """A drawing canvas, the 28x28 image the server receives, and its answer as bars.

    Draw with the mouse: every finished stroke is sent to the server. `draw(strokes)` adds
    strokes from code (handy for demos and tests); `clear()` starts again. When the channel
    was closed or the server went away (a notebook's clean-up step ran), the panel connects
    again by itself (`reconnect=True`), starting the embedded server if need be; `close()`
    stops what it started. Every failure is shown on the panel in words, with what to do.

    The HTML elements carry stable classes for browser tests: `course-drawpad` (the panel),
    `course-drawpad-canvas`, `course-drawpad-clear`, `course-drawpad-answer` (the answer text),
    `course-drawpad-preview` and `course-drawpad-bar` (one per digit).
    """

    def __init__(
        self,
        channel: Any,
        *,
        model_name: str = config.MODEL_NAME,
        signature: client.Signature | str | None = None,
        canvas_size: int = CANVAS_SIZE,
        line_width: float = LINE_WIDTH,
        reconnect: bool = True,
        timeout: float = 10.0,
    ) -> None:
        import ipywidgets as widgets
        from ipycanvas import Canvas

        self.channel = channel
        self.model_name = model_name
        self.signature = signature or client.get_signature(channel, model_name)
        self.canvas_size = canvas_size
        self.line_width = line_width
        self.reconnect = reconnect
        self.timeout = timeout
        self.strokes: list[list[tuple[float, float]]] = []
        self._pen_down = False
        self._server: Any = None  # a server this panel started when it reconnected
        self.label: int | None = None
        self.probabilities: np.ndarray | None = None
        self.error: str | None = None  # the last failure, as the panel explained it

        self.canvas = Canvas(width=canvas_size, height=canvas_size)
        self.canvas.layout.border = "1px solid #999"
        self.canvas.add_class("course-drawpad-canvas")
        self.canvas.on_mouse_down(self._on_down)
        self.canvas.on_mouse_move(self._on_move)
        self.canvas.on_mouse_up(self._on_up)
        self.canvas.on_mouse_out(self._on_up)
        clear_button = widgets.Button(description="Clear", icon="eraser")
        clear_button.add_class("course-drawpad-clear")
        clear_button.on_click(lambda _: self.clear())
        self.answer = widgets.HTML("<b>Draw a digit in the box.</b>")
        self.answer.add_class("course-drawpad-answer")
        self.preview = widgets.Image(format="png", width=112, height=112)
        self.preview.add_class("course-drawpad-preview")
        self.bars = [
            widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="160px"))
            for _ in range(10)
        ]
        for digit, bar in enumerate(self.bars):
            bar.add_class("course-drawpad-bar")
            bar.add_class(f"course-drawpad-bar-{digit}")
        self.percents = [widgets.Label("") for _ in range(10)]
        rows = [
            widgets.HBox([widgets.Label(str(digit)), bar, percent])
            for digit, (bar, percent) in enumerate(zip(self.bars, self.percents, strict=True))
        ]
        self.widget = widgets.HBox(
            [
                widgets.VBox([self.canvas, clear_button]),
                widgets.VBox(
                    [self.answer, widgets.Label("What the server receives:"), self.preview]
                ),
                widgets.VBox(rows),
            ]
        )
        self.widget.add_class("course-drawpad")
        self.clear()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live widget, plus a picture and a sentence for front ends that cannot run it."""
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["image/png"] = panel_picture(self.strokes, self.probabilities)
        bundle["text/plain"] = PANEL_PLACEHOLDER
        return bundle

    # -- drawing ------------------------------------------------------------------------
    def _paint(self, stroke: Sequence[tuple[float, float]]) -> None:
        canvas = self.canvas
        canvas.stroke_style = "black"
        canvas.line_width = self.line_width
        canvas.line_cap = "round"
        canvas.line_join = "round"
        canvas.begin_path()
        canvas.move_to(*stroke[0])
        for point in stroke[1:] if len(stroke) > 1 else stroke:
            canvas.line_to(*point)
        canvas.stroke()

    def _on_down(self, x: float, y: float) -> None:
        self._pen_down = True
        self.strokes.append([(x, y)])
        self._paint([(x, y)])

    def _on_move(self, x: float, y: float) -> None:
        if self._pen_down:
            last = self.strokes[-1][-1]
            self.strokes[-1].append((x, y))
            self._paint([last, (x, y)])

    def _on_up(self, x: float, y: float) -> None:
        if self._pen_down:
            self._pen_down = False
            try:
                self.ask()
            except Exception as error:  # a widget callback has nowhere else to report
                self._show_failure(error)

    def _show_failure(self, error: Exception) -> None:
        self.label, self.probabilities = None, None
        self.error = explain(error)
        self.answer.value = f"<b style='color:#b00'>No answer: {self.error}</b>"

    def draw(self, strokes: Sequence[Stroke]) -> tuple[int, np.ndarray]:
        """Add strokes as if drawn with the mouse, then ask the server."""
        for stroke in strokes:
            points = [(float(x), float(y)) for x, y in stroke]
            if points:
                self.strokes.append(points)
                self._paint(points)
        return self.ask()

    def clear(self) -> None:
        """Wipe the canvas and the answer."""
        self.strokes = []
        self.canvas.clear()
        self.canvas.fill_style = "white"
        self.canvas.fill_rect(0, 0, self.canvas_size, self.canvas_size)
        self.preview.value = _png(np.zeros((28, 28)))
        for bar, percent in zip(self.bars, self.percents, strict=True):
            bar.value, bar.bar_style, percent.value = 0.0, "", ""
        self.label, self.probabilities, self.error = None, None, None
        self.answer.value = "<b>Draw a digit in the box.</b>"

    # -- asking -------------------------------------------------------------------------
    def _classify(self) -> tuple[int, np.ndarray]:
        return classify_drawing(
            self.strokes,
            self.channel,
            model_name=self.model_name,
            signature=self.signature,
            canvas_size=self.canvas_size,
            timeout=self.timeout,
        )

    def _connect_again(self) -> None:
        """A new channel to the course's server; start the embedded one if none is running."""
        from helpers import server

        self.answer.value = "<b>Connecting to the model server again (a few seconds)...</b>"
        if self._server is not None:
            self._server.stop()
        self._server = server.connect(self.model_name)
        self.channel = client.open_channel(self._server)

    def ask(self) -> tuple[int, np.ndarray]:
        """Send the drawing to the server and show its answer (connecting again if need be)."""
        self.preview.value = _png(drawing_to_image(self.strokes, canvas_size=self.canvas_size))
        try:
            self.label, self.probabilities = self._classify()
        except Exception as error:
            if not (self.reconnect and _connection_lost(error)):
                raise
            self._connect_again()
            self.label, self.probabilities = self._classify()
        self.error = None
        best = self.label
        for digit, (bar, percent) in enumerate(zip(self.bars, self.percents, strict=True)):
            bar.value = float(self.probabilities[digit])
            bar.bar_style = "success" if digit == best else ""
            percent.value = f"{self.probabilities[digit]:.0%}"
        self.answer.value = f"<b>The server says: {best}</b> ({self.probabilities[best]:.0%} sure)"
        return self.label, self.probabilities

    def close(self) -> None:
        """Stop the server this panel started when it reconnected (if any) and its channel."""
        if self._server is not None:
            self.channel.close()
            self._server.stop()
            self._server = None
