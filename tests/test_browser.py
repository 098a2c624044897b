"""Every notebook in JupyterLab, in a real browser, the way a learner meets the course.

This is each notebook's one run with its default parameters in a test run (papermill runs it
again with small ones). After Run All the saved notebook must reproduce the stored outputs of
its `# NBVAL_CHECK_OUTPUT` cells, compared as nbval compares them (tests/notebook_outputs.py).
Papermill never opens JupyterLab either. Here `make lab` starts
JupyterLab on a temporary copy of the notebooks, and Chromium opens each `NN_*.ipynb` from the
file browser: its kernel must be the course kernel, chosen without a "Select Kernel" dialog;
Run > Run All Cells must finish with no error output, nothing on stderr but progress bars, no
JupyterLab dialog and no browser console error, and every `plt.show()` must show an image. In
the drawing notebook a 7 is drawn with the mouse on the panel's canvas, and the panel must say
the server read a 7; then Clear must wipe it. A screenshot of each notebook after Run All is
kept (its path is in the run's notes), and nothing JupyterLab started may outlive the test
(tests/lab_server.py).

On a learner's machine without Chromium the test skips and says how to install it; with CI=true
it never skips.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import lab_browser as ui
import nbformat
import pytest
from lab_server import running_lab
from notebook_outputs import output_differences
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect, sync_playwright

from helpers import drawpad, kernel

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: The notebook with the drawing panel, and the 7 drawn on it (canvas pixels, as notebook 06's).
DRAWING_NOTEBOOK = "06_visualise_predictions"
SEVEN = [[(60, 50), (220, 50), (170, 140), (130, 250)]]
#: In the drawing notebook: the cells that start the server and show the panel (to run again
#: after Run All, as the notebook says), and its clean-up cell, found by their code.
DRAWING_CELLS = ("server.connect(", "DrawPad(")
CLEAN_UP_CELL = "handle.stop()"
#: Seconds one notebook's Run All may take in the browser (the course aims at 90 s).
RUN_ALL_TIMEOUT = 420
#: The end of a tqdm bar: elapsed time, then `<remaining` and the rate, in square brackets.
TQDM_LINE = re.compile(r"\[\d+:\d\d(<[^,\]]*)?, [^\]]*\]$")

#: The MIME type of an ipywidgets view in a cell's output.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.browser


def _why_it_cannot_run() -> str | None:
    if not ui.CHROMIUM.is_file():
        return ui.INSTALL_HINT
    if shutil.which("make") is None:
        return "no `make` command: the browser test starts JupyterLab with `make lab`"
    return None


@pytest.fixture(scope="module")
def lab():
    reason = _why_it_cannot_run()
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI must run the browser test, but {reason}")
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="course-lab-") as work:
        with running_lab(Path(work)) as running:
            yield running


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """A temporary folder of its own, kept after the run (pytest's own ones rotate away)."""
    return Path(tempfile.mkdtemp(prefix="course-browser-screenshots-"))


@pytest.fixture(scope="module")
def browser_page(lab):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**ui.launch_options())
        page = browser.new_page(viewport=ui.VIEWPORT)
        watch = ui.PageWatch()
        watch.attach(page)
        ui.open_lab(page, lab.url, lab.token)
        yield page, watch
        browser.close()


def test_there_are_notebooks_and_a_drawing_panel():
    assert NOTEBOOKS and DRAWING_NOTEBOOK in {path.stem for path in NOTEBOOKS}


