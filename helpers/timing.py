"""Time every notebook and write the times where learners read them: one measured source.

    python -m helpers.timing             # run notebooks/NN_*.ipynb in course order, write times
    python -m helpers.timing 04 05       # only those notebooks
    python -m helpers.timing --inplace   # also keep the executed outputs in the notebooks
    python -m helpers.timing --dry-run   # measure and print, change no file

Each notebook is executed headless with the course's kernel and its default parameters, in
course order (a later notebook finds what an earlier one made), and its wall time is rounded
up to the next ROUND_TO seconds. That figure goes into the run-time column of the notebook
tables of README.md and WORKSHOP.md and into the notebook's own overview ("**Time to run**:
about N seconds"), so they always agree; a test checks they do. Without --inplace the
notebooks run as copies in a temporary folder with a fresh, temporary models folder, and
nothing but the times changes.
Run it on a quiet machine: other work on the cores makes every notebook slower.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from helpers import config

#: Times are rounded up to a multiple of this many seconds.
ROUND_TO = 5
#: The Jupyter kernel the course installs (helpers.kernel).
KERNEL_NAME = "grpc-serving-course"
#: One row of the README's notebook table: link to notebooks/NN_name.ipynb, ..., run time.
README_ROW = re.compile(
    r"^(?P<head>\|\s*\[[^\]]*\]\(notebooks/(?P<stem>\d\d_[A-Za-z0-9_]+)\.ipynb\)\s*\|.*\|)"
    r"(?P<time>[^|]*)\|\s*$"
)
#: The documents whose notebook tables end in a run-time column (README.md must list every one).
TIMED_DOCUMENTS = ("README.md", "WORKSHOP.md")
#: The run-time sentence of a notebook's overview.
OVERVIEW_TIME = re.compile(r"(\*\*Time to run\*\*: about )(\d+)( seconds)")


def notebooks_folder() -> Path:
    return config.course_root() / "notebooks"


def course_notebooks(numbers: Iterable[str] = ()) -> list[Path]:
    """`notebooks/NN_*.ipynb` in course order; only the given numbers ("04", "5") if any."""
    found = sorted(notebooks_folder().glob("[0-9][0-9]_*.ipynb"))
    wanted = {f"{int(number):02d}" for number in numbers}
    chosen = [path for path in found if not wanted or path.name[:2] in wanted]
    missing = wanted - {path.name[:2] for path in chosen}
    if missing:
        raise SystemExit(f"No notebook numbered {', '.join(sorted(missing))} in notebooks/.")
    return chosen


def rounded(seconds: float) -> int:
    """The time learners are told: measured seconds rounded up to a multiple of ROUND_TO."""
    return max(ROUND_TO, ROUND_TO * math.ceil(seconds / ROUND_TO))


def readme_times(readme_text: str) -> dict[str, str]:
    """{notebook stem: the run-time cell's text} for every row of the README's notebook table."""
    rows = (README_ROW.match(line) for line in readme_text.splitlines())
    return {row["stem"]: row["time"].strip() for row in rows if row}


def overview_time(notebook) -> int | None:
    """The N of "**Time to run**: about N seconds" in a notebook's markdown, or None."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and (found := OVERVIEW_TIME.search(cell.source)):
            return int(found.group(2))
    return None


def with_readme_times(readme_text: str, seconds: Mapping[str, int]) -> str:
    """The README with the run-time cell of each given notebook's row set to "N s"."""
    missing = set(seconds) - set(readme_times(readme_text))
    if missing:
        rows = "\n".join(
            f"  | [{stem[:2]} <title>](notebooks/{stem}.ipynb) | <what you learn> | - |"
            for stem in sorted(missing)
        )
        raise ValueError(
            f"README.md's notebook table has no row for:\n{rows}\nAdd them, then rerun."
        )

    def replace(line: str) -> str:
        row = README_ROW.match(line)
        if not row or row["stem"] not in seconds:
            return line
        return f"{row['head']} {seconds[row['stem']]} s |"

    lines = readme_text.split("\n")
    return "\n".join(replace(line) for line in lines)


def set_overview_time(notebook, seconds: int) -> None:
    """Write N into the notebook's "**Time to run**: about N seconds" sentence."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and OVERVIEW_TIME.search(cell.source):
            cell.source = OVERVIEW_TIME.sub(rf"\g<1>{seconds}\g<3>", cell.source, count=1)
            return
    raise ValueError(
        'the overview has no "**Time to run**: about N seconds" sentence: add one, then rerun.'
    )


def execute(path: Path, *, inplace: bool) -> tuple[float, object]:
    """Run one notebook top to bottom with the course kernel; return (seconds, notebook)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL_NAME,
        timeout=900,
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=False,  # live widgets need a kernel; stored state only misleads
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    if inplace:
        notebook.metadata.pop("widgets", None)
        nbformat.write(notebook, path)
    return seconds, notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.timing", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("numbers", nargs="*", help="notebook numbers to run (default: all)")
    parser.add_argument(
        "--inplace", action="store_true", help="store the executed outputs in the notebooks"
    )
    parser.add_argument("--dry-run", action="store_true", help="measure only; change no file")
    options = parser.parse_args(argv)
    import nbformat

    paths = course_notebooks(options.numbers)
    readme = config.course_root() / "README.md"
    with_readme_times(readme.read_text(), {path.stem: 0 for path in paths})  # fail early

    saved_models = os.environ.get(config.MODELS_DIR_ENV)
    scratch = None
    if not options.inplace:
        scratch = Path(tempfile.mkdtemp(prefix="course-timing-"))
        os.environ[config.MODELS_DIR_ENV] = str(scratch / "models")
    measured: dict[str, int] = {}
    try:
        for path in paths:
            print(f"{path.name:<40}", end=" ", flush=True)
            seconds, _ = execute(path, inplace=options.inplace)
            measured[path.stem] = rounded(seconds)
            print(f"{seconds:6.1f} s -> about {measured[path.stem]} s", flush=True)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
            if saved_models is None:
                os.environ.pop(config.MODELS_DIR_ENV, None)
            else:
                os.environ[config.MODELS_DIR_ENV] = saved_models

    if options.dry_run:
        return 0
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        set_overview_time(notebook, measured[path.stem])
        nbformat.write(notebook, path)
    # read again: the run takes minutes, and the README may have changed meanwhile
    readme.write_text(with_readme_times(readme.read_text(), measured))
    for name in TIMED_DOCUMENTS[1:]:  # their tables may list fewer notebooks than the README
        document = config.course_root() / name
        if document.is_file():
            text = document.read_text()
            listed = {stem: value for stem, value in measured.items() if stem in readme_times(text)}
            document.write_text(with_readme_times(text, listed))
    written = " and ".join(TIMED_DOCUMENTS)
    print(f"Wrote the times into {written} and the overviews of {len(paths)} notebook(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
