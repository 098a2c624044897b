"""Solutions to notebook 03's exercises."""

from __future__ import annotations

import tempfile
from pathlib import Path

from helpers import config
from helpers.export import export_model, inspect_signature, latest_version, list_versions


def export_next_version(model, name: str = config.MODEL_NAME) -> tuple[Path, list[int]]:
    """Exercise 1: export as the next free version; return its path and all versions on disk.

    A server with the default policy (latest) loads the new version and, once it is ready,
    unloads the old one: the rollout happens without a restart.
    """
    version = (latest_version(name) or 0) + 1
    path = export_model(model, name, version)
    return path, list_versions(name)


def signature_keys(version_folder) -> tuple[list[str], list[str]]:
    """Exercise 2: the input and output keys of serving_default, read from saved_model.pb."""
    info = inspect_signature(version_folder)
    return list(info.inputs), list(info.outputs)


def plain_export_output_key(model) -> list[str]:
    """Exercise 3: the output keys `model.export()` writes (Keras names them output_0, ...)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "1"
        model.export(str(path), verbose=False)
        return list(inspect_signature(path).outputs)
