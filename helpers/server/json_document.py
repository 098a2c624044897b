"""JSON read and quoted exactly as TensorFlow Serving's REST API does it (RapidJSON 1.1.0).

TF Serving 2.21 reads a request body with RapidJSON's iterative parser: no recursion, so any
depth; `NaN` and `Infinity` accepted; parsing stops after the first complete value; a syntax
error reads `JSON Parse error: <RapidJSON's sentence> at offset: <byte offset>`
(util/json_tensor.cc `ParseJson`: kParseIterativeFlag | kParseNanAndInfFlag |
kParseStopWhenDoneFlag, on an `EncodedInputStream<UTF8<>, MemoryStream>` that skips a UTF-8 BOM
and does not validate encoding). When it quotes a value in an error, it writes a debug string cut
after about 256 bytes (`JsonValueToDebugString`): RapidJSON's PrettyWriter with arrays on one
line, objects indented by 4 spaces, stopped at the first write that starts past the limit.

How a body is read here: the standard library's C parser takes every ordinary document. A body
it would read differently from RapidJSON (a syntax error, a repeated key, an integer of 19 or more
digits, a 3-digit exponent, an escaped surrogate, odd spellings such as `Inf` or `-NaN`, deep
nesting) goes to `_Reader`, a RapidJSON-compatible reader written from RapidJSON's source, which
gives the same values, sentences and offsets. It checks the whole body first without building
anything (bounded memory whatever the nesting), then builds the value.

Values: objects are dicts (a `JsonObject` when a key repeats, since RapidJSON keeps every
member), arrays are lists, strings are str (bytes that are not UTF-8 kept as surrogate escapes,
as RapidJSON copies them unchecked), numbers are int (-2**63 <= n < 2**64) or float, true/false
are bool and null is None.

One difference is known and accepted: the fast path rounds decimals correctly, where RapidJSON's
normal-precision mode can be one unit in the last place off for numbers with more than 15
significant digits or a large exponent; no float32 input and hardly any float64 input sees it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Bytes after which JsonValueToDebugString stops writing (kMaxJsonDebugStringBytes).
DEBUG_STRING_LIMIT = 256
#: Deepest nesting the reader builds. TF Serving has no limit, but its recursive tensor
#: conversion cannot follow such depths either; no tensor has more than 254 dimensions.
MAX_NESTING = 100_000

_UTF8_BOM = b"\xef\xbb\xbf"
_WHITESPACE = " \t\n\r"


class JsonParseError(ValueError):
    """A body RapidJSON refuses: `message` is the whole sentence TF Serving answers with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JsonObject(dict):
    """An object whose keys repeat, as RapidJSON keeps it.

    Lookups (`obj[key]`, `key in obj`) see the first member, as RapidJSON's `FindMember` does;
    `items()` and `len()` see every member, as its member iteration and `MemberCount` do.
    """

    def __init__(self, members: list[tuple[str, Any]]) -> None:
        super().__init__()
        for key, value in members:
            self.setdefault(key, value)
        self.members = members

    def items(self):  # type: ignore[override]
        return list(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __reduce__(self):
        # Pickled by its members: a dict subclass is otherwise rebuilt from `items()`, and the
        # later of two repeated keys would win the lookups (the parser process pickles these).
        return (JsonObject, (self.members,))


# ============================================================================ reading


class _RepeatedKey(Exception):
    """An object repeats a key: the fast path hands the body to the exact reader."""


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _RepeatedKey
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object_without_repeats)
#: Bodies the standard parser could read differently from RapidJSON (false alarms only cost time):
#: integers of 19+ digits (past 64 bits RapidJSON makes them doubles, or refuses them; digits
#: after a decimal point do not count), exponents of 3+ digits (RapidJSON refuses those above
#: 308), escaped surrogates (RapidJSON refuses lone high ones, writes lone low ones as 3 bytes).
#: Each scan starts with a literal or finds few candidates, so it runs at memory speed: one
#: regex with character classes up front took seconds on a 50 MB body.
_DIGIT_RUN = re.compile(rb"\d{19,}")
_LONG_EXPONENTS = (re.compile(rb"e\+?\d{3}"), re.compile(rb"E\+?\d{3}"))
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _needs_exact_reader(body: bytes) -> bool:
    for run in _DIGIT_RUN.finditer(body):
        if body[run.start() - 1 : run.start()] != b".":  # digits after a point do not count
            return True
    if any(pattern.search(body) for pattern in _LONG_EXPONENTS):
        return True
    return b"\\u" in body and _ESCAPED_SURROGATE.search(body) is not None


