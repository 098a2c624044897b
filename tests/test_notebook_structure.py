"""Every notebook follows the course skeleton and is stored with the outputs of a clean run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


def test_skeleton(notebook):
    path, nb = notebook
    text = markdown(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert sum(line.startswith("# ") for line in text.splitlines()) == 1, "one H1 title"
    for heading in ("## Setup", "## Summary", "## Exercises"):
        assert heading in text, f"{path.name} has no '{heading}' section"
    assert "helpers/solutions/ex" in text, "exercises point at their kept solutions"
    assert "**Time to run**" in text or "Time to run" in text


def test_one_parameters_cell_right_after_setup(notebook):
    path, nb = notebook
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    setup = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Setup"))
    assert setup < tagged[0], "the parameters cell comes after Setup"
    for line in nb.cells[tagged[0]].source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name = line.split("=")[0].strip()
            assert name.isupper(), f"parameter {name} is not UPPER_CASE"
            assert "#" in line, f"parameter {name} has no comment"


def test_stored_outputs_come_from_a_clean_run(notebook):
    path, nb = notebook
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{path.name} has cells that were never run"
    counts = [c.execution_count for c in code]
    assert counts == sorted(counts), f"{path.name} was not run top to bottom"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} stores an error output"


def test_some_outputs_are_checked_by_nbval(notebook):
    path, nb = notebook
    assert any("# NBVAL_CHECK_OUTPUT" in c.source for c in nb.cells if c.cell_type == "code")


def test_uses_the_course_kernel(notebook):
    _, nb = notebook
    assert nb.metadata["kernelspec"]["name"] == "grpc-serving-course"


def test_links_to_the_next_notebook(notebook):
    path, nb = notebook
    later = [p for p in NOTEBOOKS if p.name > path.name]
    if later:
        assert f"({later[0].name})" in nb.cells[-1].source, f"{path.name} links to {later[0].name}"
