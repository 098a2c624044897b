"""Lint and spelling over code, tests and notebooks: the course's own hygiene, in CI."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command):
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    shown = " ".join(map(str, command))
    assert done.returncode == 0, f"{shown} failed:\n{done.stdout}{done.stderr}"


def test_ruff_on_code():
    run(BIN / "ruff", "check", "helpers", "tests")


def test_ruff_format_on_code():
    run(BIN / "ruff", "format", "--check", "helpers", "tests")


def test_ruff_on_notebooks():
    run(BIN / "nbqa", "ruff", "notebooks")


def test_spelling():
    run(BIN / "codespell", "helpers", "tests", "notebooks", "README.md")
