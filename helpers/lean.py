"""Run the TensorFlow-free client in `lean_client/`, and weigh it against the TensorFlow one.

The lean client's messages have TensorFlow's own package and names (`tensorflow.TensorProto`),
so they cannot share a process with TensorFlow's protos: both would claim the same names in
protobuf's registry. Every lean run here is therefore a fresh Python process, which is also the
honest way to time imports. In that process `import tensorflow` fails, which proves the client
needs none of it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

LEAN_CLIENT = Path(__file__).resolve().parent.parent / "lean_client"
#: What each client installs: lean_client/requirements.txt, and the TensorFlow client.
LEAN_REQUIREMENTS = ("grpcio", "protobuf", "numpy")
TENSORFLOW_REQUIREMENTS = ("grpcio", "protobuf", "numpy", "tensorflow", "tensorflow-serving-api")

#: Python code run before the client: makes `import tensorflow` (and the serving API) fail.
_BLOCK_TENSORFLOW = (
    "import sys\n"
    "for name in ('tensorflow', 'tensorflow_serving', 'keras'):\n"
    "    sys.modules[name] = None  # import now raises ImportError\n"
)

#: What each client imports before it can send a Predict.
IMPORTS = {
    "lean": "import grpc, numpy\nfrom lean_serving import predict_pb2, predict_pb2_grpc",
    "tensorflow": (
        "import grpc, numpy, tensorflow\n"
        "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc"
    ),
}


def run_lean_client(
    server: str,
    model: str,
    *,
    digits: Path | None = None,
    probabilities: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> list[int]:
    """Run `python lean_client/predict.py` with TensorFlow unimportable; return its digits.

    Raises RuntimeError with the client's own error output when it fails.
    """
    args = ["--server", server, "--model", model, *extra_args]
    if digits is not None:
        args += ["--digits", str(digits)]
    if probabilities is not None:
        args += ["--probabilities", str(probabilities)]
    script = LEAN_CLIENT / "predict.py"
    code = (
        _BLOCK_TENSORFLOW
        + f"sys.path.insert(0, {str(LEAN_CLIENT)!r})\n"
        + f"sys.argv = [{str(script)!r}, *{args!r}]\n"
        + "import runpy\n"
        + f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"lean_client/predict.py exited with {result.returncode}:\n{result.stderr.strip()}"
        )
    return [int(line) for line in result.stdout.split()]


def import_seconds(kind: str, runs: int = 1) -> float:
    """Median seconds a fresh Python takes to import what the `kind` client needs."""
    if kind not in IMPORTS:
        raise ValueError(f"kind must be one of {sorted(IMPORTS)}, got {kind!r}")
    prelude = _BLOCK_TENSORFLOW if kind == "lean" else "import sys\n"
    code = (
        prelude
        + f"sys.path.insert(0, {str(LEAN_CLIENT)!r})\n"
        + "import time\nstarted = time.perf_counter()\n"
        + IMPORTS[kind]
        + "\nprint(time.perf_counter() - started)\n"
    )
    times = []
    for _ in range(max(1, runs)):
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"importing the {kind} client failed:\n{result.stderr.strip()}")
        times.append(float(result.stdout.split()[-1]))
    return float(np.median(times))


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def dependency_closure(roots: Sequence[str]) -> list[str]:
    """The installed distributions `roots` need, themselves included (extras and markers for
    other platforms left out), as normalised names."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_name(root) for root in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_name(requirement.name))
    return sorted(seen)


def installed_bytes(names: Sequence[str]) -> int:
    """Bytes on disk of the files these installed distributions list in their RECORD."""
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or ():
            path = Path(file.locate())
            if path.is_file():
                total += path.stat().st_size
    return total


@dataclass(frozen=True)
class ClientCost:
    """What installing and starting one kind of client costs."""

    kind: str
    distributions: list[str]
    installed_mb: float
    import_s: float
    lines_of_code: int | None = None

    def as_dict(self) -> dict:
        return json.loads(json.dumps(self.__dict__))


def client_cost(kind: str, import_runs: int = 1) -> ClientCost:
    """Installed size (the client's dependencies, measured in this environment) and import time."""
    roots = LEAN_REQUIREMENTS if kind == "lean" else TENSORFLOW_REQUIREMENTS
    names = dependency_closure(roots)
    return ClientCost(
        kind=kind,
        distributions=names,
        installed_mb=installed_bytes(names) / 1e6,
        import_s=import_seconds(kind, import_runs),
    )


def lines_of_code(path: Path) -> int:
    """Non-blank lines that are not comments: a rough measure of what a reader has to read."""
    count = 0
    for line in Path(path).read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "//")):
            count += 1
    return count
