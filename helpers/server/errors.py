"""The one error type of the embedded server, shaped like TF Serving's `Status`.

Every failure a client can cause becomes a `ServingError` carrying the gRPC code and the
exact message TensorFlow Serving would send, so the gRPC and REST front ends (and the course's
error lesson) see the same thing from the embedded server and from the real one.
"""

from __future__ import annotations

import grpc

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

#: TensorFlow's numeric error codes are gRPC's codes (tensorflow/core/protobuf/error_codes.proto).
_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def truncate(message: str) -> str:
    """Cut a message the way TF Serving does before it goes on the wire."""
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
        self.message = truncate(message)
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


def from_tf_error(error: BaseException) -> ServingError:
    """Turn a `tf.errors.OpError` into the ServingError TF Serving would return.

    Only the first line of the message survives (no `[[{{node ...}}]]` tails, no traceback).
    """
    code_number = getattr(error, "error_code", None)
    message = getattr(error, "message", None) or str(error)
    code = code_from_number(code_number) if code_number is not None else grpc.StatusCode.INTERNAL
    return ServingError(code, first_line(message))
