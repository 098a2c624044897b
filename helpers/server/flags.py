"""The command line of `tensorflow_model_server`, as `python -m helpers.server` accepts it.

Flags are written `--flag=value` (booleans also as a bare `--flag`), with TF Serving's names and
defaults, so a command copied from a TF Serving tutorial works here unchanged. Every flag the
server takes does what TF Serving's does. TF Serving flags the embedded server cannot honour
(UNSUPPORTED) are refused at start-up with the reason, unless their value already describes
what the embedded server does (`--prefer_tflite_model=false`); anything else is refused too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


class FlagError(ValueError):
    """A command-line flag is unknown, unsupported, or has a value of the wrong kind."""


class OptionsError(FlagError):
    """The flags parse but cannot make a server (TF Serving's BuildAndStart: INVALID_ARGUMENT)."""


@dataclass
class Flags:
    """Parsed flags. Field names are the flag names."""

    port: int = 8500
    grpc_socket_path: str = ""
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
    enable_signature_method_name_check: bool = False
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 0
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    # Course extras.
    host: str = "127.0.0.1"
    parent_pid: int = 0
    version: bool = False


HELP = {
    "port": "gRPC port (TF Serving's Docker image uses 8500); 0: only --grpc_socket_path",
    "grpc_socket_path": "also serve gRPC on this UNIX socket (clients use unix:PATH)",
    "rest_api_port": "REST port; 0 disables the REST API",
    "rest_api_timeout_in_ms": "timeout of a REST call, in milliseconds",
    "rest_api_num_threads": "threads running REST calls (0: 4 x the number of cores)",
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
    "grpc_max_threads": "threads running gRPC calls (0: 32, or more with batching)",
    "tensorflow_session_parallelism": "threads of each TensorFlow session (0: automatic)",
    "tensorflow_intra_op_parallelism": "threads within one op (0: automatic)",
    "tensorflow_inter_op_parallelism": "ops run at once (0: automatic)",
    "host": "interface to listen on (127.0.0.1; 0.0.0.0 inside containers)",
    "parent_pid": "exit when the process with this id ends",
}


@dataclass(frozen=True)
class Unsupported:
    """A TF Serving flag the embedded server cannot honour.

    `accepted` are the values that describe what the embedded server does anyway (so a command
    that spells them out still works); any other value is refused with `reason`.
    """

    kind: type
    accepted: tuple
    reason: str


_TFLITE = "TensorFlow Lite models are not served (export a SavedModel)"
_LOAD_THREADS = "the embedded server runs its own loading threads"
UNSUPPORTED: dict[str, Unsupported] = {
    "rest_api_enable_cors_support": Unsupported(
        bool, (False,), "the embedded REST API sends no CORS headers"
    ),
    "enable_per_model_batching_parameters": Unsupported(
        bool, (False,), "batching parameters come from --batching_parameters_file only"
    ),
    "num_load_threads": Unsupported(int, (), _LOAD_THREADS),
    "num_unload_threads": Unsupported(int, (), _LOAD_THREADS),
    "flush_filesystem_caches": Unsupported(
        bool, (False,), "the embedded server does not flush TensorFlow's file-system caches"
    ),
    "tensorflow_session_config_file": Unsupported(
        str,
        ("",),
        "no TensorFlow ConfigProto is read; set threads with --tensorflow_intra_op_parallelism "
        "and --tensorflow_inter_op_parallelism",
    ),
    "use_alts_credentials": Unsupported(
        bool, (False,), "ALTS only works on Google Cloud; use --ssl_config_file for TLS"
    ),
    "platform_config_file": Unsupported(
        str, ("",), "the embedded server serves TensorFlow SavedModels as its flags say"
    ),
    "per_process_gpu_memory_fraction": Unsupported(
        float, (0.0,), "GPU memory is left to TensorFlow's defaults"
    ),
    "saved_model_tags": Unsupported(
        str, ("serve",), "the embedded server loads the MetaGraph tagged 'serve'"
    ),
    "num_request_iterations_for_warmup": Unsupported(
        int, (0, 1), "each warm-up record is replayed once"
    ),
    "remove_unused_fields_from_bundle_metagraph": Unsupported(
        bool, (False,), "the embedded server keeps each SavedModel's MetaGraphDef whole"
    ),
    "prefer_tflite_model": Unsupported(bool, (False,), _TFLITE),
    "num_tflite_pools": Unsupported(int, (), _TFLITE),
    "num_tflite_interpreters_per_pool": Unsupported(int, (), _TFLITE),
    "xla_cpu_compilation_enabled": Unsupported(
        bool,
        (True,),
        "TensorFlow's Python API cannot turn XLA off, so jit_compile functions always compile "
        "here (TF Serving refuses them unless this flag is true)",
    ),
    "xla_gpu_compilation_enabled": Unsupported(
        bool, (True,), "TensorFlow's Python API cannot turn XLA off"
    ),
    "enable_profiler": Unsupported(bool, (False,), "the embedded server has no profiler service"),
    "thread_pool_factory_config_file": Unsupported(
        str, ("",), "TensorFlow's own thread pools run every call"
    ),
    "mixed_precision": Unsupported(str, ("",), "models run in the precision they were saved in"),
    "skip_initialize_tpu": Unsupported(bool, (True,), "the embedded server never uses a TPU"),
    "enable_serialization_as_tensor_content": Unsupported(
        bool, (False,), "Predict answers in typed value fields (float_val, ...)"
    ),
}


def _shown(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def usage() -> str:
    """The --help text."""
    lines = ["usage: python -m helpers.server --flag=value ...", "", "Flags (TF Serving's names):"]
    defaults = Flags()
    for name, text in HELP.items():
        lines.append(f"  --{name}={_shown(getattr(defaults, name))}")
        lines.append(f"      {text}")
    lines += ["", "TF Serving flags refused unless given the value shown (the embedded server's):"]
    for name, flag in UNSUPPORTED.items():
        value = "|".join(_shown(v) for v in flag.accepted) if flag.accepted else "(any)"
        lines.append(f"  --{name}={value}")
        lines.append(f"      {flag.reason}")
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
    """Parse `--flag=value` arguments; unknown, unsupported or malformed flags raise FlagError."""
    flags = Flags()
    kinds = {f.name: type(getattr(flags, f.name)) for f in fields(Flags)}
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            raise FlagError(f"unexpected argument '{arg}': flags are written --flag=value")
        name, sep, raw = arg[2:].partition("=")
        name = name.replace("-", "_")
        value = raw if sep else None
        unsupported = UNSUPPORTED.get(name)
        if unsupported is not None:
            if _convert(name, unsupported.kind, value) not in unsupported.accepted:
                raise FlagError(
                    f"--{name}{'=' + raw if sep else ''} is not supported by the embedded "
                    f"server: {unsupported.reason}"
                )
            continue
        if name not in kinds:
            raise FlagError(f"unknown command line flag '{name}' (see --help)")
        setattr(flags, name, _convert(name, kinds[name], value))
    return flags


def check_flags(flags: Flags) -> None:
    """The start-up checks TF Serving's Server::BuildAndStart makes (raise OptionsError)."""
    for name in ("port", "rest_api_port"):
        value = getattr(flags, name)
        if not 0 <= value < 65536:
            raise OptionsError(f"--{name}={value} is not a port number (0-65535)")
    if flags.port == 0 and not flags.grpc_socket_path:
        raise OptionsError(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path "
            "must be set."
        )
    if not flags.model_base_path and not flags.model_config_file:
        raise OptionsError(
            "Both server_options.model_base_path and server_options.model_config_file are "
            "empty! Give --model_base_path=/abs/path/to/model or --model_config_file=FILE"
        )
    if flags.batching_parameters_file and not flags.enable_batching:
        raise OptionsError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if (
        flags.tensorflow_intra_op_parallelism > 0
        and flags.tensorflow_inter_op_parallelism > 0
        and flags.tensorflow_session_parallelism > 0
    ):
        raise OptionsError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure "
            "all."
        )
    for name in (
        "grpc_max_threads",
        "rest_api_num_threads",
        "tensorflow_session_parallelism",
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
    ):
        if getattr(flags, name) < 0:
            raise OptionsError(f"--{name}={getattr(flags, name)} must be 0 (automatic) or more")
    if flags.rest_api_port and flags.rest_api_port == flags.port:
        raise OptionsError(
            "server_options.http_port cannot be same as grpc_port. Please use a different port "
            "for HTTP/REST API."
        )


def grpc_threads(flags: Flags, max_batch_size: int = 0) -> int:
    """Threads running gRPC calls: --grpc_max_threads, or 32 (more when batching, so that a
    whole batch of callers can wait on the batcher at once, up to 256)."""
    return flags.grpc_max_threads or max(32, min(256, 2 * max_batch_size))


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
