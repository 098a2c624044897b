"""The model manager in-process, with a fake loader: version folder names, per-model loads,
reloads that do not wait for other models, and stops that end retries at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.config import model_server_config_pb2

from helpers.server.models import ManagerOptions, ServerCore
from helpers.server.state_monitor import AVAILABLE, END, LOADING
from helpers.server.storage_path_source import (
    ServableToMonitor,
    list_version_folders,
    parse_version,
)


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("007", 7),
        ("9223372036854775807", 2**63 - 1),
        ("99999999999999999999", None),  # past int64
        ("²", None),  # superscript two: a Unicode digit, not ASCII
        ("٢", None),  # Arabic-Indic two
        ("1.5", None),
        ("v1", None),
        ("", None),
    ],
)
def test_version_names_are_ascii_int64(name, version):
    assert parse_version(name) == version


def test_only_int64_folders_are_versions(tmp_path):
    for name in ("1", "2", "99999999999999999999", "²", "٢", "v3", "tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a folder")
    servable = ServableToMonitor("m", str(tmp_path), _latest())
    assert sorted(list_version_folders(servable)) == [1, 2]


class FakeLoadingManager(ServerCore):
    """ServerCore whose loads are scripted by model name instead of reading SavedModels."""

    def __init__(self, options: ManagerOptions) -> None:
        super().__init__(options)
        self.release_slow = threading.Event()
        self.attempts: dict[str, int] = {}

    def _load_servable(self, name: str, version: int, path: Path):
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if name.startswith("slow"):
            self.release_slow.wait(60)
        if name.startswith("bad"):
            raise OSError(f"cannot read {path}")
        return f"{name}:{version}"


def _latest():
    from helpers.server.storage_path_source import VersionPolicy

    policy = VersionPolicy()
    policy.latest.num_versions = 1
    return policy


def _store(root: Path, *names: str) -> None:
    for name in names:
        folder = root / name / "1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "saved_model.pb").write_bytes(b"fake")


def _config(root: Path, *names: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name in names:
        entry = config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, str(root / name), "tensorflow"
    return config


def _state(manager: ServerCore, name: str) -> int:
    return manager.status(name).model_version_status[0].state


def _wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def manager():
    manager = FakeLoadingManager(
        ManagerOptions(
            file_system_poll_wait_seconds=0,
            max_num_load_retries=1000,
            load_retry_interval_micros=600_000_000,
        )
    )
    yield manager
    manager.release_slow.set()
    manager.close()


def test_a_slow_load_does_not_hold_up_another_model_or_a_reload(manager, tmp_path):
    _store(tmp_path, "fast", "slow", "other")
    manager.start(_config(tmp_path, "fast"))
    assert manager.servable("fast") == "fast:1"
    # A reload adding "slow" waits for it (in its own thread) ...
    first = threading.Thread(
        target=manager.reload_config, args=(_config(tmp_path, "fast", "slow"),)
    )
    first.start()
    _wait(lambda: manager.attempts.get("slow"), "the slow load to start")
    # ... while a second reload, adding "other", returns as soon as "other" is loaded.
    manager.reload_config(_config(tmp_path, "fast", "slow", "other"))
    assert manager.servable("other") == "other:1"
    assert _state(manager, "slow") == LOADING
    assert manager.servable("fast") == "fast:1"  # lookups never waited either
    manager.release_slow.set()
    first.join(30)
    assert not first.is_alive()
    assert manager.servable("slow") == "slow:1"


def test_a_failing_load_being_retried_does_not_stall_others(manager, tmp_path):
    _store(tmp_path, "bad", "good")
    manager.start(_config(tmp_path, "good"))
    outcome: list = []

    def add_bad():
        try:
            manager.reload_config(_config(tmp_path, "good", "bad"))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    adding = threading.Thread(target=add_bad)
    adding.start()
    _wait(lambda: manager.attempts.get("bad"), "the failing load")
    _store(tmp_path, "late")
    manager.reload_config(_config(tmp_path, "good", "bad", "late"))
    assert manager.servable("late") == "late:1"
    assert manager.loading()  # "bad" still waits for its next retry
    started = time.monotonic()
    manager.stop()
    _wait(lambda: not manager.loading(), "the retry to be cancelled")
    print(f"retry cancelled {time.monotonic() - started:.3f} s after stop()")
    adding.join(30)
    assert not adding.is_alive() and outcome  # the reload reported the failure, then returned
    status = manager.status("bad").model_version_status[0]
    assert status.state == END and status.status.error_code != 0


def test_start_fails_with_tf_servings_message_for_a_broken_model(tmp_path):
    manager = FakeLoadingManager(
        ManagerOptions(file_system_poll_wait_seconds=0, max_num_load_retries=0)
    )
    _store(tmp_path, "bad")
    with pytest.raises(Exception) as caught:
        manager.start(_config(tmp_path, "bad"))
    manager.close()
    assert caught.value.code == grpc.StatusCode.UNKNOWN
    assert caught.value.message.startswith("1 servable(s) did not become available: ")
    assert "{name: bad version: 1} due to error: UNKNOWN: cannot read" in caught.value.message


def test_stop_ends_the_start_up_wait(tmp_path):
    from helpers.server.models import Stopped

    manager = FakeLoadingManager(ManagerOptions(file_system_poll_wait_seconds=0))
    _store(tmp_path, "slow")
    threading.Timer(0.3, manager.stop).start()
    with pytest.raises(Stopped):
        manager.start(_config(tmp_path, "slow"))
    manager.release_slow.set()
    manager.close()


def test_new_version_loads_before_the_old_one_unloads(manager, tmp_path):
    _store(tmp_path, "m")
    manager.start(_config(tmp_path, "m"))
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "saved_model.pb").write_bytes(b"fake")
    manager._source.poll()
    _wait(lambda: manager.servable("m") == "m:2", "version 2")
    _wait(
        lambda: (
            _state(manager, "m") == AVAILABLE
            and len(manager.status("m").model_version_status) == 2
            and manager.status("m", version=1).model_version_status[0].state == END
        ),
        "version 1 to end",
    )


def test_odd_version_folders_are_ignored_by_a_real_server_core(model_store, tmp_path):
    """`99999999999999999999`, `²` and `٢` copies of a model are not versions; `1` serves."""
    import shutil

    from serving_suite import TOY

    from helpers.server.config_files import single_model_config

    base = tmp_path / TOY
    for name in ("1", "99999999999999999999", "²", "٢"):
        shutil.copytree(model_store / TOY / "1", base / name)
    manager = ServerCore(ManagerOptions(file_system_poll_wait_seconds=0))
    try:
        manager.start(single_model_config(TOY, str(base)))
        assert manager.servable(TOY).version == 1
        assert [s.version for s in manager.status(TOY).model_version_status] == [1]
    finally:
        manager.close()