def test_the_launcher_offers_the_course_kernel(browser_page):
    page, watch = browser_page
    assert kernel.DISPLAY_NAME in ui.launcher_kernels(page)
    assert ui.dialogs(page) == []
    assert watch.take() == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_run_all_in_jupyterlab(path, lab, browser_page, screenshots, record_property):
    page, watch = browser_page
    ui.open_notebook(page, path.name)
    try:
        assert ui.dialogs(page) == [], "opening the notebook asked something (Select Kernel?)"
        assert ui.kernel_name(page) == kernel.DISPLAY_NAME
        seconds = ui.run_all(page, RUN_ALL_TIMEOUT)
        shot = screenshots / f"{path.stem}.png"
        page.screenshot(path=shot)
        record_property(f"browser {path.stem}", f"Run All {seconds:.1f} s, screenshot {shot}")
        assert ui.dialogs(page) == [], "JupyterLab showed a dialog during Run All"
        # make install turns JupyterLab's news question and update check off (kernel.LAB_SETTINGS)
        assert ui.toasts(page) == [], "a notification covers the notebook"
        ui.save(page)
        executed = nbformat.read(lab.notebooks / path.name, as_version=4)
        check_outputs(executed)
        differences = output_differences(nbformat.read(path, as_version=4), executed)
        assert not differences, "\n".join(differences)
        check_plots_shown(page, executed)
        if path.stem == DRAWING_NOTEBOOK:
            answer = draw_a_seven(page, screenshots / f"{path.stem}-drawn.png")
            record_property(f"browser {path.stem} drawing", f"drawn 7, the panel says: {answer}")
            assert re.search(r"The server says: 7\b", answer), f"a drawn 7 got {answer!r}"
        assert watch.take() == [], "the browser console reported errors"
        lab.remember_children()
    finally:
        at_shutdown = ui.close_and_shut_down(page, watch, path.name)
    assert at_shutdown == [], "the browser console reported errors as the kernel shut down"


def check_outputs(notebook) -> None:
    """Every code cell ran, and none left an error or a stderr (pink) output."""
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        where = f"cell {index} ({cell.source.strip().splitlines()[0][:60]!r})"
        if not cell.get("execution_count"):
            problems.append(f"{where} did not run")
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                problems.append(f"{where}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                if not is_progress_bar(output.text):
                    problems.append(f"{where} wrote to stderr: {output.text.strip()[:300]}")
    assert not problems, "\n".join(problems)


def is_progress_bar(text: str) -> bool:
    """tqdm's text bar ('100%|####| 5/5 [00:02<00:00, 1.85epoch/s]'), which writes to stderr,
    or the bare carriage returns it writes between two states.

    A learner sees it as progress, not as a problem; a warning or a log line on stderr is one.
    """
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return all(TQDM_LINE.search(line) for line in lines)  # a bare "\r" shows nothing


def check_plots_shown(page, notebook) -> None:
    """Every cell that calls plt.show() produced an image, and the browser shows them all."""

    def images(cell) -> int:
        """Image outputs JupyterLab draws as images: a widget's PNG fallback (the drawing
        panel's picture, for viewers without widgets) is not drawn; the widget is."""
        return sum(
            "image/png" in data and WIDGET_VIEW not in data
            for data in (o.get("data", {}) for o in cell.get("outputs", []))
        )

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    silent = [c.source.splitlines()[0] for c in code if "plt.show()" in c.source and not images(c)]
    assert not silent, f"plt.show() showed no image in the cells starting {silent}"
    expected = sum(images(cell) for cell in code)
    try:  # the last images may still be decoding when Run All ends
        page.wait_for_function(
            f"() => ({ui.RENDERED_IMAGES})() >= {expected}", timeout=15_000, polling=250
        )
    except PlaywrightTimeoutError:
        pass  # the assertion below says how many the browser shows
    assert ui.rendered_images(page) == expected


def draw_a_seven(page, shot: Path) -> str:
    """What the notebook tells a learner who ran all cells and wants to draw: Run All ended by
    stopping the server, so run the cell that starts it and the panel's cell again. Then draw
    a 7, read the answer, press Clear, and run the clean-up cell again (the server stops)."""
    for step in DRAWING_CELLS:
        ui.run_cell(page, step, RUN_ALL_TIMEOUT)
    panel = ui.DrawingPanel(page, drawpad.CANVAS_SIZE)
    answer = draw(panel, SEVEN, shot)
    clear(panel)
    ui.run_cell(page, CLEAN_UP_CELL, RUN_ALL_TIMEOUT)
    return answer


def draw(panel, strokes, shot: Path) -> str:
    """Draw with the mouse and return the panel's answer once the server has replied."""
    panel.draw(strokes)
    expect(panel.answer).to_have_text(re.compile("The server says|No answer"), timeout=30_000)
    panel.page.screenshot(path=shot)
    assert panel.ink_pixels() > 1000, "the mouse strokes left no ink on the canvas"
    return panel.answer_text()


def clear(panel) -> None:
    """Press Clear: the canvas is blank and the panel asks for a digit again."""
    panel.clear_button.click()
    expect(panel.answer).to_have_text(re.compile("Draw a digit"))
    assert panel.ink_pixels() == 0, "Clear left ink on the canvas"
