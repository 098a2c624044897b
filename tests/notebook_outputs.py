"""Compare a notebook's fresh outputs with its committed ones, the way nbval's lax mode does.

Every notebook runs once per test run with its default parameters: the browser test's Run All
in JupyterLab (tests/test_browser.py). That run is also the output check: the code cells marked
`# NBVAL_CHECK_OUTPUT` must reproduce their committed outputs after the replacements in
tests/nbval_sanitize.cfg (durations, ports, addresses, float tails...). The rules are nbval's:
streams of one name are joined and their carriage returns applied (nbval's own
`coalesce_streams`), images, widget ids and metadata are not compared, and every other output
field must match, in order. `make test-nbval` runs the same check through nbval itself, for a
machine without a browser.
"""

from __future__ import annotations

import configparser
import copy
import functools
import re
from collections import defaultdict
from pathlib import Path

from nbval.plugin import coalesce_streams

SANITIZE_FILE = Path(__file__).resolve().parent / "nbval_sanitize.cfg"
#: The marker of a cell whose output must not change (nbval's).
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
#: Output fields nbval leaves out of the comparison by default (no --nbdime: images too).
NOT_COMPARED = frozenset(
    {
        "metadata",
        "traceback",
        "prompt_number",
        "output_type",
        "name",
        "execution_count",
        "application/vnd.jupyter.widget-view+json",
        "image/png",
        "image/jpeg",
    }
)


@functools.cache
def sanitize_patterns(path: Path = SANITIZE_FILE) -> tuple[tuple[re.Pattern, str], ...]:
    """The (regex, replacement) pairs of an nbval sanitize file, in file order (read once)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return tuple(
        (re.compile(parser[section]["regex"]), parser[section]["replace"])
        for section in parser.sections()
    )


def sanitize(value, patterns):
    if not isinstance(value, str):
        return value
    for pattern, replacement in patterns:
        value = pattern.sub(replacement, value)
    return value


def _fields(outputs, patterns) -> dict[str, list]:
    """nbval's view of a cell's outputs: every compared field (data flattened) -> its values."""
    fields: dict[str, list] = defaultdict(list)
    for output in coalesce_streams(copy.deepcopy(list(outputs))):
        for key, value in output.items():
            if key in NOT_COMPARED:
                continue
            if key == "data":
                for mime, content in value.items():
                    if mime not in NOT_COMPARED:
                        fields[mime].append(sanitize(_text(content), patterns))
            else:
                # a stream's text is compared under the stream's name, as nbval reports it
                name = output.get("name", key) if key == "text" else key
                fields[name].append(sanitize(_text(value), patterns))
    return dict(fields)


def _text(value):
    return "".join(value) if isinstance(value, list) else value


def checked_cells(notebook) -> list[int]:
    """Indexes of the code cells whose outputs must be reproduced."""
    return [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and CHECK_MARKER in cell.source
    ]


def output_differences(committed, executed, patterns=None) -> list[str]:
    """What differs, cell by cell, between the committed and the executed notebook."""
    patterns = sanitize_patterns() if patterns is None else patterns
    problems = []
    for index in checked_cells(committed):
        source = committed.cells[index].source
        if index >= len(executed.cells) or executed.cells[index].source != source:
            problems.append(f"cell {index}: not found at the same place in the executed notebook")
            continue
        want = _fields(committed.cells[index].get("outputs", []), patterns)
        got = _fields(executed.cells[index].get("outputs", []), patterns)
        if want != got:
            first_line = next(
                (line for line in source.splitlines() if line.strip() and CHECK_MARKER not in line),
                "",
            )[:60]
            problems.append(
                f"cell {index} ({first_line!r}) differs from its committed output:\n"
                f"  committed: {want}\n  now:       {got}"
            )
    return problems
