"""Progress bars that read well live, in a terminal, and in a saved notebook.

tqdm draws the bar. In a Jupyter kernel its text goes to one line of notebook output that each
refresh replaces (an IPython display handle), instead of to stderr: nothing shows up as a pink
stderr box, and a saved or headless-executed notebook keeps the bar's last state
(`100%|##########| 10/10 ...`), never a frozen `0%` placeholder as a widget's text fallback
does. Outside a kernel (a terminal, `make check`) tqdm writes to stderr as usual.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any


def in_notebook() -> bool:
    """True when running inside a Jupyter kernel (JupyterLab, nbconvert, papermill)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def last_line(text: str) -> str | None:
    """The text a terminal would show last: what follows the final carriage return or newline.

    tqdm redraws by writing `\\r` + the new state; it ends a closed bar with a newline.
    Returns None when `text` holds nothing to show (a lone `\\r` or `\\n`).
    """
    parts = [part for part in text.replace("\n", "\r").split("\r") if part.strip()]
    return parts[-1].rstrip() if parts else None


class DisplayLine(io.TextIOBase):
    """A writable text stream shown as one line of notebook output, replaced at each write."""

    encoding = "utf-8"  # tqdm draws Unicode blocks only for streams that declare UTF-8

    def __init__(self) -> None:
        from IPython.display import display

        self.text = ""
        self._handle = display({"text/plain": ""}, raw=True, display_id=True)

    def write(self, text: str) -> int:
        line = last_line(text)
        if line is not None and line != self.text:
            self.text = line
            self._handle.update({"text/plain": line}, raw=True)
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


def progress(iterable: Iterable[Any] | None = None, **tqdm_options: Any):
    """A tqdm progress bar (same arguments as `tqdm.tqdm`) that a notebook keeps readable."""
    from tqdm import tqdm

    if in_notebook() and "file" not in tqdm_options:
        tqdm_options["file"] = DisplayLine()
    return tqdm(iterable, **tqdm_options)
