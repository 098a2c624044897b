"""JupyterLab started exactly as `make lab` starts it, on a temporary copy of the notebooks.

The browser test needs the learner's JupyterLab, not a look-alike: this runs `make lab` itself,
with its own free port (LAB_PORT), its own token ($JUPYTER_TOKEN) and a temporary copy of
`notebooks/` (LAB_DIR), so the repository is never modified. The kernels it starts import the
installed `helpers` of this checkout; their models go to a temporary $COURSE_MODELS_DIR.
Jupyter's configuration, runtime and IPython folders are temporary too, so a test run leaves
nothing in the learner's home folder.

On the way out, JupyterLab is asked to shut down (which stops its kernels, whose servers die
with them); then every process it started must be gone and every port they listened on must
be closed, or the test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from helpers import config
from helpers.server.process import free_port

ROOT = config.course_root()
#: The stamp `make install` leaves; `make -o` keeps make from reinstalling in the middle of a test.
INSTALL_STAMP = ".venv/.installed"
#: Variables of the test run that a learner's JupyterLab does not have: conftest sets
#: MPLBACKEND=Agg for headless runs, which would hide every plot in JupyterLab.
NOT_FOR_THE_LEARNER = ("MPLBACKEND", "COURSE_RECORD_FILE")
#: JupyterLab's runtime folder inside the work folder: where it writes jpserver-PID.json.
RUNTIME_FOLDER = "jupyter-runtime"


class LabError(RuntimeError):
    """JupyterLab did not start, or left something running when it stopped."""


@dataclass
class Lab:
    """A running JupyterLab: where it is, what it serves, and what it started."""

    url: str
    token: str
    notebooks: Path
    process: subprocess.Popen
    log: Path
    started: list[psutil.Process] = field(default_factory=list)
    listened: set[tuple[str, int]] = field(default_factory=set)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """Call JupyterLab's REST API (token in the header, as the browser sends it)."""
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def remember_children(self) -> None:
        """Note every process JupyterLab started and every port they listen on, so far."""
        try:
            family = [psutil.Process(self.process.pid)]
            family += family[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for process in family:
            if process not in self.started:
                self.started.append(process)
            try:
                connections = process.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for conn in connections:
                if conn.status == psutil.CONN_LISTEN:
                    self.listened.add((conn.laddr.ip, conn.laddr.port))


def _environment(work: Path, token: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in NOT_FOR_THE_LEARNER and not k.startswith("PYTEST_")
    }
    env.update(
        JUPYTER_TOKEN=token,
        JUPYTER_CONFIG_DIR=str(work / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(work / RUNTIME_FOLDER),
        IPYTHONDIR=str(work / "ipython"),
        COURSE_MODELS_DIR=str(work / "models"),
    )
    return env


def _write_config(work: Path) -> None:
    """`make lab` opens a browser on a desktop; a test drives its own browser instead."""
    folder = work / "jupyter-config"
    folder.mkdir(parents=True)
    (folder / "jupyter_server_config.json").write_text('{"ServerApp": {"open_browser": false}}')


def _server_url(runtime: Path) -> str | None:
    """Where this JupyterLab listens, from the server file it writes once listening.

    Not the LAB_PORT it was given: a port picked free can be taken before JupyterLab binds
    it, and then JupyterLab listens on the next free one (its port_retries)."""
    for info in runtime.glob("jpserver-*.json"):
        try:
            port = json.loads(info.read_text())["port"]
        except (OSError, ValueError, KeyError):
            continue  # still being written
        return f"http://127.0.0.1:{port}"
    return None


def _wait_until_up(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            raise LabError(
                f"`make lab` exited with code {lab.process.returncode}:\n{lab.log_tail()}"
            )
        url = _server_url(lab.log.parent / RUNTIME_FOLDER)
        if url is None:
            time.sleep(0.3)
            continue
        lab.url = url
        try:
            if lab.api("GET", "/api/status").status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise LabError(f"JupyterLab did not answer within {timeout:.0f} s:\n{lab.log_tail()}")


def _nothing_listens(ip: str, port: int) -> bool:
    host = "127.0.0.1" if ip in ("0.0.0.0", "") else "::1" if ip == "::" else ip
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def _stop(lab: Lab, timeout: float = 30.0) -> list[str]:
    """Shut JupyterLab down and return what it left behind (empty when all is clean)."""
    lab.remember_children()
    try:
        lab.api("POST", "/api/shutdown")
    except requests.RequestException:
        pass  # already gone: the checks below still run
    try:
        lab.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(lab.started, timeout=10)
    alive += [p for p in _same_session(lab.process.pid) if p not in alive]
    problems = [f"still running after shutdown: pid {p.pid} {_describe(p)}" for p in alive]
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    problems += [
        f"port {port} ({ip}) still listening after shutdown"
        for ip, port in sorted(lab.listened)
        if not _nothing_listens(ip, port)
    ]
    return problems


def _same_session(session: int) -> list[psutil.Process]:
    """Processes still in the session `make lab` led, even those whose parent already died."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session:
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


def _describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:160]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "(exited)"


@contextmanager
def running_lab(work: Path, *, start_timeout: float = 90.0) -> Iterator[Lab]:
    """`make lab` on a copy of notebooks/ inside `work` (an empty folder); stopped on exit.

    Raises LabError on exit if a process or a listening port outlived the shutdown.
    """
    notebooks = work / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".*"))
    _write_config(work)
    token = secrets.token_hex(16)
    port = free_port()
    log = work / "jupyterlab.log"
    command = [
        "make",
        "--no-print-directory",
        "-o",
        INSTALL_STAMP,
        "lab",
        f"BIN={Path(sys.executable).parent}",  # the environment running the tests
        f"LAB_PORT={port}",
        f"LAB_DIR={notebooks}",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=_environment(work, token),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: nothing escapes the clean-up
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, notebooks, process, log)
    try:
        _wait_until_up(lab, start_timeout)
        yield lab
    finally:
        problems = _stop(lab)
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
    if problems:
        raise LabError("JupyterLab did not stop cleanly:\n" + "\n".join(problems))