def parse(body: bytes, timeout: float | None = None, *, dense: bool = False) -> Any:
    """Parse a request body as TF Serving does, or raise JsonParseError with its message.

    A body of PARSE_ELSEWHERE_BYTES or more is parsed in a child process (see ParserProcess),
    for at most `timeout` seconds (None: PARSE_TIMEOUT_S); past it, ParseTimeout. `dense=True`:
    the caller takes the `instances` / `inputs` members of such a body as DenseArrays where
    they can be (see DenseArray); otherwise every value is plain Python.
    """
    if len(body) >= PARSE_ELSEWHERE_BYTES:
        doc = _PARSER_PROCESS.parse(body, PARSE_TIMEOUT_S if timeout is None else timeout)
        return doc if dense else materialize(doc)
    return parse_here(body)


def parse_here(body: bytes) -> Any:
    """`parse`, always in this process."""
    if not body:
        raise JsonParseError("JSON Parse error: The document is empty")
    if not _needs_exact_reader(body):
        start = len(_UTF8_BOM) if body.startswith(_UTF8_BOM) else 0
        text = body[start:].decode("utf-8", "surrogateescape").lstrip(_WHITESPACE)
        try:
            return _DECODER.raw_decode(text)[0]
        except (ValueError, RecursionError, _RepeatedKey):
            pass  # the exact reader finds RapidJSON's error, or reads what json could not
    reader = _Reader(body, build=False)
    reader.run()
    if reader.max_depth > MAX_NESTING:
        raise JsonParseError(
            f"JSON Parse error: the document nests {reader.max_depth} levels deep; "
            f"the embedded server reads at most {MAX_NESTING}"
        )
    builder = _Reader(body, build=True)
    builder.run()
    return builder.result


# RapidJSON's parse errors (error/en.h).
_EMPTY = "The document is empty."
_INVALID_VALUE = "Invalid value."
_MISS_NAME = "Missing a name for object member."
_MISS_COLON = "Missing a colon after a name of object member."
_MISS_COMMA_OR_CURLY = "Missing a comma or '}' after an object member."
_MISS_COMMA_OR_SQUARE = "Missing a comma or ']' after an array element."
_BAD_HEX = "Incorrect hex digit after \\u escape in string."
_BAD_SURROGATE = "The surrogate pair in string is invalid."
_BAD_ESCAPE = "Invalid escape character in string."
_MISS_QUOTE = "Missing a closing quotation mark in string."
_TOO_BIG = "Number too big to be stored in double."
_MISS_FRACTION = "Miss fraction part in number."
_MISS_EXPONENT = "Miss exponent in number."

# The iterative parser's states and tokens (reader.h), numbered as there.
(
    _START,
    _FINISH,
    _ERROR,
    _OBJECT_INITIAL,
    _MEMBER_KEY,
    _KEY_VALUE_DELIMITER,
    _MEMBER_VALUE,
    _MEMBER_DELIMITER,
    _OBJECT_FINISH,
    _ARRAY_INITIAL,
    _ELEMENT,
    _ELEMENT_DELIMITER,
    _ARRAY_FINISH,
    _VALUE,
) = range(14)
_LBRACKET, _RBRACKET, _LCURLY, _RCURLY, _COMMA, _COLON, _STRING, _FALSE, _TRUE, _NULL, _NUMBER = (
    range(11)
)
_TOKEN = [_NUMBER] * 256
for _char, _token in zip(b'[]{},:"ftn', (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), strict=True):
    _TOKEN[_char] = _token

