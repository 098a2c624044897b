"""Unit tests of helpers.server.json_document: RapidJSON's reading and TF Serving's debug strings.

Expected texts follow RapidJSON 1.1.0 (reader.h, error/en.h, prettywriter.h) with TF Serving's
flags (util/json_tensor.cc: kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag;
JsonValueToDebugString with kFormatSingleLineArray and a 256-byte limit).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.server import json_document as jd

E = "JSON Parse error: "


def parse_error(body: bytes) -> str:
    with pytest.raises(jd.JsonParseError) as caught:
        jd.parse_here(body)
    return caught.value.message


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", E + "The document is empty"),
        (b"   ", E + "The document is empty. at offset: 3"),
        (b"{", E + "Missing a name for object member. at offset: 1"),
        (b'{"a" 1}', E + "Missing a colon after a name of object member. at offset: 5"),
        (b"[1 2]", E + "Missing a comma or ']' after an array element. at offset: 3"),
        (b'{"a": 1 "b"}', E + "Missing a comma or '}' after an object member. at offset: 8"),
        (b"[1,]", E + "Invalid value. at offset: 3"),
        (b'{"a": 1,}', E + "Missing a name for object member. at offset: 8"),
        (b"\xff", E + "Invalid value. at offset: 0"),
        (b"[tru]", E + "Invalid value. at offset: 4"),
        (b'["a\\x"]', E + "Invalid escape character in string. at offset: 3"),
        (b'["a\\u12g4"]', E + "Incorrect hex digit after \\u escape in string. at offset: 3"),
        (b'["\\ud800"]', E + "The surrogate pair in string is invalid. at offset: 2"),
        (b'["abc', E + "Missing a closing quotation mark in string. at offset: 5"),
        (b"[1.]", E + "Miss fraction part in number. at offset: 3"),
        (b"[1e]", E + "Miss exponent in number. at offset: 3"),
        (b"[1e400]", E + "Number too big to be stored in double. at offset: 1"),
        (b"[1" + b"0" * 400 + b"]", E + "Number too big to be stored in double. at offset: 1"),
    ],
)  # fmt: skip
def test_parse_errors_are_rapidjsons(body, message):
    assert parse_error(body) == message


def test_parsing_stops_after_the_first_value():
    assert jd.parse_here(b'{"a": 1} trailing ] garbage') == {"a": 1}
    assert jd.parse_here(b"\xef\xbb\xbf[1]") == [1]  # a UTF-8 byte order mark is skipped


# ----------------------------------------------------------------------------- values
def test_numbers_as_rapidjson_types_them():
    values = jd.parse_here(
        b"[18446744073709551615, 18446744073709551616, -9223372036854775808, "
        b"-9223372036854775809, 1.0, 1]"
    )
    assert values[0] == 2**64 - 1 and type(values[0]) is int
    assert values[1] == 2.0**64 and type(values[1]) is float
    assert values[2] == -(2**63) and type(values[2]) is int
    assert type(values[3]) is float
    assert type(values[4]) is float and type(values[5]) is int


def test_nan_and_infinities_in_every_spelling():
    values = jd.parse_here(b"[NaN, Infinity, -Infinity, Inf, -Inf]")
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, math.inf, -math.inf]


def test_repeated_keys_keep_every_member_and_find_the_first():
    value = jd.parse_here(b'{"a": 1, "a": 2, "b": 3}')
    assert value["a"] == 1 and len(value) == 3
    assert value.items() == [("a", 1), ("a", 2), ("b", 3)]


def test_bytes_that_are_not_utf8_are_kept():
    assert jd.parse_here(b'["\xff\xfe"]') == ["\udcff\udcfe"]
    assert jd.quote("\udcff") == '"\udcff"'


@pytest.mark.parametrize("depth", [1_000, 10_000, jd.MAX_NESTING])
def test_deep_nesting_without_recursion(depth):
    value = jd.parse_here(b"[" * depth + b"]" * depth)
    levels = 0
    while isinstance(value, list):
        levels += 1
        value = value[0] if value else None
    assert levels == depth


def test_nesting_past_the_limit_is_refused():
    depth = jd.MAX_NESTING + 1
    assert parse_error(b"[" * depth + b"]" * depth) == (
        f"JSON Parse error: the document nests {depth} levels deep; "
        f"the embedded server reads at most {jd.MAX_NESTING}"
    )


def test_fast_and_exact_readers_agree():
    body = b'{"x": [1, -2.5, 0.1, 1e-7, 12345678901234567, "s\\u00e9\\n", true, null, {}]}'
    exact = jd._Reader(body, build=True)
    exact.run()
    assert exact.result == jd.parse_here(body) == json.loads(body)


# ----------------------------------------------------------------------------- debug strings
def test_debug_string_layout():
    value = {"a": {"b": [1, 2.5, "x"]}, "c": [], "d": {}, "e": None, "f": True}
    assert jd.debug_string(value) == (
        '{\n    "a": {\n        "b": [1, 2.5, "x"]\n    },\n    "c": [],\n    "d": {},\n'
        '    "e": null,\n    "f": true\n}'
    )
    assert jd.debug_string([1e21, 1e-7, 100.0, -0.0, 0.1]) == "[1e21, 1e-7, 100.0, -0.0, 0.1]"


def test_debug_string_stops_after_256_bytes_at_a_value():
    text = jd.debug_string(list(range(1000)))
    count = len(text[1:].split(", "))
    assert text == "[" + ", ".join(str(n) for n in range(count))
    assert len(text) >= jd.DEBUG_STRING_LIMIT
    assert len("[" + ", ".join(str(n) for n in range(count - 1))) < jd.DEBUG_STRING_LIMIT


def test_debug_string_stops_at_nan():
    """RapidJSON's Writer refuses NaN and infinities, which ends the debug string there."""
    assert jd.debug_string([1.0, math.nan, 2.0]) == "[1.0, "


