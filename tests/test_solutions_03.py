"""Notebook 03's exercise solutions."""

import pytest

from helpers.export import export_model
from helpers.model import build_model
from helpers.solutions import ex03


@pytest.fixture(scope="module")
def model():
    return build_model("mlp")


def test_export_next_version(model, models_dir):
    export_model(model, "mnist", 1)
    path, versions = ex03.export_next_version(model)
    assert path.name == "2" and versions == [1, 2]


def test_signature_keys(model, models_dir):
    assert ex03.signature_keys(export_model(model, "mnist", 1)) == (["image"], ["probabilities"])


def test_plain_export_names_its_output_output_0(model):
    assert ex03.plain_export_output_key(model) == ["output_0"]
