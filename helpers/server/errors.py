"""The one error type of the embedded server, shaped like TF Serving's `Status`, and the one
mapping from exceptions to it.

Every failure a client can cause becomes a `ServingError` carrying the gRPC code and the
exact message TensorFlow Serving would send, so the gRPC and REST front ends (and the course's
error lesson) see the same thing from the embedded server and from the real one.
`to_serving_error` is the single place that turns any other exception (a TensorFlow `OpError`,
an `OSError` from a model folder, a timeout, a bug) into one; the call path both front ends
share (`calls`) and the model loader call it. Messages are kept whole; the gRPC front end
alone cuts them at 1,024 characters (`truncate`), as TF Serving's gRPC port does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import grpc

log = logging.getLogger("helpers.server")

#: TF Serving cuts error details at this many characters (grpc_status_util.cc).
MESSAGE_LIMIT = 1024

#: gRPC code -> HTTP status, as TF Serving's REST front end maps them.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

#: What TensorFlow's DirectSession answers when a run passes RunOptions.timeout_in_ms (the
#: deadline TF Serving derives from the gRPC deadline or --rest_api_timeout_in_ms).
SESSION_RUN_TIMEOUT_MESSAGE = "Timed out waiting for notification"

#: TensorFlow's numeric error codes are gRPC's codes (tensorflow/core/protobuf/error_codes.proto).
_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def truncate(message: str) -> str:
    """Cut a message the way TF Serving's gRPC port does (ToGRPCStatus); REST never cuts."""
    if len(message) > MESSAGE_LIMIT:
        return message[:MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def first_line(message: str) -> str:
    """Keep the readable part of a TensorFlow runtime error.

    TensorFlow appends `\\n\\t [[{{node ...}}]]` tails and graph context that mean nothing to a
    client; TF Serving's users see the first line, so that is what we keep.
    """
    return message.strip().split("\n", 1)[0].strip()


class ServingError(Exception):
    """A request failed: `code` (grpc.StatusCode) and `message`, exactly as TF Serving says it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        #: The whole message: only the gRPC front end cuts it (`truncate`), as TF Serving does.
        self.message = message
        super().__init__(self.message)

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers with for this code."""
        return HTTP_STATUS.get(self.code, 500)

    @property
    def code_name(self) -> str:
        """The code's name as TF Serving's metrics spell it, e.g. `INVALID_ARGUMENT`."""
        return self.code.name

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def code_from_number(number: int) -> grpc.StatusCode:
    """gRPC code for TensorFlow's numeric error code (they share numbering)."""
    return _CODE_BY_NUMBER.get(int(number), grpc.StatusCode.UNKNOWN)


def deadline_exceeded() -> ServingError:
    """A Session run stopped by its timeout (TensorFlow's own code and message)."""
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, SESSION_RUN_TIMEOUT_MESSAGE)


_TIMEOUTS = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)


def to_serving_error(error: BaseException) -> ServingError:
    """The ServingError a client sees for any exception raised while serving or loading.

    - ServingError: itself.
    - TensorFlow errors (`tf.errors.OpError`, anything with an int `error_code`): their own
      code (TensorFlow's codes are gRPC's), first line of the message only (no node tails).
    - A timeout: DEADLINE_EXCEEDED with TensorFlow's message.
    - File-system errors while reading a model: NOT_FOUND / PERMISSION_DENIED / UNKNOWN.
    - A protobuf that does not parse (a corrupt saved_model.pb): DATA_LOSS.
    - Anything else is a server bug: logged with its traceback, INTERNAL with one line.
    """
    if isinstance(error, ServingError):
        return error
    code_number = getattr(error, "error_code", None)
    if isinstance(code_number, int) and not isinstance(code_number, bool):
        message = getattr(error, "message", None) or str(error)
        return ServingError(code_from_number(code_number), first_line(message))
    if isinstance(error, _TIMEOUTS):
        return deadline_exceeded()
    if isinstance(error, OSError):
        if isinstance(error, FileNotFoundError | NotADirectoryError):
            code = grpc.StatusCode.NOT_FOUND
        elif isinstance(error, PermissionError):
            code = grpc.StatusCode.PERMISSION_DENIED
        else:
            code = grpc.StatusCode.UNKNOWN
        return ServingError(code, first_line(str(error)) or type(error).__name__)
    if type(error).__name__ == "DecodeError":  # google.protobuf.message.DecodeError
        return ServingError(grpc.StatusCode.DATA_LOSS, first_line(str(error)))
    log.error("Unexpected error while serving", exc_info=error)
    text = first_line(str(error))
    name = type(error).__name__
    return ServingError(grpc.StatusCode.INTERNAL, f"{name}: {text}" if text else name)
