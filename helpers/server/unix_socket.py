"""`--grpc_socket_path`: gRPC served on a UNIX socket as well, as TF Serving serves `unix:<path>`.

Clients on the same machine reach it with the target `unix:<path>` (or `unix://<absolute
path>`), with no TCP port involved. gRPC removes a socket file already at the path before it
listens, so a server started on the path of a running one takes the path over, as with
`tensorflow_model_server` (TF Serving's own tests start every server on one path and rely on
it); the log says so, since the older server's clients now reach the new one.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import sys
from typing import Any

log = logging.getLogger("helpers.server")

#: Longest UNIX socket path in bytes: `sockaddr_un.sun_path` holds 108 bytes on Linux and 104
#: on macOS and the BSDs, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103


class SocketPathError(RuntimeError):
    """The UNIX socket cannot be listened on; the message says why and what to do."""


def check_socket_path(path: str) -> None:
    """Refuse, before any model loads, a path the server could not listen on."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(
            f"could not listen on the UNIX socket {path}: the path is {size} bytes long and a "
            f"UNIX socket path holds at most {MAX_SOCKET_PATH_BYTES} (choose a shorter "
            "--grpc_socket_path, e.g. in /tmp)"
        )
    folder = os.path.dirname(os.path.abspath(path)) or "/"
    if not os.path.isdir(folder):
        raise SocketPathError(
            f"could not listen on the UNIX socket {path}: the folder {folder} does not exist "
            "(create it or choose another --grpc_socket_path)"
        )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SocketPathError(
            f"could not listen on the UNIX socket {path}: {exc.strerror or exc}"
        ) from None
    if not stat.S_ISSOCK(mode):
        raise SocketPathError(
            f"could not listen on the UNIX socket {path}: a file that is not a socket is there "
            "(choose another --grpc_socket_path)"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex(path) == 0:
            log.warning(
                "Another server listens on the UNIX socket %s: this one takes the path over "
                "(as tensorflow_model_server does); choose another --grpc_socket_path to keep both",
                path,
            )


def listen_on_unix_socket(server: Any, path: str, credentials: Any) -> None:
    """Add `unix:<path>` to a grpc.Server not yet started, with the TCP port's credentials."""
    target = f"unix:{path}"
    try:
        if credentials is not None:
            bound = server.add_secure_port(target, credentials)
        else:
            bound = server.add_insecure_port(target)
    except RuntimeError:
        bound = 0
    if not bound:
        folder = os.path.dirname(os.path.abspath(path)) or "/"
        if not os.access(folder, os.W_OK | os.X_OK):
            cause = f"the folder {folder} is not writable"
        else:
            cause = "gRPC refused the path"
        raise SocketPathError(
            f"could not listen on the UNIX socket {path}: {cause} "
            "(choose another --grpc_socket_path)"
        )
