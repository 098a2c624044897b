"""Small conveniences for notebooks: recording values the tests check."""

from __future__ import annotations

import json
import os
from pathlib import Path

#: papermill tests set this to a JSON file; `record` adds each key to it.
RECORD_ENV = "COURSE_RECORD_FILE"


def _jsonable(value):
    """Plain Python for JSON: NumPy scalars and arrays, paths and tuples included."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def record(key: str, value):
    """Remember `value` under `key` for the notebook tests, and return it unchanged.

    Outside a test run (no $COURSE_RECORD_FILE) it only returns the value.
    """
    target = os.environ.get(RECORD_ENV)
    if target:
        path = Path(target)
        records = json.loads(path.read_text()) if path.is_file() else {}
        records[key] = _jsonable(value)
        path.write_text(json.dumps(records, indent=1, sort_keys=True))
    return value