_E = _ERROR
_SCALAR_AFTER_VALUE_POSITION = {_START: _VALUE, _KEY_VALUE_DELIMITER: _MEMBER_VALUE}
#: Predict(state, token) -> next state: RapidJSON's table G, row by row.
_PREDICT: dict[int, tuple[int, ...]] = {
    _START: (
        _ARRAY_INITIAL, _E, _OBJECT_INITIAL, _E, _E, _E, _VALUE, _VALUE, _VALUE, _VALUE, _VALUE,
    ),
    _OBJECT_INITIAL: (_E, _E, _E, _OBJECT_FINISH, _E, _E, _MEMBER_KEY, _E, _E, _E, _E),
    _MEMBER_KEY: (_E, _E, _E, _E, _E, _KEY_VALUE_DELIMITER, _E, _E, _E, _E, _E),
    _KEY_VALUE_DELIMITER: (
        _ARRAY_INITIAL, _E, _OBJECT_INITIAL, _E, _E, _E,
        _MEMBER_VALUE, _MEMBER_VALUE, _MEMBER_VALUE, _MEMBER_VALUE, _MEMBER_VALUE,
    ),
    _MEMBER_VALUE: (_E, _E, _E, _OBJECT_FINISH, _MEMBER_DELIMITER, _E, _E, _E, _E, _E, _E),
    _MEMBER_DELIMITER: (_E, _E, _E, _OBJECT_FINISH, _E, _E, _MEMBER_KEY, _E, _E, _E, _E),
    _ARRAY_INITIAL: (
        _ARRAY_INITIAL, _ARRAY_FINISH, _OBJECT_INITIAL, _E, _E, _E,
        _ELEMENT, _ELEMENT, _ELEMENT, _ELEMENT, _ELEMENT,
    ),
    _ELEMENT: (_E, _ARRAY_FINISH, _E, _E, _ELEMENT_DELIMITER, _E, _E, _E, _E, _E, _E),
    _ELEMENT_DELIMITER: (
        _ARRAY_INITIAL, _ARRAY_FINISH, _OBJECT_INITIAL, _E, _E, _E,
        _ELEMENT, _ELEMENT, _ELEMENT, _ELEMENT, _ELEMENT,
    ),
}  # fmt: skip
#: HandleError(state): the error a dead end in `state` reports.
_DEAD_END = {
    _START: _EMPTY,
    _OBJECT_INITIAL: _MISS_NAME,
    _MEMBER_DELIMITER: _MISS_NAME,
    _MEMBER_KEY: _MISS_COLON,
    _MEMBER_VALUE: _MISS_COMMA_OR_CURLY,
    _KEY_VALUE_DELIMITER: _INVALID_VALUE,
    _ARRAY_INITIAL: _INVALID_VALUE,
    _ELEMENT_DELIMITER: _INVALID_VALUE,
    _ELEMENT: _MISS_COMMA_OR_SQUARE,
}

_WS = re.compile(rb"[ \t\n\r]*")
_PLAIN_STRING_BYTES = re.compile(rb'[^"\\\x00-\x1f]*')
#: A number RapidJSON reads exactly as Python does: an integer of at most 18 digits, or at most
#: 15 significant digits with a fraction (one exact division by a power of ten), no exponent,
#: not followed by anything that continues a number.
_SIMPLE_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,15})?(?![0-9.eE])")
_OPEN_RUN = re.compile(rb"\[(?:[ \t\n\r]*\[)*")
_SIMPLE_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_POW10 = [float(f"1e{n}") for n in range(309)]


def _fast_path(significand: float, exponent: int) -> float:
    """RapidJSON's internal::FastPath: one multiplication or division by 10**|exponent|."""
    if exponent < -308:
        return 0.0
    if exponent >= 0:
        return significand * _POW10[exponent]
    return significand / _POW10[-exponent]


def _strtod_normal_precision(significand: float, exponent: int) -> float:
    """RapidJSON's internal::StrtodNormalPrecision (the mode TF Serving parses in)."""
    if exponent < -308:
        return _fast_path(_fast_path(significand, -308), exponent + 308)
    return _fast_path(significand, exponent)


