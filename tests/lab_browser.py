"""Debian's Chromium, driven by Playwright, doing in JupyterLab what a learner does.

Playwright never downloads a browser here: it drives the system's `/usr/bin/chromium`
(`apt-get install chromium`), with the flags a machine without internet needs. The actions
below go through JupyterLab's own menus and file browser (open a notebook, Run > Run All
Cells, save, File > Close and Shut Down Notebook) and read what the page shows.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The system browser the test drives (Debian's `chromium` package).
CHROMIUM = Path("/usr/bin/chromium")
#: How a learner's machine gets it: the one-line reason a skipped browser test gives.
INSTALL_HINT = (
    f"no Chromium at {CHROMIUM}: install it (Debian/Ubuntu: `sudo apt-get install chromium`) "
    "to run the browser test"
)
#: No sandbox as root (Chromium refuses to start otherwise); nothing that calls home.
CHROMIUM_FLAGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: A page big enough for a plot and the drawing panel side by side.
VIEWPORT = {"width": 1400, "height": 1000}

_PROMPTS = """() => [...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
    .map(prompt => prompt.textContent.trim())"""
_KERNEL_STATE = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
_KERNEL_NAME = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName"
_CURRENT_TAB = ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current"


def launch_options() -> dict:
    flags = list(CHROMIUM_FLAGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.insert(0, "--no-sandbox")
    return {"executable_path": str(CHROMIUM), "headless": True, "args": flags}


#: What JupyterLab 4 itself logs when a notebook's kernel goes away while its debugger sidebar
#: asks that kernel for its state: the request is cancelled with the kernel. Close and Shut
#: Down causes it, and it may arrive seconds later, while the next notebook runs; the course
#: restarts no kernel, so it never comes from a cell. It is not counted as an error.
SHUTDOWN_NOISE = re.compile(
    r"^Could not restore the debugger state: Canceled future for debug_request message"
)


@dataclass
class PageWatch:
    """Everything the browser reported that a learner would call an error."""

    console_errors: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(f"console: {message.text}")
                if message.type == "error" and not SHUTDOWN_NOISE.match(message.text)
                else None
            ),
        )
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))

    def take(self) -> list[str]:
        """The errors seen since the last call."""
        seen, self.console_errors = self.console_errors, []
        return seen


def open_lab(page, url: str, token: str, timeout_ms: float = 60_000) -> None:
    """Log in with the token and wait for the file browser (a fresh workspace)."""
    page.goto(f"{url}/lab?token={token}&reset", timeout=timeout_ms)
    page.locator(".jp-DirListing-item").first.wait_for(timeout=timeout_ms)


def launcher_kernels(page) -> list[str]:
    """The kernels the Launcher offers under 'Notebook'."""
    cards = page.locator(".jp-Launcher-section").filter(has_text="Notebook")
    return cards.first.locator(".jp-LauncherCard-label").all_text_contents()


def open_notebook(page, name: str, timeout_ms: float = 120_000) -> None:
    """Double-click the notebook in the file browser; wait for its kernel, or for a dialog.

    A notebook whose kernel JupyterLab cannot find opens a "Select Kernel" dialog instead of
    starting one: the caller checks `dialogs(page)`.
    """
    page.locator(".jp-DirListing-item", has_text=name).first.dblclick()
    page.locator(_CURRENT_TAB, has_text=name).wait_for(timeout=timeout_ms)
    page.wait_for_function(
        f"""() => document.querySelector('.jp-Dialog') !== null || (
            !['', 'No Kernel'].includes(
                document.querySelector('{_KERNEL_NAME}')?.textContent.trim() ?? '') &&
            document.querySelector('{_KERNEL_STATE}')?.dataset.status === 'idle')""",
        timeout=timeout_ms,
        polling=100,
    )


def kernel_name(page) -> str:
    """The kernel shown in the notebook's toolbar."""
    return (page.locator(_KERNEL_NAME).text_content() or "").strip()


def dialogs(page) -> list[str]:
    """The text of every JupyterLab dialog on screen (kernel choice, errors...)."""
    return [" ".join(text.split()) for text in page.locator(".jp-Dialog").all_text_contents()]


def toasts(page) -> list[str]:
    """The text of every notification toast on screen (news question, update offer...)."""
    return [" ".join(text.split()) for text in page.locator(".Toastify__toast").all_text_contents()]


def click_menu(page, menu: str, item: str) -> None:
    """Menu bar > menu > item, as a learner clicks it."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def run_all(page, timeout_s: float) -> float:
    """Run > Run All Cells, then wait until no cell is queued or running; return the seconds.

    A cell that fails stops the run: the cells after it go back to `[ ]`, which the caller
    sees in the saved notebook.
    """
    start = time.perf_counter()
    click_menu(page, "Run", "Run All Cells")
    page.wait_for_function(
        f"() => ({_PROMPTS})().some(p => p.includes('*'))", timeout=10_000, polling=100
    )
    page.wait_for_function(
        f"""() => !({_PROMPTS})().some(p => p.includes('*')) &&
            document.querySelector('{_KERNEL_STATE}')?.dataset.status === 'idle'""",
        timeout=timeout_s * 1000,
        polling=250,
    )
    return time.perf_counter() - start


def run_cell(page, containing: str, timeout_s: float) -> None:
    """Click the code cell whose source contains `containing` and run it (Ctrl+Enter), as a
    learner re-runs one cell; wait until it has a new execution count and the kernel is idle."""
    cell = (
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
        .filter(has=page.locator(".jp-InputArea", has_text=containing))
        .first
    )
    cell.scroll_into_view_if_needed()
    prompt = cell.locator(".jp-InputPrompt")
    before = (prompt.text_content() or "").strip()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")
    handle = prompt.element_handle()
    page.wait_for_function(
        f"""([prompt, before]) => {{
            const now = prompt.textContent.trim();
            return now !== before && /\\[\\d+\\]/.test(now) &&
                document.querySelector('{_KERNEL_STATE}')?.dataset.status === 'idle'; }}""",
        arg=[handle, before],
        timeout=timeout_s * 1000,
        polling=250,
    )
    page.keyboard.press("Escape")  # back to command mode, as after Run All


def save(page, timeout_ms: float = 30_000) -> None:
    """File > Save Notebook, and wait until the tab is no longer marked as changed."""
    click_menu(page, "File", "Save Notebook")
    page.wait_for_function(
        f"() => !document.querySelector('{_CURRENT_TAB}').classList.contains('jp-mod-dirty')",
        timeout=timeout_ms,
    )


def close_and_shut_down(page, watch: PageWatch, name: str, timeout_ms: float = 30_000) -> list[str]:
    """File > Close and Shut Down Notebook…, confirmed: its kernel (and servers) stop.

    Waits until JupyterLab has no session left for the notebook `name`, and returns what the
    browser reported meanwhile.
    """
    click_menu(page, "File", "Close and Shut Down Notebook…")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.locator(".jp-Dialog").wait_for(state="detached")
    page.wait_for_function(
        """async name => {
            const response = await fetch('/api/sessions', {credentials: 'same-origin'});
            const sessions = await response.json();
            return !sessions.some(session => session.path.split('/').pop() === name);
        }""",
        arg=name,
        timeout=timeout_ms,
        polling=250,
    )
    page.wait_for_timeout(1000)  # late console messages of the kernel that went away
    return watch.take()


def rendered_images(page) -> int:
    """Image outputs (plots) of the current notebook that the browser actually decoded.

    Only JupyterLab's own image renderer counts: a widget's picture (the drawing panel's
    preview) is not a cell output.
    """
    return page.evaluate(RENDERED_IMAGES)


#: A page function: how many of the current notebook's output images are decoded.
RENDERED_IMAGES = """() => [...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea .jp-RenderedImage img')]
    .filter(img => img.complete && img.naturalWidth > 0).length"""


class DrawingPanel:
    """Notebook 06's panel (helpers/drawpad.py) as the browser shows it: canvas, answer, Clear."""

    def __init__(self, page, canvas_size: int) -> None:
        self.page = page
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").filter(
            has=page.locator(f'canvas[width="{canvas_size}"]')
        )
        self.canvas = panel.locator(f'canvas[width="{canvas_size}"]').first
        self.answer = panel.locator(".widget-html-content").first
        self.clear_button = panel.locator("button", has_text="Clear").first

    def draw(self, strokes) -> None:
        """Press, move and release the mouse along each stroke (canvas pixel coordinates)."""
        self.canvas.scroll_into_view_if_needed()
        box = self.canvas.evaluate(
            """canvas => { const r = canvas.getBoundingClientRect();
                return {x: r.left + canvas.clientLeft, y: r.top + canvas.clientTop,
                        scale: canvas.clientWidth / canvas.width}; }"""
        )
        mouse = self.page.mouse
        for stroke in strokes:
            (x, y), rest = stroke[0], stroke[1:]
            mouse.move(box["x"] + x * box["scale"], box["y"] + y * box["scale"])
            mouse.down()
            for x, y in rest:
                mouse.move(box["x"] + x * box["scale"], box["y"] + y * box["scale"], steps=12)
            mouse.up()

    def ink_pixels(self) -> int:
        """How many canvas pixels are dark: 0 on a cleared canvas."""
        return self.canvas.evaluate(
            """canvas => { const data = canvas.getContext('2d')
                .getImageData(0, 0, canvas.width, canvas.height).data;
                let dark = 0;
                for (let i = 0; i < data.length; i += 4) if (data[i] < 128) dark++;
                return dark; }"""
        )

    def answer_text(self) -> str:
        return " ".join((self.answer.text_content() or "").split())
