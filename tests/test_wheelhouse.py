"""The workshop's offline install, done for real: `make wheelhouse`, then `make install FROM=...`.

An instructor fills a wheelhouse once (on a good network), and thirty laptops install from it with
pip's index switched off. This test does both in a temporary copy of the course: the wheelhouse
is built as `make wheelhouse` builds it (pip's cache and configured indexes make a second build
quick), then a fresh virtual environment is created by `make install FROM=<wheelhouse>` with no
pip configuration, `--no-index`, and a proxy that refuses every connection, so a single package
fetched from anywhere but the wheelhouse fails the install. The new environment must import the
course, hold every pinned version and have the course kernel. The wheelhouse's size and the
install's time go to the run's notes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What `make install` reads: the rest of the repository is not needed to install.
INSTALL_FILES = ("Makefile", "requirements.txt", "pyproject.toml", "README.md", "helpers")
#: Nothing listens there: any connection pip tries outside the wheelhouse fails at once.
DEAD_PROXY = "http://127.0.0.1:9"
#: What the fresh environment runs to prove it is the course's environment.
PROOF = """
import helpers, helpers.client, helpers.server, helpers.export, helpers.kernel
from helpers import envcheck
wrong = [c.line() for c in envcheck.check_packages() if not c.ok]
assert not wrong, wrong
print(helpers.__file__)
"""

pytestmark = [pytest.mark.offline_install, pytest.mark.timeout(1500)]


def copy_of_the_course(where: Path) -> Path:
    course = where / "course"
    course.mkdir()
    for name in INSTALL_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, course / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, course / name)
    return course


def offline_environment() -> dict[str, str]:
    """This process's environment without any pip setting, and with the network refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # no index, find-links or constraint from this machine
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        HTTP_PROXY=DEAD_PROXY,
        HTTPS_PROXY=DEAD_PROXY,
        http_proxy=DEAD_PROXY,
        https_proxy=DEAD_PROXY,
        NO_PROXY="",
        no_proxy="",
        # Compiling every module to bytecode proves nothing about where the packages came
        # from (Python compiles on import), and TensorFlow alone has thousands: skip it.
        PIP_NO_COMPILE="1",
    )
    return env


def make(course: Path, *args: str, env: dict[str, str] | None = None) -> float:
    """Run `make <args>` in the copy; fail with its output; return the seconds it took."""
    start = time.perf_counter()
    done = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, f"make {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir())


@pytest.mark.skipif(shutil.which("make") is None, reason="no `make` command on this machine")
def test_the_course_installs_from_a_wheelhouse_with_no_index(record_property):
    # Not pytest's tmp_path: it keeps its last three folders, and these hold gigabytes.
    with tempfile.TemporaryDirectory(prefix="course-offline-install-") as work:
        install_offline(Path(work), record_property)


def install_offline(tmp_path: Path, record_property) -> None:
    course = copy_of_the_course(tmp_path)
    wheelhouse = tmp_path / "wheelhouse"
    base_python = getattr(sys, "_base_executable", sys.executable)

    build_seconds = make(
        course, "wheelhouse", f"WHEELHOUSE={wheelhouse}", f"PYTHON={sys.executable}"
    )
    wheels = sorted(path.name for path in wheelhouse.iterdir())
    assert any(name.startswith("grpc_serving_course-") for name in wheels), wheels
    assert any(name.startswith("tensorflow-") for name in wheels), wheels

    install_seconds = make(
        course, "install", f"FROM={wheelhouse}", f"PYTHON={base_python}", env=offline_environment()
    )
    venv_python = course / ".venv" / "bin" / "python"
    proof = subprocess.run(  # outside both checkouts: `helpers` must come from the install
        [str(venv_python), "-c", PROOF],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proof.returncode == 0, proof.stderr
    assert Path(proof.stdout.strip()).is_relative_to(course / "helpers")  # the editable install
    kernel = course / ".venv" / "share" / "jupyter" / "kernels" / "grpc-serving-course"
    assert (kernel / "kernel.json").is_file()

    record_property(
        "offline install",
        f"wheelhouse {len(wheels)} files, {folder_bytes(wheelhouse) / 1e6:.0f} MB, built in "
        f"{build_seconds:.0f} s; offline `make install FROM=...` took {install_seconds:.0f} s",
    )
