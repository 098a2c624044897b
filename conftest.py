"""Test-session set-up shared by every test: a quiet, offline, isolated course.

Every worker gets its own models folder, so notebooks and tests running side by side never
see each other's exports; MNIST comes from the offline subset unless MNIST_SOURCE says else.
At the end, a timing table says where the minutes went, and the notes that tests recorded
with `record_property` (the browser test's Run All times and screenshot folder, the offline
install's size and time) are printed under it.

Scheduling (pytest-xdist, `--dist loadgroup`): a test module stays on one worker (its
module-scoped servers start once), each papermill notebook run is a group of its own, and the
browser's Run All of every notebook is split into two JupyterLabs balanced by the notebooks'
measured run times. Groups are handed out longest first, so the long ones never start last.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import nbformat
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
        return f"notebook {Path(path).stem} (nbval, make test-nbval)"
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


#: How many JupyterLabs share the browser test's Run All of every notebook.
BROWSER_LABS = 2
#: Test files that are one long test each: scheduled right after the browser's groups.
LONG_FILES = ("tests/test_wheelhouse.py",)


#: Tests whose outcome rests on timing: deadlines, races, concurrent calls, measured runs.
#: `make test-loaded` runs them (and every papermill notebook) beside two busy processes.
TIMING_FILES = (
    "tests/test_client.py",
    "tests/test_data.py",
    "tests/test_monitoring.py",
    "tests/test_production_helpers.py",
    "tests/test_protocols.py",
    "tests/test_scale_out.py",
    "tests/test_solutions_05.py",
    "tests/test_solutions_07.py",
    "tests/test_solutions_08.py",
    "tests/test_solutions_10.py",
    "tests/server/test_batcher_units.py",
    "tests/server/test_deadlines.py",
    "tests/server/test_lifecycle.py",
    "tests/server/test_manager_units.py",
    "tests/server/test_process.py",
    "tests/server/test_rest_server.py",
    "tests/server/test_tls_limits_batching.py",
    "tests/server/test_versions.py",
)


def _notebook_seconds() -> dict[str, int]:
    """{notebook stem: the run time its overview states}, measured by helpers.timing."""
    from helpers.timing import overview_time

    return {
        path.stem: overview_time(nbformat.read(path, as_version=4)) or 60
        for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    }


def _browser_labs(seconds: dict[str, int]) -> dict[str, int]:
    """{notebook stem: which lab runs it}: longest first onto the least loaded lab."""
    loads = [0] * BROWSER_LABS
    lab_of = {}
    for stem in sorted(seconds, key=lambda stem: -seconds[stem]):
        lab = loads.index(min(loads))
        lab_of[stem] = lab
        loads[lab] += seconds[stem]
    return lab_of


def _schedule(item, seconds, lab_of) -> tuple[str, float]:
    """(xdist group, rank): lower ranks are handed out first."""
    path = item.nodeid.split("::")[0]
    param = item.callspec.id if hasattr(item, "callspec") else ""
    if path == "tests/test_browser.py":
        lab = lab_of.get(param, 0)
        return f"browser-lab-{lab}", -1e6 - sum(s for k, s in seconds.items() if lab_of[k] == lab)
    if path in LONG_FILES:
        return path, -1e5
    if path == "tests/test_notebooks.py" and param in seconds:
        item.add_marker(pytest.mark.notebook)
        return f"papermill-{param}", -1e4 - seconds[param]
    if path.startswith("tests/server/"):
        return path, 0
    return path, 1


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    seconds = _notebook_seconds()
    lab_of = _browser_labs(seconds)
    ranks = {}
    for item in items:
        if item.nodeid.split("::")[0] in TIMING_FILES:
            item.add_marker(pytest.mark.timing)
        group, rank = _schedule(item, seconds, lab_of)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
        ranks[item.nodeid] = (rank, group)
    # a stable sort: tests keep their order inside a group, and a group's tests stay together
    items.sort(key=lambda item: ranks[item.nodeid])


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
