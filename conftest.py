"""Test-session set-up shared by every test: a quiet, offline, isolated course.

Every worker gets its own models folder, so notebooks and tests running side by side never
see each other's exports; MNIST comes from the offline subset unless MNIST_SOURCE says else.
At the end, a timing table says where the minutes went, and the notes that tests recorded
with `record_property` (the browser test's Run All times and screenshot folder, the offline
install's size and time) are printed under it.

Scheduling (pytest-xdist, CourseScheduling below): a test module stays on one worker (its
module-scoped servers start once), each papermill notebook run is a group of its own, and the
browser's Run All of every notebook is split into two JupyterLabs balanced by the notebooks'
measured run times. Groups are handed out longest first, so the long ones never start last.
"""

from __future__ import annotations

import functools
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
#: Test files that take minutes (an install, notebooks): scheduled right after the browser.
LONG_FILES = ("tests/test_wheelhouse.py", "tests/test_classroom.py")


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


class Schedule:
    """Which group each test belongs to, and which groups go first, from its node id alone.

    The xdist controller never collects, so both the workers' ordering and the controller's
    grouping (CourseScheduling) read node ids only.
    """

    def __init__(self) -> None:
        self.seconds = _notebook_seconds()
        loads = [0] * BROWSER_LABS
        self.lab_of: dict[str, int] = {}
        for stem in sorted(self.seconds, key=lambda stem: -self.seconds[stem]):
            lab = loads.index(min(loads))  # longest first, onto the least loaded lab
            self.lab_of[stem] = lab
            loads[lab] += self.seconds[stem]
        self.lab_seconds = loads

    def group(self, nodeid: str) -> tuple[str, float]:
        """(group, rank): a group's tests run on one worker; lower ranks are handed out first."""
        path = nodeid.split("::")[0]
        param = nodeid.rsplit("[", 1)[-1].rstrip("]") if nodeid.endswith("]") else ""
        if path == "tests/test_browser.py":
            lab = self.lab_of.get(param, 0)
            return f"browser-lab-{lab}", -1e6 - self.lab_seconds[lab]
        if path in LONG_FILES:
            return path, -1e5
        if path == "tests/test_notebooks.py" and param in self.seconds:
            return f"papermill-{param}", -1e4 - self.seconds[param]
        return path, 0 if path.startswith("tests/server/") else 1


@functools.cache
def schedule() -> Schedule:
    """This process's schedule, built once."""
    return Schedule()


def pytest_collection_modifyitems(config, items) -> None:
    plan = schedule()
    for item in items:
        path = item.nodeid.split("::")[0]
        if path in TIMING_FILES:
            item.add_marker(pytest.mark.timing)
        if getattr(item, "originalname", "").startswith("test_notebook_runs"):
            item.add_marker(pytest.mark.notebook)  # a whole notebook through papermill
    # A stable sort: tests keep their order inside a group, a group's tests stay together, and
    # the controller hands groups out in this order (--no-loadscope-reorder).
    items.sort(key=lambda item: plan.group(item.nodeid)[::-1])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's load-scope scheduling with the course's groups (Schedule) as its scopes."""
    from xdist.scheduler import LoadScopeScheduling

    class CourseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return schedule().group(nodeid)[0]

    return CourseScheduling(config, log)


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
