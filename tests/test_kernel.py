"""`make install`'s Jupyter set-up: the course kernel and JupyterLab's defaults for the course."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import kernel


def test_install_writes_the_kernel_and_turns_the_news_question_off(tmp_path):
    folder = kernel.install(str(tmp_path))
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["display_name"] == kernel.DISPLAY_NAME
    overrides = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    notification = json.loads(overrides.read_text())["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}


def test_lab_settings_keep_what_overrides_json_already_holds(tmp_path):
    overrides = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    overrides.parent.mkdir(parents=True)
    overrides.write_text(
        json.dumps(
            {
                "@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
                "@jupyterlab/apputils-extension:notification": {"doNotDisturbMode": True},
            }
        )
    )
    kernel.install_lab_settings(str(tmp_path))
    settings = json.loads(overrides.read_text())
    assert settings["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    assert settings["@jupyterlab/apputils-extension:notification"] == {
        "doNotDisturbMode": True,
        "fetchNews": "false",
        "checkForUpdates": False,
    }


def test_a_broken_overrides_file_is_reported_not_overwritten(tmp_path):
    overrides = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    overrides.parent.mkdir(parents=True)
    overrides.write_text("{not json")
    with pytest.raises(SystemExit, match="overrides.json is not valid JSON.*fix or delete it"):
        kernel.install_lab_settings(str(tmp_path))
    assert overrides.read_text() == "{not json"


def test_the_settings_are_ones_jupyterlab_knows():
    """A misspelt key or value would be dropped silently by JupyterLab: check its own schema."""
    schemas = Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"
    types = {"string": str, "boolean": bool}
    for plugin, settings in kernel.LAB_SETTINGS.items():
        package, name = plugin.split(":")
        schema = json.loads((schemas / package / f"{name}.json").read_text())
        for key, value in settings.items():
            known = schema["properties"][key]
            assert isinstance(value, types[known["type"]]), (plugin, key, value)
            allowed = [choice["const"] for choice in known.get("oneOf", [])]
            assert not allowed or value in allowed, (plugin, key, value)
