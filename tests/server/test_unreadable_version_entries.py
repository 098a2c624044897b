"""One entry of a model's folder that cannot be looked at (a symlink that loops) must not stop
the server: TF Serving only lists names, so the other versions load at start-up, new versions
are still found, and the bad entry is reported once, not once a poll."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time

import pytest
from serving_suite import TOY

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX symlinks")


def test_a_looping_symlink_is_left_out_and_warned_once(tmp_path, caplog):
    from helpers.server.storage_path_source import FileSystemStoragePathSource, ServableToMonitor

    base = tmp_path / "model"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"x")
    os.symlink("2", base / "2")  # 2 -> 2: ELOOP for anything that follows it
    seen: list[dict] = []
    source = FileSystemStoragePathSource(lambda name, versions: seen.append(versions), 0)
    with caplog.at_level(logging.WARNING, logger="helpers.server"):
        source.update_config([ServableToMonitor("m", str(base))])
        source.poll()
        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"x")
        source.poll()
    assert [sorted(v) for v in seen] == [[1], [1], [3]]  # latest: 1, then the new 3
    warnings = [r.getMessage() for r in caplog.records if "Ignoring" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert str(base / "2") in warnings[0] and "Too many levels of symbolic links" in warnings[0]


def test_start_up_and_new_versions_with_a_looping_symlink(model_store, tmp_path):
    """The whole ServerCore: it starts (ports would open) and picks up a version added later."""
    from helpers.server.config_files import single_model_config
    from helpers.server.models import ManagerOptions, ServerCore

    base = tmp_path / TOY
    shutil.copytree(model_store / TOY / "1", base / "1")
    os.symlink("5", base / "5")
    core = ServerCore(ManagerOptions(file_system_poll_wait_seconds=0.2))
    core.start(single_model_config(TOY, str(base)))  # returned: every model is available
    try:
        assert core.servable(TOY).version == 1
        shutil.copytree(model_store / TOY / "1", tmp_path / "staging")
        os.rename(tmp_path / "staging", base / "7")
        deadline = time.monotonic() + 120
        while core.servable(TOY).version != 7:
            assert time.monotonic() < deadline, "version 7 was never picked up"
            time.sleep(0.1)
    finally:
        core.close()
