"""What WORKSHOP.md and notebook 10 say works against one classroom server, run against one.

The instructor's server is a second process (the embedded server on free ports, with a model
folder of its own). The learner's side is pointed at it by `MODEL_SERVER` alone, the one setting
`helpers.config` reads, and has an empty models folder, as a fresh laptop has. The list tested
here is the list the documents give: `lean_client/predict.py` (with TensorFlow blocked), and
notebooks 00 and 05 run by papermill with their usual small parameters and checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import client, config

pytest_plugins = ["served_mnist"]

ROOT = Path(__file__).resolve().parent.parent
LEAN = ROOT / "lean_client"
#: Runs lean_client/predict.py with every import of TensorFlow failing.
NO_TENSORFLOW = (
    "import runpy, sys; sys.modules['tensorflow'] = None; "
    "sys.argv = ['predict.py', '--server', sys.argv[1]]; "
    "runpy.run_path('predict.py', run_name='__main__')"
)
#: What the documents say works against a shared server.
SHARED_SERVER_NOTEBOOKS = ("00_check_your_environment", "05_call_it_over_grpc")


@pytest.fixture
def learner(private_served_mnist, tmp_path, monkeypatch) -> config.ServerAddress:
    """A learner's laptop: MODEL_SERVER names the instructor's server; no model of its own."""
    instructor = private_served_mnist
    setting = f"localhost:{instructor.grpc_port}:{instructor.rest_port}"
    monkeypatch.setenv(config.SERVER_ENV, setting)
    monkeypatch.setenv(config.MODELS_DIR_ENV, str(tmp_path / "laptop-models"))
    address = config.server_address()
    assert not address.embedded and address.grpc_target == instructor.grpc_target
    return address


def test_the_lean_client_needs_no_tensorflow(learner):
    lean = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, learner.grpc_target],
        cwd=LEAN,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lean.returncode == 0, lean.stderr
    digits = np.load(LEAN / "digits.npy")
    with client.open_channel(learner.grpc_target) as channel:
        served = client.predict(channel, digits).argmax(axis=1).tolist()
    assert [int(line) for line in lean.stdout.split()] == served


def test_blocking_tensorflow_really_blocks_it():
    probe = "import sys; sys.modules['tensorflow'] = None; import tensorflow"
    blocked = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert blocked.returncode != 0 and "import of tensorflow halted" in blocked.stderr


@pytest.mark.parametrize("name", SHARED_SERVER_NOTEBOOKS)
def test_notebook_runs_against_the_shared_server(name, learner, tmp_path, monkeypatch):
    from test_notebooks import run_notebook

    _, executed = run_notebook(name, tmp_path, monkeypatch)
    text = "\n".join(
        output.get("text", "") for cell in executed.cells for output in cell.get("outputs", [])
    )
    # The notebook says which server it used: the shared one, never one of its own.
    if name.startswith("00"):
        assert f"gRPC: {learner.grpc_target}" in text and "(external server)" in text
    else:
        assert f"server at {learner.grpc_target};" in text