class _Reader:
    """RapidJSON 1.1.0's iterative reader with TF Serving's flags, over the body's bytes.

    `build=False` only checks the syntax (and measures the depth) without building values.
    """

    def __init__(self, data: bytes, *, build: bool) -> None:
        self.data = data
        self.size = len(data)
        self.build = build
        self.result: Any = None
        self.max_depth = 0
        pos = 0
        for bom_byte in _UTF8_BOM:  # EncodedInputStream skips each BOM byte that is there
            if pos < self.size and data[pos] == bom_byte:
                pos += 1
        self.pos = pos

    # ------------------------------------------------------------------ stream
    def peek(self) -> int:
        return self.data[self.pos] if self.pos < self.size else 0

    def consume(self, char: int) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def fail(self, reason: str, offset: int) -> JsonParseError:
        return JsonParseError(f"JSON Parse error: {reason} at offset: {offset}")

    def skip_whitespace(self) -> None:
        self.pos = _WS.match(self.data, self.pos).end()

    # ------------------------------------------------------------------ the state machine
    def run(self) -> None:
        build = self.build
        # One frame per open container: [state to return to, container, pending key].
        frames: list[list] = []
        depth_states = bytearray()  # the states to return to, when not building
        state = _START
        self.skip_whitespace()
        while self.peek() != 0:
            token = _TOKEN[self.peek()]
            target = _PREDICT.get(state, ())[token] if state in _PREDICT else _ERROR
            if target == _ERROR:
                raise self.fail(_DEAD_END.get(state, _MISS_COMMA_OR_SQUARE), self.pos)
            if target in (_OBJECT_INITIAL, _ARRAY_INITIAL):
                if state in (_ARRAY_INITIAL, _ELEMENT_DELIMITER):
                    back = _ELEMENT
                elif state == _KEY_VALUE_DELIMITER:
                    back = _MEMBER_VALUE
                else:
                    back = state
                opened = 1
                if target == _ARRAY_INITIAL:
                    # A run of '[' opens arrays whose return state is Element: one regex step.
                    run_end = _OPEN_RUN.match(self.data, self.pos).end()
                    opened = self.data.count(b"[", self.pos, run_end)
                    self.pos = run_end
                else:
                    self.pos += 1
                depth = (len(frames) if build else len(depth_states)) + opened
                self.max_depth = max(self.max_depth, depth)
                if build:
                    for index in range(opened):
                        container: Any = [] if target == _ARRAY_INITIAL else []
                        frames.append([back if index == 0 else _ELEMENT, container, None])
                else:
                    depth_states.append(back)
                    depth_states.extend(bytes([_ELEMENT]) * (opened - 1))
                state = target
            elif target == _MEMBER_KEY:
                key = self.parse_string()
                if build:
                    frames[-1][2] = key
                state = target
            elif target == _KEY_VALUE_DELIMITER:
                self.pos += 1
                state = target
            elif target in (_MEMBER_VALUE, _ELEMENT, _VALUE):
                value = self.parse_scalar()
                if target == _VALUE:
                    self.result = value
                    state = _FINISH
                else:
                    if build:
                        self.attach(frames[-1], value)
                    state = target
            elif target in (_MEMBER_DELIMITER, _ELEMENT_DELIMITER):
                self.pos += 1
                state = target
            else:  # _OBJECT_FINISH or _ARRAY_FINISH
                if target == _OBJECT_FINISH and state == _MEMBER_DELIMITER:
                    raise self.fail(_MISS_NAME, self.pos)
                if target == _ARRAY_FINISH and state == _ELEMENT_DELIMITER:
                    raise self.fail(_INVALID_VALUE, self.pos)
                self.pos += 1
                if build:
                    back, container, _ = frames.pop()
                    value = self.finish_container(container, target == _OBJECT_FINISH)
                    if frames:
                        self.attach(frames[-1], value)
                    else:
                        self.result = value
                else:
                    back = depth_states.pop()
                state = _FINISH if back == _START else back
            if state == _FINISH:
                return  # kParseStopWhenDoneFlag: whatever follows the root is not read
            self.skip_whitespace()
        raise self.fail(_DEAD_END.get(state, _MISS_COMMA_OR_SQUARE), self.pos)

    @staticmethod
    def attach(frame: list, value: Any) -> None:
        """Add a value to the open container: an array element or the pending member."""
        container = frame[1]
        if frame[2] is None and not isinstance(container, _Members):
            container.append(value)
        else:
            if not isinstance(container, _Members):
                frame[1] = container = _Members()
            container.append((frame[2], value))
            frame[2] = None

    @staticmethod
    def finish_container(container: Any, is_object: bool) -> Any:
        if not is_object:
            return container
        members = list(container)
        obj = dict(members)
        return obj if len(obj) == len(members) else JsonObject(members)

    # ------------------------------------------------------------------ values
    def parse_scalar(self) -> Any:
        char = self.peek()
        if char == ord('"'):
            return self.parse_string()
        for literal, value in ((b"null", None), (b"true", True), (b"false", False)):
            if char == literal[0]:
                self.pos += 1
                for expected in literal[1:]:
                    if not self.consume(expected):
                        raise self.fail(_INVALID_VALUE, self.pos)
                return value
        return self.parse_number()

    def parse_string(self) -> str:
        data = self.data
        self.pos += 1  # the opening quote
        pieces: list[bytes] = []
        while True:
            end = _PLAIN_STRING_BYTES.match(data, self.pos).end()
            if self.build and end > self.pos:
                pieces.append(data[self.pos : end])
            self.pos = end
            char = self.peek()
            if char == ord("\\"):
                escape_offset = self.pos
                self.pos += 1
                escaped = self.peek()
                if escaped in _SIMPLE_ESCAPES:
                    self.pos += 1
                    pieces.append(_SIMPLE_ESCAPES[escaped])
                elif escaped == ord("u"):
                    self.pos += 1
                    codepoint = self.hex4(escape_offset)
                    if 0xD800 <= codepoint <= 0xDBFF:
                        if not (self.consume(ord("\\")) and self.consume(ord("u"))):
                            raise self.fail(_BAD_SURROGATE, escape_offset)
                        low = self.hex4(escape_offset)
                        if not 0xDC00 <= low <= 0xDFFF:
                            raise self.fail(_BAD_SURROGATE, escape_offset)
                        codepoint = (((codepoint - 0xD800) << 10) | (low - 0xDC00)) + 0x10000
                    pieces.append(chr(codepoint).encode("utf-8", "surrogatepass"))
                else:
                    raise self.fail(_BAD_ESCAPE, escape_offset)
            elif char == ord('"'):
                self.pos += 1
                return b"".join(pieces).decode("utf-8", "surrogateescape") if self.build else ""
            elif char == 0:  # a NUL byte, or the end of the body
                raise self.fail(_MISS_QUOTE, self.pos)
            else:  # another control character
                raise self.fail(_BAD_ESCAPE, self.pos)

    def hex4(self, escape_offset: int) -> int:
        codepoint = 0
        for _ in range(4):
            digit = _HEX.get(self.peek())
            if digit is None:
                raise self.fail(_BAD_HEX, escape_offset)
            codepoint = codepoint * 16 + digit
            self.pos += 1
        return codepoint

    def parse_number(self) -> int | float:
        simple = _SIMPLE_NUMBER.match(self.data, self.pos)
        if simple is not None:
            self.pos = simple.end()
            if not self.build:
                return 0
            text = simple.group()
            return float(text) if b"." in text else int(text)
        return self.parse_number_slowly()

    def parse_number_slowly(self) -> int | float:
        """RapidJSON 1.1.0's ParseNumber, step by step (normal precision, NaN and Inf allowed)."""
        start = self.pos
        digit = self.digit
        minus = self.consume(ord("-"))
        small = big = 0  # RapidJSON's `i` (32 bits) and `i64`
        use64 = use_double = nan_or_inf = False
        significand_digits = 0
        value = 0.0
        if self.peek() == ord("0"):
            self.pos += 1
        elif (first := digit()) is not None and first > 0:
            self.pos += 1
            small = first
            limit, last = (214748364, 8) if minus else (429496729, 5)
            while (d := digit()) is not None:
                if small >= limit and (small != limit or d > last):
                    big, use64 = small, True
                    break
                small = small * 10 + d
                self.pos += 1
                significand_digits += 1
        elif self.peek() in (ord("I"), ord("N")):
            nan_or_inf = True
            if self.consume(ord("N")) and self.consume(ord("a")) and self.consume(ord("N")):
                value = math.nan
            elif self.consume(ord("I")) and self.consume(ord("n")) and self.consume(ord("f")):
                value = -math.inf if minus else math.inf
                if self.peek() == ord("i") and not all(self.consume(c) for c in b"inity"):
                    raise self.fail(_INVALID_VALUE, self.pos)
            else:
                raise self.fail(_INVALID_VALUE, self.pos)
        else:
            raise self.fail(_INVALID_VALUE, self.pos)

        if use64:
            limit, last = (0x0CCCCCCCCCCCCCCC, 8) if minus else (0x1999999999999999, 5)
            while (d := digit()) is not None:
                if big >= limit and (big != limit or d > last):
                    value, use_double = float(big), True
                    break
                big = big * 10 + d
                self.pos += 1
                significand_digits += 1
        if use_double:
            while (d := digit()) is not None:
                if value >= 1.7976931348623157e307:
                    raise self.fail(_TOO_BIG, start)
                value = value * 10 + d
                self.pos += 1

        exp_frac = 0
        if self.consume(ord(".")):
            if digit() is None:
                raise self.fail(_MISS_FRACTION, self.pos)
            if not use_double:
                if not use64:
                    big = small
                while (d := digit()) is not None:
                    if big > 0x1FFFFFFFFFFFFF:  # 2**53 - 1: the exact fast path ends here
                        break
                    big = big * 10 + d
                    self.pos += 1
                    exp_frac -= 1
                    if big != 0:
                        significand_digits += 1
                value, use_double = float(big), True
            while (d := digit()) is not None:
                self.pos += 1
                if significand_digits < 17:
                    value = value * 10.0 + d
                    exp_frac -= 1
                    if value > 0.0:
                        significand_digits += 1

        exponent = 0
        if self.consume(ord("e")) or self.consume(ord("E")):
            if not use_double:
                value, use_double = float(big if use64 else small), True
            exponent_minus = False
            if not self.consume(ord("+")) and self.consume(ord("-")):
                exponent_minus = True
            if (d := digit()) is None:
                raise self.fail(_MISS_EXPONENT, self.pos)
            exponent = d
            self.pos += 1
            max_exponent = 308 - exp_frac
            while (d := digit()) is not None:
                exponent = exponent * 10 + d
                self.pos += 1
                if exponent_minus:
                    if exponent >= 214748364:  # RapidJSON skips the rest of a huge exponent
                        while digit() is not None:
                            self.pos += 1
                elif exponent > max_exponent:
                    raise self.fail(_TOO_BIG, start)
            if not exponent_minus and exponent > max_exponent:
                raise self.fail(_TOO_BIG, start)
            if exponent_minus:
                exponent = -exponent

        if use_double:
            value = _strtod_normal_precision(value, exponent + exp_frac)
            return -value if minus else value
        if nan_or_inf:
            return value
        if use64:
            return -big if minus else big
        return -small if minus else small

    def digit(self) -> int | None:
        char = self.peek()
        return char - 48 if 48 <= char <= 57 else None


