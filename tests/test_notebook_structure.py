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


def _outputs_text(nb):
    """(cell index, text) of every stored text output: streams, results, displays, errors."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                yield index, output.text
            elif output.output_type in ("execute_result", "display_data"):
                yield index, output.get("data", {}).get("text/plain", "")
            elif output.output_type == "error":
                yield index, output.evalue


def test_no_stderr_in_stored_outputs(notebook):
    """Warnings and progress bars on stderr show up as pink boxes a learner takes for errors."""
    path, nb = notebook
    stderr = [
        (index, output.text[:80])
        for index, cell in enumerate(nb.cells)
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stderr"
    ]
    assert not stderr, f"{path.name} stores stderr output (cell, text): {stderr}"


def test_no_machine_paths_in_stored_outputs(notebook):
    path, nb = notebook
    found = [
        (index, folder)
        for index, text in _outputs_text(nb)
        for folder in ("/tmp/", "/root/", "/work/", "/home/")
        if folder in text
    ]
    assert not found, f"{path.name} shows one machine's folders (cell, folder): {found}"


def test_no_frozen_progress_placeholders(notebook):
    """A progress widget saved without its state reads `0%|` for ever in a saved notebook."""
    path, nb = notebook
    frozen = [
        index
        for index, cell in enumerate(nb.cells)
        for output in cell.get("outputs", [])
        if output.output_type == "display_data"
        and "application/vnd.jupyter.widget-view+json" in output.get("data", {})
        and " 0%|" in output["data"].get("text/plain", "")
    ]
    assert not frozen, f"{path.name} cells {frozen} show a progress bar frozen at 0%"


def test_overview_keeps_what_you_need_and_time_apart(notebook):
    """'What you need' and 'Time to run' are two paragraphs, not one run-on line."""
    path, nb = notebook
    paragraphs = nb.cells[0].source.split("\n\n")
    timed = [p for p in paragraphs if "**Time to run**" in p]
    assert len(timed) == 1, f"{path.name}: one '**Time to run**' paragraph in the overview"
    assert "**What you need**" not in timed[0], f"{path.name}: give 'Time to run' its own paragraph"


def test_prose_refers_to_nothing_the_learner_lacks(notebook):
    path, nb = notebook
    text = markdown(nb).lower()
    for phrase in ("the old tutorial", "tutorial this course grew from"):
        assert phrase not in text, f"{path.name} mentions {phrase!r}, which a learner does not have"


def test_readme_times_are_the_overview_times(notebook):
    """README's run-time column and the overview say the same, as `helpers.timing` writes them."""
    from helpers import timing

    path, nb = notebook
    told = timing.readme_times((FOLDER.parent / "README.md").read_text())
    overview = timing.overview_time(nb)
    assert overview is not None, f'{path.name}: "**Time to run**: about N seconds" in the overview'
    assert path.stem in told, f"README.md's notebook table has no row for {path.name}"
    assert told[path.stem] == f"{overview} s", (
        f"README says {told[path.stem]!r} for {path.name}, its overview {overview} s: "
        "run `python -m helpers.timing` to measure and write both"
    )


def test_workshop_times_are_the_overview_times(notebook):
    """The instructors' agenda lists every notebook with the same measured time."""
    from helpers import timing

    path, nb = notebook
    told = timing.readme_times((FOLDER.parent / "WORKSHOP.md").read_text())
    assert path.stem in told, f"WORKSHOP.md's agenda table has no row for {path.name}"
    assert told[path.stem] == f"{timing.overview_time(nb)} s", (
        f"WORKSHOP.md says {told[path.stem]!r} for {path.name}: run `python -m helpers.timing`"
    )


def test_widgets_show_something_sensible_before_the_notebook_runs(notebook):
    """Opened fresh (untrusted, no kernel), a widget's output falls back to its text or picture."""
    path, nb = notebook
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" not in data:
                continue
            text = data.get("text/plain", "")
            assert not text.startswith(("HBox(", "VBox(", "Canvas(")), (
                f"{path.name} cell {index} falls back to a raw widget repr: {text[:60]}"
            )
            assert text.strip() or "image/png" in data, f"{path.name} cell {index} shows nothing"
