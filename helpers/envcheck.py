"""Pre-flight checks for learners and instructors: each prints [OK], [FAIL] or [INFO] with a fix.

Notebook 00 runs them; `python -m helpers.envcheck` runs them from a terminal (exit code 1 when
a requirement fails), which is how an instructor checks 30 laptops before a workshop.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import config

SUPPORTED_PYTHON = ((3, 10), (3, 13))


@dataclass(frozen=True)
class Check:
    """One line of the report. `required=False` checks only inform (e.g. Docker)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    @property
    def status(self) -> str:
        if self.ok:
            return "OK"
        return "FAIL" if self.required else "INFO"

    def line(self) -> str:
        text = f"[{self.status}] {self.name}: {self.detail}"
        return f"{text}\n       fix: {self.fix}" if self.fix and not self.ok else text


def check_python(version: tuple = tuple(sys.version_info[:3])) -> Check:
    low, high = SUPPORTED_PYTHON
    ok = low <= tuple(version[:2]) <= high
    return Check(
        "Python",
        ok,
        ".".join(map(str, version)),
        "install Python 3.10 to 3.13 and run `make lab` again (it rebuilds .venv).",
    )


def pinned_requirements(path: Path | None = None) -> dict[str, str]:
    """name -> pinned version, read from requirements.txt (the single source of truth)."""
    path = path or config.course_root() / "requirements.txt"
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_packages(pins: dict[str, str] | None = None) -> list[Check]:
    """One check per pinned package: installed, and at the pinned version."""
    pins = pinned_requirements() if pins is None else pins
    checks = []
    for name, wanted in pins.items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            checks.append(
                Check(name, False, "not installed", "run `make lab` (or `make install`).")
            )
            continue
        same = _normalise(found) == _normalise(wanted)
        detail = found if same else f"{found} (course pins {wanted})"
        checks.append(Check(name, same, detail, "run `make install` to get the pinned versions."))
    return checks


def summarise_packages(checks: list[Check]) -> list[Check]:
    """All package checks folded into one line when they pass; the failing ones kept apart."""
    failing = [c for c in checks if not c.ok]
    if failing:
        return failing
    return [Check(f"{len(checks)} pinned packages", True, "all installed at the pinned versions")]


def check_serving_versions() -> Check:
    """tensorflow and tensorflow-serving-api must share X.Y with the tensorflow/serving image."""
    try:
        tf_version = metadata.version("tensorflow")
        api_version = metadata.version("tensorflow-serving-api")
    except metadata.PackageNotFoundError as missing:
        return Check(
            "TF / TF Serving versions", False, f"{missing} is not installed", "make install"
        )
    same = tf_version.split(".")[:2] == api_version.split(".")[:2]
    return Check(
        "TF / TF Serving versions",
        same,
        f"tensorflow {tf_version}, tensorflow-serving-api {api_version}",
        "keep both (and the tensorflow/serving image) on the same version: make install.",
    )


def port_holder(port: int) -> str | None:
    """Who listens on localhost:`port` ('pid 123 (python)'), 'another process', or None if free."""
    from helpers.server.process import port_is_free

    if port_is_free(port, "localhost"):
        return None
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except Exception:  # psutil missing or not allowed to list sockets (macOS without root)
        pass
    return "another process"


def check_port(port: int, role: str) -> Check:
    holder = port_holder(port)
    if holder is None:
        return Check(f"port {port} ({role})", True, "free")
    return Check(
        f"port {port} ({role})",
        False,
        f"in use by {holder}",
        "stop that process (a server left running from another notebook?), or ignore this: "
        "the embedded server then picks free ports by itself.",
        required=False,
    )


def check_docker(timeout: float = 5.0) -> Check:
    """Docker is optional: the embedded server is the default back end."""
    docker = shutil.which("docker")
    if not docker:
        return Check(
            "Docker",
            False,
            "no docker command: the course uses its embedded server (fine)",
            "optional: install Docker to run the real tensorflow/serving with docker compose.",
            required=False,
        )
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        running = done.returncode == 0 and done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        running = False
    if running:
        return Check("Docker", True, f"engine {done.stdout.strip()} running", required=False)
    return Check(
        "Docker",
        False,
        "docker client found, but no engine answers: the embedded server will be used (fine)",
        "optional: start Docker Desktop / the docker service to use docker compose.",
        required=False,
    )


def check_data_source() -> Check:
    from helpers.data import choose_source, resolve_source

    start = time.perf_counter()
    try:
        asked = resolve_source()
        chosen = choose_source()
    except ValueError as error:
        return Check("MNIST data", False, str(error), "unset MNIST_SOURCE or set it to auto.")
    seconds = time.perf_counter() - start
    detail = f"{chosen} (asked: {asked}; decided in {seconds:.1f} s)"
    return Check("MNIST data", True, detail)


def check_server_setting() -> Check:
    try:
        address = config.server_address()
    except ValueError as error:
        return Check("model server", False, str(error), f"unset {config.SERVER_ENV}.")
    if address.embedded:
        return Check("model server", True, "embedded (started by the notebooks on localhost)")
    try:
        with socket.create_connection((address.host, address.grpc_port), timeout=3):
            pass
        return Check("model server", True, f"{address.grpc_target} answers")
    except OSError as error:
        return Check(
            "model server",
            False,
            f"{config.SERVER_ENV} points at {address.grpc_target}, which does not answer "
            f"({error.__class__.__name__})",
            f"start it (`docker compose up -d tf-serving`) or unset {config.SERVER_ENV}.",
        )


def check_disk(path: Path | None = None, need_gb: float = 1.0) -> Check:
    path = path or config.course_root()
    free_gb = shutil.disk_usage(path).free / 1e9
    return Check(
        "disk space",
        free_gb >= need_gb,
        f"{free_gb:.1f} GB free",
        f"free at least {need_gb} GB for models and caches.",
    )


def run_checks(*, packages: bool = True) -> list[Check]:
    """All checks, in the order a person fixes them."""
    checks = [check_python()]
    if packages:
        checks += summarise_packages(check_packages())
    checks += [
        check_serving_versions(),
        check_data_source(),
        check_server_setting(),
        check_port(config.DEFAULT_GRPC_PORT, "gRPC"),
        check_port(config.DEFAULT_REST_PORT, "REST"),
        check_docker(),
        check_disk(),
    ]
    return checks


def report(checks: list[Check]) -> str:
    lines = [check.line() for check in checks]
    failed = [c for c in checks if c.required and not c.ok]
    required = [c for c in checks if c.required]
    lines.append(
        f"\n{len(required) - len(failed)}/{len(required)} required checks passed"
        + (": ready." if not failed else f"; fix: {', '.join(c.name for c in failed)}.")
    )
    lines.append(verdict(checks))
    return "\n".join(lines)


def verdict(checks: list[Check]) -> str:
    """One line to read from across the room: READY, or the first thing to fix.

    The checks come in the order a person fixes them, so the first failure is the one to fix
    first (a wrong Python makes every package check fail too).
    """
    failed = [c for c in checks if c.required and not c.ok]
    if not failed:
        return "READY"
    first = failed[0]
    return f"FIX FIRST: {first.name}: {first.fix or first.detail}"


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    checks = run_checks()
    print(report(checks))
    return 1 if any(c.required and not c.ok for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