class _Members(list):
    """The members of an object being built: (key, value) pairs in document order."""


# ============================================================================ writing


#: RapidJSON's Writer escapes: quote, backslash, and control characters (\b \t \n \f \r by
#: name, the rest as \u00XX in upper-case hex); every other byte is copied as it is.
_MUST_ESCAPE = re.compile(rb'[\x00-\x1f"\\]')
_ESCAPE_NAMES = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}


def _escape_byte(match: re.Match) -> bytes:
    byte = match.group()[0]
    if byte in (0x22, 0x5C):
        return b"\\" + match.group()
    return _ESCAPE_NAMES.get(byte) or b"\\u00%02X" % byte


def quote(text: str) -> str:
    """A JSON string literal as RapidJSON's Writer writes it (non-ASCII bytes left as they are)."""
    raw = text.encode("utf-8", "surrogateescape")
    return '"' + _MUST_ESCAPE.sub(_escape_byte, raw).decode("utf-8", "surrogateescape") + '"'


def format_double(value: float) -> str:
    """RapidJSON's Writer::Double (Grisu2 digits, then Prettify): `0.1`, `1e21`, `1e-7`, `100.0`.

    NaN and infinities are not JSON; RapidJSON's writer refuses them (see `debug_string`).
    """
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # kk: the decimal exponent with value = 0.digits * 10**kk.
    kk = len(whole) if whole != "0" else -(len(fraction) - len(fraction.lstrip("0")))
    kk += int(exp_text or 0)
    digits = digits.rstrip("0") or "0"
    length = len(digits)
    if length <= kk <= 21:
        return sign + digits + "0" * (kk - length) + ".0"
    if 0 < kk <= 21:
        return sign + digits[:kk] + "." + digits[kk:]
    if -6 < kk <= 0:
        return sign + "0." + "0" * (-kk) + digits
    body = digits[0] + ("." + digits[1:] if length > 1 else "")
    return f"{sign}{body}e{kk - 1}"


