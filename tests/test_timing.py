"""helpers.timing: measured run times go into the README table and the overviews, alike."""

from __future__ import annotations

import nbformat
import pytest

from helpers import timing

README = """# Course

| notebook | what you learn | run time |
|---|---|---|
| [00 Check](notebooks/00_check_your_environment.ipynb) | versions, `ports` | 12 s |
| [07 Compare](notebooks/07_compare_grpc_and_rest.ipynb) | REST and gRPC, measured | - |

Text after the table | with a pipe.
"""


@pytest.mark.parametrize(("seconds", "told"), [(0.2, 5), (12.3, 15), (15.0, 15), (61.0, 65)])
def test_times_are_rounded_up_to_five_seconds(seconds, told):
    assert timing.rounded(seconds) == told


def test_the_readme_table_gets_the_new_times_and_nothing_else_changes():
    updated = timing.with_readme_times(
        README, {"00_check_your_environment": 20, "07_compare_grpc_and_rest": 45}
    )
    assert timing.readme_times(updated) == {
        "00_check_your_environment": "20 s",
        "07_compare_grpc_and_rest": "45 s",
    }
    assert updated.replace("20 s", "12 s").replace("45 s", "-") == README


def test_a_notebook_without_a_readme_row_is_named_with_the_row_to_add():
    with pytest.raises(ValueError, match=r"notebooks/08_get_ready_for_production\.ipynb"):
        timing.with_readme_times(README, {"08_get_ready_for_production": 30})


def test_the_overview_sentence_is_read_and_rewritten():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\n**Time to run**: about 20 seconds, measured."),
        nbformat.v4.new_markdown_cell("**Time to run**: about 99 seconds (a later mention)."),
    ]
    assert timing.overview_time(notebook) == 20
    timing.set_overview_time(notebook, 35)
    assert timing.overview_time(notebook) == 35
    assert notebook.cells[0].source.endswith("about 35 seconds, measured.")
    assert "99 seconds" in notebook.cells[1].source
    with pytest.raises(ValueError, match="Time to run"):
        timing.set_overview_time(nbformat.v4.new_notebook(), 10)


def test_notebooks_are_chosen_by_number_in_course_order():
    every = timing.course_notebooks()
    assert every == sorted(every) and every[0].name.startswith("00_")
    assert [path.name[:2] for path in timing.course_notebooks(["5", "02"])] == ["02", "05"]
    with pytest.raises(SystemExit, match="No notebook numbered 99"):
        timing.course_notebooks(["99"])
