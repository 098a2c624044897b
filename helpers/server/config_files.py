"""Read TF Serving's text-proto configuration files, failing early with a one-line reason.

A file that cannot be read or parsed fails as TF Serving's `ParseProtoTextFile` does: the status
is `NOT_FOUND: <path>; No such file or directory` (or the code of that errno) or
`INVALID_ARGUMENT: Invalid protobuf file: '<path>'`, and for a parse error the parser's own
line (`Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: ...`) is kept as
the error's `detail`, which the server logs to stderr as protobuf does.

`ModelServerConfig` ships in tensorflow-serving-api; SSLConfig, MonitoringConfig and
BatchingParameters do not, so `helpers/protos/serving_config.proto` mirrors them (same field
names and numbers) and is compiled at run time with grpcio-tools by `helpers.protos`, into the
course's one proto cache: no generated code lives in the repository, and a changed .proto
recompiles.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from google.protobuf import message as pb_message
from google.protobuf import text_format

#: The course proto (helpers/protos/serving_config.proto) that holds these messages.
PROTO_NAME = "serving_config"

M = TypeVar("M", bound=pb_message.Message)


#: TensorFlow's errno -> status code (tsl ErrnoToCode) for the errors reading a file can give.
_ERRNO_CODES = {
    errno.ENOENT: "NOT_FOUND",
    errno.ENXIO: "NOT_FOUND",
    errno.ENODEV: "NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.EROFS: "PERMISSION_DENIED",
    errno.EISDIR: "FAILED_PRECONDITION",
    errno.ENOTDIR: "FAILED_PRECONDITION",
    errno.ELOOP: "FAILED_PRECONDITION",
    errno.ENAMETOOLONG: "INVALID_ARGUMENT",
    errno.EINVAL: "INVALID_ARGUMENT",
    errno.EMFILE: "RESOURCE_EXHAUSTED",
    errno.ENFILE: "RESOURCE_EXHAUSTED",
    errno.ENOMEM: "RESOURCE_EXHAUSTED",
}
#: Python's ParseError starts with "line:column : "; protobuf's C++ parser writes "line:column: ".
_POSITION = re.compile(r"^(\d+):(\d+) : ")


class ConfigError(ValueError):
    """A configuration file is missing or not a valid text proto of the expected message.

    `str()` is the status message, `code` its status code name, `status` both as TF Serving
    prints them, and `detail` the parser's own error line (empty when reading failed).
    """

    def __init__(self, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail

    @property
    def status(self) -> str:
        return f"{self.code}: {self}"


def config_protos() -> ModuleType:
    """The compiled `serving_config_pb2` module, from the course's one proto cache
    (`helpers.protos.load_proto`: compiled once per .proto content and compiler version)."""
    from helpers.protos import load_proto

    return load_proto(PROTO_NAME).pb2


def parse_text_proto(path: str | os.PathLike[str], message: M) -> M:
    """Parse a text-proto file into `message`; any problem raises ConfigError (one line each)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        code = _ERRNO_CODES.get(exc.errno or 0, "UNKNOWN")
        raise ConfigError(code, f"{path}; {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "INVALID_ARGUMENT",
            f"Invalid protobuf file: '{path}'",
            f"Error parsing text-format {_tf_serving_name(message)}: the file is not UTF-8 text "
            f"({exc.reason} at byte {exc.start})",
        ) from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(
            "INVALID_ARGUMENT",
            f"Invalid protobuf file: '{path}'",
            f"Error parsing text-format {_tf_serving_name(message)}: "
            + _tf_serving_names(_POSITION.sub(r"\1:\2: ", str(exc)), message),
        ) from None
    return message


def _tf_serving_name(message: pb_message.Message) -> str:
    """The message's full name as TF Serving's own protos spell it (package tensorflow.serving)."""
    return _tf_serving_names(message.DESCRIPTOR.full_name, message)


def _tf_serving_names(text: str, message: pb_message.Message) -> str:
    """Our mirrored config messages live in their own package; name them as TF Serving does."""
    package = message.DESCRIPTOR.file.package
    if package == "tensorflow.serving":
        return text
    return text.replace(f"{package}.", "tensorflow.serving.")


def read_model_server_config(path: str | os.PathLike[str]):
    """A `tensorflow.serving.ModelServerConfig` from its text file (--model_config_file)."""
    from tensorflow_serving.config import model_server_config_pb2

    return parse_text_proto(path, model_server_config_pb2.ModelServerConfig())


def read_ssl_config(path: str | os.PathLike[str]):
    """An SSLConfig (--ssl_config_file)."""
    return parse_text_proto(path, config_protos().SSLConfig())


def read_monitoring_config(path: str | os.PathLike[str]):
    """A MonitoringConfig (--monitoring_config_file)."""
    return parse_text_proto(path, config_protos().MonitoringConfig())


def read_batching_parameters(path: str | os.PathLike[str]):
    """BatchingParameters (--batching_parameters_file)."""
    return parse_text_proto(path, config_protos().BatchingParameters())


def single_model_config(name: str, base_path: str):
    """The config --model_name/--model_base_path stand for (BuildSingleModelConfig)."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = name
    entry.base_path = base_path
    entry.model_platform = "tensorflow"
    return config