def json_type(value: Any) -> str:
    """RapidJSON's type names, as TF Serving prints them after `Type:`."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def is_rapidjson_integer(value: Any) -> bool:
    """An int RapidJSON stores as an integer (anything else numeric is a double)."""
    return type(value) is int


class _StopWriting(Exception):
    """The debug string reached its limit (or met a value RapidJSON cannot write)."""


class _DebugWriter:
    """RapidJSON's PrettyWriter with kFormatSingleLineArray behind JsonWriterWithLimit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.levels: list[list] = []  # [in_array, values written]

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.size += (
            len(text.encode("utf-8", "surrogateescape")) if not text.isascii() else len(text)
        )

    def event(self) -> None:
        """Every handler call first checks the limit, then writes RapidJSON's prefix."""
        if self.size >= self.limit:
            raise _StopWriting
        if not self.levels:
            return
        level = self.levels[-1]
        if level[0]:
            if level[1] > 0:
                self.put(", ")
        else:
            if level[1] > 0:
                self.put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self.put("\n")
            if level[1] % 2 == 0:
                self.put("    " * len(self.levels))
        level[1] += 1

    def scalar(self, value: Any) -> None:
        self.event()
        if value is None:
            self.put("null")
        elif value is True or value is False:
            self.put("true" if value else "false")
        elif isinstance(value, str):
            self.put(quote(value))
        elif is_rapidjson_integer(value):
            self.put(str(value))
        elif math.isfinite(value):
            self.put(format_double(value))
        else:
            raise _StopWriting  # Writer::Double returns false for NaN and infinities

    def start(self, in_array: bool) -> None:
        self.event()
        self.put("[" if in_array else "{")
        self.levels.append([in_array, 0])

    def end(self) -> None:
        if self.size >= self.limit:
            raise _StopWriting
        in_array, count = self.levels.pop()
        if in_array:
            self.put("]")
        else:
            if count:
                self.put("\n" + "    " * len(self.levels))
            self.put("}")

    def write(self, value: Any) -> None:
        """`value.Accept(writer)` without recursion."""
        pending: list[Any] = [value]
        while pending:
            item = pending.pop()
            if item is _END:
                self.end()
            elif isinstance(item, _Key):
                self.scalar(item.name)
            elif isinstance(item, list):
                self.start(True)
                pending.append(_END)
                pending.extend(reversed(item))
            elif isinstance(item, DenseArray):
                # Written as its list would be; each element takes a byte or more, so the first
                # `limit` of them are all that can be written.
                self.start(True)
                pending.append(_END)
                head = item.array[: self.limit]
                rows = [DenseArray(row) for row in head] if head.ndim > 1 else head.tolist()
                pending.extend(reversed(rows))
            elif isinstance(item, dict):
                self.start(False)
                pending.append(_END)
                for key, member in reversed(item.items()):
                    pending.append(member)
                    pending.append(_Key(key))
            else:
                self.scalar(item)


