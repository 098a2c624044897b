"""The pre-flight check prints [OK]/[FAIL]/[INFO] lines with fixes."""

import socket

from helpers import envcheck


def test_python_version_bounds():
    assert envcheck.check_python((3, 11, 7)).ok
    assert not envcheck.check_python((3, 9, 1)).ok
    assert "3.10 to 3.13" in envcheck.check_python((3, 14, 0)).line()


def test_packages_match_the_pins_of_this_install():
    checks = envcheck.check_packages()
    assert checks and all(c.ok for c in checks), [c.line() for c in checks if not c.ok]


def test_missing_and_wrong_packages_fail_with_a_fix():
    checks = envcheck.check_packages({"surely-not-installed-pkg": "1.0", "numpy": "0.0.1"})
    assert [c.status for c in checks] == ["FAIL", "FAIL"]
    assert "make install" in checks[0].line() and "course pins 0.0.1" in checks[1].detail


def test_port_holder_names_a_busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        check = envcheck.check_port(port, "gRPC")
        assert check.status == "INFO" and "in use by" in check.detail
    assert envcheck.check_port(port, "gRPC").ok


def test_report_counts_required_checks_only():
    checks = [
        envcheck.Check("a", True, "fine"),
        envcheck.Check("docker", False, "absent", "optional", required=False),
        envcheck.Check("b", False, "broken", "do this"),
    ]
    text = envcheck.report(checks)
    assert "[INFO] docker" in text and "fix: do this" in text
    assert "1/2 required checks passed; fix: b." in text
    assert text.splitlines()[-1] == "FIX FIRST: b: do this"


def test_the_last_line_says_ready_or_the_first_thing_to_fix():
    fine = [envcheck.Check("a", True, "fine")]
    optional = envcheck.Check("docker", False, "absent", "optional", required=False)
    assert envcheck.report([*fine, optional]).splitlines()[-1] == "READY"
    broken = [
        envcheck.Check("Python", False, "3.9.1", "install Python 3.10 to 3.13"),
        envcheck.Check("numpy", False, "not installed", "run `make install`"),
    ]
    last = envcheck.report([*fine, *broken]).splitlines()[-1]
    assert last == "FIX FIRST: Python: install Python 3.10 to 3.13"


def test_bad_server_setting_is_a_failure(monkeypatch):
    monkeypatch.setenv("MODEL_SERVER", "nonsense:port")
    assert envcheck.check_server_setting().status == "FAIL"
