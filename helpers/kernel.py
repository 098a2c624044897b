"""Install the course's Jupyter kernel: this environment's Python, with TensorFlow kept quiet.

`make install` runs `python -m helpers.kernel`. The kernel is named, so JupyterLab, papermill
and nbconvert use the course's Python even when another `python3` kernel is installed. It also
keeps C++ start-up lines (CPU instructions, missing CUDA) out of the notebooks: they go to the
terminal that runs JupyterLab instead, while Python warnings still show in the notebook.

It also sets JupyterLab's defaults for this environment only: no "Jupyter news?" question and
no update check, which would pop up over the first notebook of every learner in a workshop
(and ask to reach the internet) for a course whose versions are pinned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KERNEL_NAME = "grpc-serving-course"
DISPLAY_NAME = "Python (gRPC serving course)"


def kernel_spec() -> dict:
    return {
        "argv": [
            sys.executable,
            "-Xfrozen_modules=off",
            "-m",
            "ipykernel_launcher",
            "--IPKernelApp.capture_fd_output=False",
            "-f",
            "{connection_file}",
        ],
        "display_name": DISPLAY_NAME,
        "language": "python",
        # No TensorFlow start-up noise; no gRPC fork handlers (see helpers/__init__.py).
        "env": {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_ENABLE_FORK_SUPPORT": "false"},
        "metadata": {"debugger": True},
    }


#: JupyterLab settings this environment starts with (a learner may still change them).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}


def install(prefix: str = sys.prefix) -> Path:
    """Write the kernel spec under `<prefix>/share/jupyter/kernels/` and return its folder."""
    folder = Path(prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(kernel_spec(), indent=1))
    install_lab_settings(prefix)
    return folder


def install_lab_settings(prefix: str = sys.prefix) -> Path:
    """Merge LAB_SETTINGS into `<prefix>/share/jupyter/lab/settings/overrides.json`.

    Settings already in that file for other plugins, or other keys of the same plugin, stay.
    """
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    overrides = {}
    if path.exists():
        try:
            overrides = json.loads(path.read_text())
        except ValueError as exc:
            raise SystemExit(
                f"{path} is not valid JSON ({exc}): fix or delete it, then run make install again"
            ) from None
    for plugin, settings in LAB_SETTINGS.items():
        overrides.setdefault(plugin, {}).update(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(overrides, indent=1))
    return path


if __name__ == "__main__":
    print(f"Installed the Jupyter kernel '{KERNEL_NAME}' in {install()}")