class _Key:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_END = object()


def debug_string(value: Any, limit: int = DEBUG_STRING_LIMIT) -> str:
    """TF Serving's JsonValueToDebugString: the value as RapidJSON writes it, cut near `limit`.

    Arrays stay on one line (`[1, 2]`), objects take one indented line per member; writing stops
    at the first value or bracket that would start past `limit` bytes, so the text may end in the
    middle of a structure, exactly as TF Serving's does.
    """
    writer = _DebugWriter(limit)
    try:
        writer.write(value)
    except _StopWriting:
        pass
    return "".join(writer.parts)


# ============================================================================ parsing elsewhere

#: Bodies at least this large are parsed by a child process. Python's JSON parser holds the
#: interpreter for the whole document (about 1 s per 10 MB on a busy machine), which would stall
#: every other request of the server, gRPC ones included; the child's result comes back as a
#: pickle, which loads several times faster than the JSON it came from.
PARSE_ELSEWHERE_BYTES = 1 << 20
#: Longest a child parse may take when the request brings no deadline of its own; then the
#: child is killed (it is started again for the next body) and the request fails.
PARSE_TIMEOUT_S = 120.0
_FRAME_HEADER = 8


class ParseTimeout(TimeoutError):
    """The parser process did not answer in time (it was killed)."""


