"""The command line of `tensorflow_model_server`, as `python -m helpers.server` accepts it.

Flags are written `--flag=value` (booleans also as a bare `--flag`), with TF Serving's names and
defaults, so a command copied from a TF Serving tutorial works here unchanged. A few flags the
course never needs are accepted and ignored (listed in IGNORED); anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


class FlagError(ValueError):
    """A command-line flag is unknown or has a value of the wrong kind."""


@dataclass
class Flags:
    """Parsed flags. Field names are the flag names."""

    port: int = 8500
    rest_api_port: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    ssl_config_file: str = ""
    monitoring_config_file: str = ""
    enable_grpc_healthcheck_service: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    enable_model_warmup: bool = True
    grpc_channel_arguments: str = ""
    # Course extras.
    host: str = "127.0.0.1"
    parent_pid: int = 0
    # Accepted for compatibility; they change nothing in the embedded server.
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    saved_model_tags: str = "serve"
    flush_filesystem_caches: bool = True
    per_process_gpu_memory_fraction: float = 0.0
    platform_config_file: str = ""
    grpc_socket_path: str = ""
    enable_signature_method_name_check: bool = False
    xla_cpu_compilation_enabled: bool = False
    version: bool = False


HELP = {
    "port": "gRPC port (TF Serving's Docker image uses 8500)",
    "rest_api_port": "REST port; 0 disables the REST API",
    "rest_api_timeout_in_ms": "timeout of a REST call, in milliseconds",
    "model_name": "name of the model when --model_base_path is used",
    "model_base_path": "absolute folder holding numeric version folders (1/, 2/, ...)",
    "model_config_file": "text ModelServerConfig (several models, version policies, labels)",
    "model_config_file_poll_wait_seconds": "re-read --model_config_file every N s (0: never)",
    "file_system_poll_wait_seconds": "look for new versions every N s (0: only at start)",
    "enable_batching": "merge concurrent Predict calls into batches",
    "batching_parameters_file": "text BatchingParameters (needs --enable_batching)",
    "ssl_config_file": "text SSLConfig: TLS (and mTLS with client_verify) on the gRPC port",
    "monitoring_config_file": "text MonitoringConfig: Prometheus metrics on the REST port",
    "enable_grpc_healthcheck_service": "serve grpc.health.v1.Health",
    "max_num_load_retries": "retries of a failing version load",
    "load_retry_interval_micros": "wait between load retries, in microseconds",
    "allow_version_labels_for_unavailable_models": "let labels name versions not yet loaded",
    "enable_model_warmup": "run each new version once before it takes traffic",
    "enable_signature_method_name_check": "Classify/Regress only on classify/regress signatures",
    "grpc_channel_arguments": "comma-separated key=value gRPC server arguments",
    "host": "interface to listen on (127.0.0.1; 0.0.0.0 inside containers)",
    "parent_pid": "exit when the process with this id ends",
}
IGNORED = {f.name for f in fields(Flags)} - set(HELP) - {"version"}


def usage() -> str:
    """The --help text."""
    lines = ["usage: python -m helpers.server --flag=value ...", "", "Flags (TF Serving's names):"]
    defaults = Flags()
    for name, text in HELP.items():
        default = getattr(defaults, name)
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        lines.append(f"  --{name}={shown}")
        lines.append(f"      {text}")
    lines.append("Accepted and ignored: " + ", ".join(f"--{n}" for n in sorted(IGNORED)))
    return "\n".join(lines)


def _convert(name: str, kind: type, raw: str | None) -> object:
    if kind is bool:
        if raw is None:
            return True
        value = raw.strip().lower()
        if value in ("true", "1", "yes"):
            return True
        if value in ("false", "0", "no"):
            return False
        raise FlagError(f"--{name} expects true or false, got '{raw}'")
    if raw is None:
        raise FlagError(f"--{name} needs a value: write --{name}=VALUE")
    try:
        return kind(raw)
    except ValueError:
        kind_name = {int: "an integer", float: "a number"}.get(kind, "a value")
        raise FlagError(f"--{name} expects {kind_name}, got '{raw}'") from None


def parse_flags(argv: list[str]) -> Flags:
    """Parse `--flag=value` arguments; unknown or malformed flags raise FlagError."""
    flags = Flags()
    kinds = {f.name: type(getattr(flags, f.name)) for f in fields(Flags)}
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            raise FlagError(f"unexpected argument '{arg}': flags are written --flag=value")
        name, sep, raw = arg[2:].partition("=")
        name = name.replace("-", "_")
        if name not in kinds:
            raise FlagError(f"unknown command line flag '{name}' (see --help)")
        setattr(flags, name, _convert(name, kinds[name], raw if sep else None))
    return flags


def check_flags(flags: Flags) -> None:
    """The start-up checks TF Serving's main() and Server::BuildAndStart make."""
    if not flags.model_base_path and not flags.model_config_file:
        raise FlagError(
            "Both server_options.model_base_path and server_options.model_config_file are "
            "empty! Give --model_base_path=/abs/path/to/model or --model_config_file=FILE"
        )
    if flags.batching_parameters_file and not flags.enable_batching:
        raise FlagError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    for name in ("port", "rest_api_port"):
        value = getattr(flags, name)
        if not 0 <= value < 65536:
            raise FlagError(f"--{name}={value} is not a port number (0-65535)")
    if flags.port == 0:
        raise FlagError("server_options.grpc_port is not set.")
    if flags.rest_api_port and flags.rest_api_port == flags.port:
        raise FlagError(
            "server_options.http_port cannot be same as grpc_port. Please use a different port "
            "for HTTP/REST API."
        )


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`--grpc_channel_arguments=a=1,b=x` -> [("a", 1), ("b", "x")] (ints stay ints, as TF does)."""
    result: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FlagError(f"--grpc_channel_arguments entry '{item}' is not key=value")
        try:
            result.append((key, int(value)))
        except ValueError:
            result.append((key, value))
    return result
