"""helpers.progress: a bar that ends readable in a saved notebook and never writes to stderr."""

from __future__ import annotations

import pytest

from helpers import progress


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("\r 40%|####      | 2/5", " 40%|####      | 2/5"),
        ("\r 40%|####| 2/5\r100%|##########| 5/5\n", "100%|##########| 5/5"),
        ("\n", None),
        ("\r", None),
    ],
)
def test_the_last_line_is_what_a_terminal_would_show(written, shown):
    assert progress.last_line(written) == shown


class FakeHandle:
    """Stands in for IPython's DisplayHandle: remembers every update."""

    def __init__(self):
        self.shown = []

    def update(self, bundle, raw=False):
        assert raw
        self.shown.append(bundle["text/plain"])


def test_in_a_notebook_the_bar_replaces_one_output_line_and_ends_complete(monkeypatch, capsys):
    import IPython.display

    handle = FakeHandle()
    monkeypatch.setattr(IPython.display, "display", lambda *args, **kwargs: handle)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    for _ in progress.progress(range(5), desc="calls", mininterval=0):
        pass
    assert handle.shown, "the bar was never shown"
    assert handle.shown[-1].startswith("calls: 100%|") and "5/5" in handle.shown[-1]
    assert "█" in handle.shown[-1]  # Unicode blocks, as tqdm draws them on a UTF-8 stream
    assert capsys.readouterr().err == ""  # nothing on stderr: no pink boxes in a notebook


def test_outside_a_notebook_tqdm_writes_to_stderr_as_usual(capsys):
    assert not progress.in_notebook()
    for _ in progress.progress(range(3), desc="work"):
        pass
    assert "work: 100%" in capsys.readouterr().err