def test_debug_string_of_deep_nesting_is_cut_not_recursive():
    value = jd.parse_here(b"[" * 50_000 + b"]" * 50_000)
    text = jd.debug_string(value)
    assert text == "[" * len(text) and jd.DEBUG_STRING_LIMIT <= len(text) <= 257


# ----------------------------------------------------------------------------- parser process
def test_large_bodies_are_parsed_by_the_child_process_the_same_way():
    body = json.dumps({"inputs": [[0.25, 1, -3.5e-8]] * 100_000}).encode()
    assert len(body) >= jd.PARSE_ELSEWHERE_BYTES
    try:
        assert jd.parse(body) == jd.parse_here(body)
        # Broken early, so both readers stop early (the exact reader is pure Python).
        broken = body.replace(b"1, -3.5e-08]", b"1,, -3.5e-08]", 1)
        with pytest.raises(jd.JsonParseError) as caught:
            jd.parse(broken)
        assert caught.value.message == parse_error(broken)
        process = jd._PARSER_PROCESS._process
        assert process is not None and process.poll() is None
    finally:
        jd.stop_parser_process()
    assert process.poll() is not None  # stopped, no orphan


@pytest.mark.parametrize(
    ("body", "exact"),
    [
        (b"12345678901234567890", True),
        (b"[-12345678901234567890]", True),
        (b"[0.12345678901234567890]", False),  # a long fraction reads the same either way
        (b"[1e308, 2]", True),
        (b"[1E+400]", True),
        (b'["\\ud800"]', True),
        (b'["\\u0041", 1.5e-7]', False),
    ],
)
def test_which_bodies_take_the_exact_reader(body, exact):
    assert jd._needs_exact_reader(body) is exact


def test_the_parser_process_ends_with_its_parent():
    """Killing the server (SIGKILL, no clean-up) closes the child's stdin: it exits, no orphan."""
    script = (
        "import os, sys\n"
        "from helpers.server import json_document as jd\n"
        "jd.parse(b'[' + b' ' * jd.PARSE_ELSEWHERE_BYTES + b'1]')\n"
        "print(jd._PARSER_PROCESS._process.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(jd.__file__).resolve().parents[2],
    )
    try:
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
        parent.wait()


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its (dead) parent's reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_the_parser_process_call_has_a_timeout():
    """A child that does not answer in time is killed and the call fails with a clear error;
    the next large body is parsed by a fresh child."""
    from helpers.server.json_document import PARSE_ELSEWHERE_BYTES, ParserProcess, ParseTimeout

    body = b'{"instances": [' + b"1.5, " * (PARSE_ELSEWHERE_BYTES // 5) + b"2]}"
    parser = ParserProcess()
    try:
        # A Python child cannot even start in a millisecond: the timeout fires first.
        with pytest.raises(ParseTimeout, match=r"Timed out parsing the \d+-byte request body"):
            parser.parse(body, timeout=0.001)
        assert parser.parse(body, timeout=300)["instances"][-2:] == [1.5, 2]
    finally:
        parser.stop()
