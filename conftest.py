"""Test-session set-up shared by every test: a quiet, offline, isolated course.

Every worker gets its own models folder, so notebooks and tests running side by side never
see each other's exports; MNIST comes from the offline subset unless MNIST_SOURCE says else.
At the end, a timing table says where the minutes went, and the notes that tests recorded
with `record_property` (the browser test's Run All times and screenshot folder, the offline
install's size and time) are printed under it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # before gRPC starts: helpers/__init__
os.environ.setdefault("MNIST_SOURCE", "offline")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["COURSE_MODELS_DIR"] = tempfile.mkdtemp(prefix="course-models-")

_durations: dict[str, float] = defaultdict(float)
_notes: list[str] = []
_started = time.perf_counter()


def _group(nodeid: str) -> str:
    """The timing-table row a test belongs to."""
    path = nodeid.split("::")[0]
    if path.startswith("notebooks/"):
        return f"notebook {Path(path).stem} (nbval)"
    if path == "tests/test_notebooks.py" and "[" in nodeid:
        return f"notebook {nodeid.split('[', 1)[-1].rstrip(']')} (papermill)"
    if path.startswith("tests/server/"):
        return "server conformance"
    if path == "tests/test_hygiene.py":
        return "lint and spelling"
    if path == "tests/test_browser.py":
        return "browser: every notebook in JupyterLab"
    if path == "tests/test_wheelhouse.py":
        return "offline install from a wheelhouse"
    return "unit tests"


def pytest_unconfigure(config) -> None:
    shutil.rmtree(os.environ["COURSE_MODELS_DIR"], ignore_errors=True)


def pytest_runtest_logreport(report) -> None:
    _durations[_group(report.nodeid)] += report.duration
    if report.when == "call":  # user_properties travel from xdist workers with the report
        _notes.extend(f"{name}: {value}" for name, value in report.user_properties)


def pytest_terminal_summary(terminalreporter) -> None:
    rows = sorted(_durations.items())
    install = ROOT / ".venv" / ".install-seconds"
    if install.is_file():
        rows.insert(0, ("install (last make install)", float(install.read_text().strip() or 0)))
    if not rows:
        return
    terminalreporter.section("timing")
    for name, seconds in rows:
        terminalreporter.write_line(f"{name:<48} {seconds:8.1f} s")
    terminalreporter.write_line(
        f"{'wall time of this test run':<48} {time.perf_counter() - _started:8.1f} s"
    )
    if _notes:
        terminalreporter.section("notes")
        for line in sorted(_notes):
            terminalreporter.write_line(line)


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty models folder for one test."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("COURSE_MODELS_DIR", str(folder))
    return folder
