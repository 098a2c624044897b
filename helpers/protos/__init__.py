"""The course's own `.proto` files, compiled with grpcio-tools when they are first used.

No generated code is kept in the repository: `load_proto("digits")` runs
`python -m grpc_tools.protoc` once into a cache folder named after a hash of the `.proto`
file and of the compiler and runtime versions, then imports the result as
`helpers.protos.digits_pb2` and `helpers.protos.digits_pb2_grpc`. Editing a `.proto`
file therefore recompiles it on the next fresh start; nothing is ever hand-edited.

Protos are compiled with the folder that holds the `helpers` package as the include root,
so a file `helpers/protos/x.proto` is named `helpers/protos/x.proto` inside protobuf and
its generated modules import each other as `from helpers.protos import x_pb2`. One course
proto can import another with `import "helpers/protos/other.proto";`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

#: The folder that holds the course's `.proto` files.
PROTO_DIR = Path(__file__).resolve().parent
#: The include root passed to protoc with `-I`: the folder that holds the `helpers` package.
INCLUDE_ROOT = PROTO_DIR.parent.parent
#: Environment variable that moves the compile cache (default: the user's cache folder).
CACHE_ENV = "COURSE_PROTO_CACHE"

_lock = threading.Lock()
_loaded: dict[str, tuple[str, ProtoModules]] = {}


class ProtoModules(NamedTuple):
    """The two modules protoc generates for one `.proto` file."""

    pb2: ModuleType  #: messages (`digits_pb2.DigitImage`, ...)
    pb2_grpc: ModuleType  #: service stubs, servicer base classes and `add_..._to_server`


class ProtoCompileError(RuntimeError):
    """protoc refused a `.proto` file; the message holds protoc's own error lines."""


def proto_path(name: str) -> Path:
    """The path of the course proto `name` (`"digits"` -> `.../helpers/protos/digits.proto`)."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"proto name must be a plain identifier such as 'digits', got {name!r}")
    path = PROTO_DIR / f"{name}.proto"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROTO_DIR.glob("*.proto"))) or "none"
        raise FileNotFoundError(f"no proto named {name!r} in {PROTO_DIR} (known: {known})")
    return path


def protoc_command(name: str, out_dir: str | os.PathLike[str], *, pyi: bool = True) -> list[str]:
    """The full `python -m grpc_tools.protoc ...` command that compiles proto `name` into `out_dir`.

    `python -m grpc_tools.protoc` adds the include folder of protobuf's well-known types
    (`google/protobuf/*.proto`) by itself.
    """
    relative = proto_path(name).relative_to(INCLUDE_ROOT).as_posix()
    out = os.fspath(out_dir)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{INCLUDE_ROOT}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
    ]
    if pyi:
        command.append(f"--pyi_out={out}")
    command.append(relative)
    return command


def compile_proto(name: str, out_dir: str | os.PathLike[str], *, pyi: bool = True) -> list[Path]:
    """Compile proto `name` into `out_dir` (created if needed) and return the generated files.

    The files land under `out_dir/helpers/protos/`, mirroring the proto's path below the
    include root. Raises ProtoCompileError with protoc's message when the proto is invalid.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        protoc_command(name, out, pyi=pyi), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        raise ProtoCompileError(f"protoc could not compile {name}.proto: {message}")
    return sorted(p for p in (out / "helpers" / "protos").glob(f"{name}_pb2*") if p.is_file())


def cache_dir() -> Path:
    """Where compiled protos are cached: `$COURSE_PROTO_CACHE`, else the user's cache folder."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "grpc-serving-course" / "protos"


def proto_hash(name: str) -> str:
    """A short hash of the proto file and of the compiler and runtime versions (the cache key)."""
    digest = hashlib.sha256(proto_path(name).read_bytes())
    for package in ("grpcio-tools", "protobuf"):
        digest.update(f"\0{package}={version(package)}".encode())
    return digest.hexdigest()[:16]


def _compiled_dir(name: str, key: str) -> Path:
    """Compile into the cache once; concurrent kernels race safely (build beside, then rename)."""
    root = cache_dir()
    target = root / f"{name}-{key}"
    if (target / "helpers" / "protos" / f"{name}_pb2_grpc.py").is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable home folder: compile into the temporary folder instead
        root = Path(tempfile.gettempdir()) / "grpc-serving-course-protos"
        target = root / f"{name}-{key}"
        root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        compile_proto(name, scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: use its copy
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def load_proto(name: str) -> ProtoModules:
    """Compile `helpers/protos/<name>.proto` if needed and import its generated modules.

    Returns ProtoModules(pb2, pb2_grpc), importable afterwards as `helpers.protos.<name>_pb2`
    and `helpers.protos.<name>_pb2_grpc`. A proto edited after it was loaded in this process
    cannot be loaded again here: restart the kernel (protobuf keeps one definition per file).
    """
    key = proto_hash(name)
    with _lock:
        if name in _loaded:
            loaded_key, modules = _loaded[name]
            if loaded_key != key:
                raise RuntimeError(
                    f"{name}.proto changed after it was loaded in this process; "
                    "restart the kernel (or Python) to load the new version"
                )
            return modules
        generated = _compiled_dir(name, key) / "helpers" / "protos"
        if str(generated) not in __path__:
            __path__.append(str(generated))
        modules = ProtoModules(
            importlib.import_module(f"{__name__}.{name}_pb2"),
            importlib.import_module(f"{__name__}.{name}_pb2_grpc"),
        )
        _loaded[name] = (key, modules)
        return modules
