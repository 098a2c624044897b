"""The one setting that says where the model server is, and where models live."""

import pytest

from helpers import config


@pytest.mark.parametrize(
    ("setting", "target", "rest", "embedded"),
    [
        ("", "localhost:8500", "http://localhost:8501", True),
        ("embedded", "localhost:8500", "http://localhost:8501", True),
        ("tf-serving", "tf-serving:8500", "http://tf-serving:8501", False),
        ("localhost:9000", "localhost:9000", "http://localhost:9001", False),
        ("10.1.2.3:9000:9100", "10.1.2.3:9000", "http://10.1.2.3:9100", False),
    ],
)
def test_server_address_forms(setting, target, rest, embedded):
    address = config.server_address(setting)
    assert (address.grpc_target, address.rest_url, address.embedded) == (target, rest, embedded)


def test_server_address_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MODEL_SERVER", "tf-serving")
    assert config.server_address().grpc_target == "tf-serving:8500"


@pytest.mark.parametrize("bad", ["host:port", ":8500", "h:1:2:3", "h:0", "h:70000"])
def test_bad_server_address_says_how_to_fix_it(bad):
    with pytest.raises(ValueError, match="MODEL_SERVER=.*Use 'embedded'"):
        config.server_address(bad)


def test_models_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_MODELS_DIR", str(tmp_path))
    assert config.model_base_path() == tmp_path / "mnist"
    monkeypatch.delenv("COURSE_MODELS_DIR")
    assert config.models_dir() == config.course_root() / "models"
