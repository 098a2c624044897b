"""Where things live: the course folders and the model server the notebooks talk to.

This is the one place that decides both, so a single environment variable can point every
notebook at the embedded server (the default), a `docker compose` service, or a remote host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Name under which the course serves its model (TF Serving's `--model_name`).
MODEL_NAME = "mnist"

#: TF Serving's well-known ports, also the defaults of the embedded server.
DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501

#: Environment variable that points the course at a model server.
SERVER_ENV = "MODEL_SERVER"
#: Environment variable that moves the models folder (tests use a temporary one).
MODELS_DIR_ENV = "COURSE_MODELS_DIR"


def course_root() -> Path:
    """The repository root: the folder that holds `helpers/` and `notebooks/`."""
    return Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """The folder of versioned SavedModels (`models/<name>/<version>/`).

    `$COURSE_MODELS_DIR` overrides it; otherwise it is `models/` at the repository root,
    the same folder docker-compose.yml mounts into the TF Serving container as `/models`.
    """
    override = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(override).expanduser().resolve() if override else course_root() / "models"


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as messages and notebook outputs show it, without this machine's folders.

    Inside the course folder it is relative to it (`models/mnist/1`); inside a models folder
    moved elsewhere it starts with `$COURSE_MODELS_DIR/`; anything else is shown as it is.
    """
    resolved = Path(path).expanduser().resolve()
    for base, prefix in ((course_root(), ""), (models_dir(), f"${MODELS_DIR_ENV}/")):
        try:
            return prefix + resolved.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)


def model_base_path(name: str = MODEL_NAME) -> Path:
    """The base path of one model: TF Serving's `--model_base_path`."""
    return models_dir() / name


@dataclass(frozen=True)
class ServerAddress:
    """Where a model server listens. `embedded` means the course starts its own."""

    host: str
    grpc_port: int
    rest_port: int
    embedded: bool

    @property
    def grpc_target(self) -> str:
        """The address to give `grpc.insecure_channel`, e.g. `localhost:8500`."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        """The base URL of the REST API, e.g. `http://localhost:8501`."""
        return f"http://{self.host}:{self.rest_port}"


def server_address(setting: str | None = None) -> ServerAddress:
    """Read `$MODEL_SERVER` (or `setting`) and say where the model server is.

    Accepted forms:
      - unset, empty or `embedded`: the course's embedded server on localhost:8500/8501
        (the notebooks start it themselves);
      - `HOST`: a TF Serving on HOST with its default ports 8500 (gRPC) and 8501 (REST),
        e.g. `MODEL_SERVER=tf-serving` inside docker compose;
      - `HOST:GRPC_PORT` (REST on GRPC_PORT + 1) or `HOST:GRPC_PORT:REST_PORT`.
    """
    raw = (os.environ.get(SERVER_ENV, "") if setting is None else setting).strip()
    if raw in ("", "embedded"):
        return ServerAddress("localhost", DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, embedded=True)
    parts = raw.split(":")
    try:
        ports = [int(p) for p in parts[1:]]
    except ValueError:
        ports = []
        parts = []
    if not parts or not parts[0] or len(parts) > 3 or any(not 0 < p < 65536 for p in ports):
        raise ValueError(
            f"{SERVER_ENV}={raw!r} is not a server address. Use 'embedded', 'HOST', "
            f"'HOST:GRPC_PORT' or 'HOST:GRPC_PORT:REST_PORT', e.g. {SERVER_ENV}=localhost:8500."
        )
    grpc_port = ports[0] if ports else DEFAULT_GRPC_PORT
    rest_port = ports[1] if len(ports) > 1 else (grpc_port + 1 if ports else DEFAULT_REST_PORT)
    return ServerAddress(parts[0], grpc_port, rest_port, embedded=False)