class ParserProcess:
    """One child process (`python -m helpers.server.json_document`) that parses bodies in turn.

    It starts on first use, imports nothing but this module and NumPy, and exits when its stdin
    closes (so it never outlives the server). If it fails, the body is parsed here instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    def parse(self, body: bytes, timeout: float = PARSE_TIMEOUT_S) -> Any:
        """The parsed body; ParseTimeout when the child has not answered within `timeout`
        seconds (waiting for an earlier body's turn included)."""
        deadline = time.monotonic() + max(0.0, timeout)
        if not self._lock.acquire(timeout=max(0.0, timeout)):
            raise ParseTimeout(_timeout_message(len(body), timeout))
        try:
            timed_out = threading.Event()
            try:
                process = self._started()
            except OSError:
                process = None
            watchdog = None
            if process is not None:

                def kill() -> None:
                    timed_out.set()
                    process.kill()  # the blocked write or read below then fails

                watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), kill)
                watchdog.daemon = True
                watchdog.start()
            try:
                if process is None:
                    raise OSError("the JSON parser process could not start")
                _write_frame(process.stdin, body)
                outcome, value = pickle.loads(_read_frame(process.stdout))
                if outcome == "ok":
                    value = _unpack(value)
            except (OSError, EOFError, ValueError, pickle.UnpicklingError):
                self._stop()
                if timed_out.is_set():
                    raise ParseTimeout(_timeout_message(len(body), timeout)) from None
                outcome, value = "here", None
            finally:
                if watchdog is not None:
                    watchdog.cancel()
        finally:
            self._lock.release()
        if outcome == "ok":
            return value
        if outcome == "error":
            raise JsonParseError(value)
        return parse_here(body)  # too deep to pickle, or the child failed: parse it here

    def _started(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            self._process = subprocess.Popen(
                [sys.executable, "-m", "helpers.server.json_document"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        return self._process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            for stream in (process.stdin, process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        """End the child (it is started again if another large body comes)."""
        with self._lock:
            self._stop()


def _timeout_message(size: int, timeout: float) -> str:
    return (
        f"Timed out parsing the {size}-byte request body after {timeout:.3g} s; "
        "send a smaller request (fewer instances per call)"
    )


_PARSER_PROCESS = ParserProcess()


def stop_parser_process() -> None:
    """End the child process that parses large bodies, if it runs."""
    _PARSER_PROCESS.stop()


#: Elements of a long list pickled together: the parent unpickles them slice by slice, so no
#: single call holds its interpreter for long (and other requests' threads run in between).
_PICKLE_SLICE = 256
#: The members of a request that hold tensors (TF Serving's predict keys), and that the child
#: sends as arrays when it can.
_TENSOR_KEYS = ("instances", "inputs")


class DenseArray:
    """A JSON array the child sent as one NumPy array instead of millions of Python objects.

    Only a rectangular array whose every leaf is a float (read as float64), or every leaf an
    int in int64's range, becomes one: `to_list()` gives back exactly the values the parser
    read, so nothing a request can say is lost. A 50 MB body of numbers, rebuilt in the server
    as Python lists, kept its interpreter busy (allocating, collecting, freeing) for hundreds of
    milliseconds at a time, stalling every other call; as an array it is one buffer.
    """

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def to_list(self) -> list:
        """The JSON array as the parser built it, a row at a time (other threads run between)."""
        if self.array.ndim == 1:
            flat: list = []
            for start in range(0, len(self.array), _PICKLE_SLICE * 64):
                flat.extend(self.array[start : start + _PICKLE_SLICE * 64].tolist())
            return flat
        return [row.tolist() for row in self.array]


def dense_array(value: Any) -> DenseArray | None:
    """`value` as a DenseArray when it is a non-empty rectangular list of only floats or only
    ints that fit int64; otherwise None (the value then travels as Python objects)."""
    if not isinstance(value, list) or not value:
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None  # ragged, or mixed with other kinds
    if array.dtype not in (np.float64, np.int64) or array.size == 0:
        return None
    leaves = np.empty(array.shape, dtype=object)
    try:
        leaves[...] = value
    except (ValueError, TypeError):
        return None
    # NumPy reads True as 1 and mixes ints into floats; either would change what the value says.
    if {type(leaf) for leaf in leaves.flat} != {float if array.dtype == np.float64 else int}:
        return None
    return DenseArray(array)


def materialize(doc: Any, levels: int = 2) -> Any:
    """The document with every DenseArray (they sit in its top `levels`) back as Python lists,
    as `parse_here` returns it."""
    if isinstance(doc, DenseArray):
        return doc.to_list()
    if levels and isinstance(doc, dict) and not isinstance(doc, JsonObject):
        changed = {
            key: plain
            for key, value in doc.items()
            if isinstance(value, (DenseArray, dict))
            and (plain := materialize(value, levels - 1)) is not value
        }
        if changed:
            return {**doc, **changed}
    return doc


def _pack(value: Any, levels: int = 2, *, tensors: bool = True) -> Any:
    """What the child sends back: tensor members as DenseArrays when they can be, and the long
    lists of the top `levels` of the document split into pickled slices.

    A sliced part is a tuple `(kind, parts)`: JSON values are never tuples, so nothing else is.
    """
    if levels and isinstance(value, dict) and not isinstance(value, JsonObject):
        return (
            "dict",
            [
                (key, _pack_member(item, levels - 1, tensors and key in _TENSOR_KEYS))
                for key, item in value.items()
            ],
        )
    if isinstance(value, list) and len(value) > _PICKLE_SLICE:
        return (
            "list",
            [
                pickle.dumps(value[start : start + _PICKLE_SLICE], pickle.HIGHEST_PROTOCOL)
                for start in range(0, len(value), _PICKLE_SLICE)
            ],
        )
    return value


def _pack_member(value: Any, levels: int, holds_tensors: bool) -> Any:
    """One member of the document: `instances`, `inputs` and the named members of `inputs`
    go as DenseArrays when they can."""
    if holds_tensors:
        dense = dense_array(value)
        if dense is not None:
            return dense
        if isinstance(value, dict) and not isinstance(value, JsonObject):
            return ("dict", [(key, _pack_member(item, 0, True)) for key, item in value.items()])
    return _pack(value, levels, tensors=False)


def _unpack(value: Any) -> Any:
    if not isinstance(value, tuple):
        return value
    kind, parts = value
    if kind == "dict":
        return {key: _unpack(item) for key, item in parts}
    items: list = []
    for part in parts:
        items.extend(pickle.loads(part))
    return items


def _write_frame(stream: Any, data: bytes) -> None:
    stream.write(len(data).to_bytes(_FRAME_HEADER, "big"))
    stream.write(data)
    stream.flush()


def _read_frame(stream: Any) -> bytes:
    header = stream.read(_FRAME_HEADER)
    if len(header) < _FRAME_HEADER:
        raise EOFError("the JSON parser process ended")
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the JSON parser process ended")
    return data


def _serve_parses() -> None:
    """The child's loop: a body in, `(outcome, value)` pickled out, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            body = _read_frame(stdin)
        except EOFError:
            return
        try:
            result: tuple[str, Any] = ("ok", _pack(parse_here(body)))
        except JsonParseError as err:
            result = ("error", err.message)
        try:
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except RecursionError:
            data = pickle.dumps(("here", None))
        _write_frame(stdout, data)


if __name__ == "__main__":
    # Run from the importable module, so what is pickled (JsonObject, DenseArray) names it
    # rather than __main__, and the parent can load it.
    from helpers.server import json_document

    json_document._serve_parses()
