"""Notebook 00's exercise solutions."""

import os

from helpers.server.process import free_port
from helpers.solutions import ex00


def test_bad_source_fails_with_a_fix():
    check = ex00.data_check_with_source("kaggle")
    assert check.status == "FAIL" and "use 'auto', 'tfds' or 'offline'" in check.detail
    assert ex00.data_check_with_source("offline").ok


def test_port_holder_names_this_process():
    holder = ex00.who_holds(free_port())
    assert holder == "another process" or f"pid {os.getpid()}" in holder
