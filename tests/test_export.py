"""Versioned, atomic export and signature inspection."""

import os

import numpy as np
import pytest

from helpers import export
from helpers.model import build_model


@pytest.fixture(scope="module")
def model():
    return build_model("mlp")


def test_export_writes_a_servable_version(model, models_dir):
    path = export.export_model(model, "mnist", 1)
    assert path == models_dir / "mnist" / "1" and (path / "saved_model.pb").is_file()
    assert export.list_versions() == [1] and export.latest_version() == 1
    assert sorted(os.listdir(models_dir / "mnist")) == ["1"], "no staging folder left behind"


def test_signature_has_named_input_and_output(model, models_dir):
    info = export.inspect_signature(export.export_model(model, "mnist", 3))
    assert info.method_name == "tensorflow/serving/predict"
    assert list(info.inputs) == ["image"] and list(info.outputs) == ["probabilities"]
    assert info.inputs["image"].dtype == "float32"
    assert info.inputs["image"].shape == (None, 28, 28, 1)
    assert info.outputs["probabilities"].shape == (None, 10)


def test_reloaded_model_predicts_like_keras(model, models_dir):
    import tensorflow as tf

    path = export.export_model(model, "mnist", 1)
    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](image=images)
    np.testing.assert_allclose(
        served["probabilities"].numpy(), model.predict(images, verbose=0), atol=1e-6
    )


def test_export_refuses_an_existing_version(model, models_dir):
    export.export_model(model, "mnist", 1)
    with pytest.raises(FileExistsError, match="export as version=2, or pass overwrite=True"):
        export.export_model(model, "mnist", 1)


def test_overwrite_replaces_in_one_step(model, models_dir):
    first = export.export_model(model, "mnist", 1)
    (first / "marker").write_text("old")
    second = export.export_model(model, "mnist", 1, overwrite=True)
    assert second == first and not (second / "marker").exists()
    assert sorted(os.listdir(models_dir / "mnist")) == ["1"]


def test_failed_export_leaves_nothing_half_written(model, models_dir, monkeypatch):
    def crash(model, path):
        path.mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(export, "_write_saved_model", crash)
    with pytest.raises(OSError, match="disk full"):
        export.export_model(model, "mnist", 1)
    assert os.listdir(models_dir / "mnist") == []


def test_version_appears_only_when_complete(model, models_dir, monkeypatch):
    real_write = export._write_saved_model
    seen = []

    def watch(model, path):
        real_write(model, path)
        seen.append(export.list_versions())  # the version must not be visible yet

    monkeypatch.setattr(export, "_write_saved_model", watch)
    export.export_model(model, "mnist", 2)
    assert seen == [[]] and export.list_versions() == [2]


@pytest.mark.parametrize("version", [0, -1, 1.5, "2", True])
def test_bad_version_numbers(model, models_dir, version):
    with pytest.raises(ValueError, match="positive whole number"):
        export.export_model(model, "mnist", version)


def test_inspect_missing_model_and_signature(model, models_dir):
    with pytest.raises(FileNotFoundError, match="export one first"):
        export.inspect_signature(models_dir / "mnist" / "9")
    path = export.export_model(model, "mnist", 1)
    with pytest.raises(KeyError, match="it has: serving_default"):
        export.inspect_signature(path, "predict")


def test_ensure_model_trains_once(models_dir, capsys):
    path = export.ensure_model("mnist", 1, epochs=1)
    assert (path / "saved_model.pb").is_file() and "training a quick" in capsys.readouterr().out
    assert export.ensure_model("mnist", 1) == path and capsys.readouterr().out == ""


def test_simultaneous_exports_of_one_version_only_one_succeeds(model, models_dir, monkeypatch):
    """Both pass the first existence check; the final rename lets exactly one win."""
    import threading

    both_writing = threading.Barrier(2)
    real_write = export._write_saved_model

    def write_when_both_are_writing(m, path):
        real_write(m, path)
        (path / "writer").write_text(threading.current_thread().name)
        both_writing.wait(timeout=120)

    monkeypatch.setattr(export, "_write_saved_model", write_when_both_are_writing)
    outcomes: dict[str, object] = {}

    def run(label):
        try:
            outcomes[label] = export.export_model(model, "mnist", 5)
        except FileExistsError as exc:
            outcomes[label] = exc

    threads = [threading.Thread(target=run, args=(n,), name=n) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    winners = [n for n, o in outcomes.items() if not isinstance(o, Exception)]
    losers = [o for o in outcomes.values() if isinstance(o, FileExistsError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert "was created by someone else while this export was being written" in str(losers[0])
    target = models_dir / "mnist" / "5"
    assert (target / "writer").read_text() == winners[0]  # the winner's files, untouched
    assert sorted(os.listdir(models_dir / "mnist")) == ["5"], "no staging folder left behind"


def test_version_appearing_during_export_is_not_replaced(model, models_dir, monkeypatch):
    real_write = export._write_saved_model
    target = models_dir / "mnist" / "6"

    def someone_else_exports_meanwhile(m, path):
        real_write(m, path)
        target.mkdir(parents=True)
        (target / "theirs").write_text("keep me")

    monkeypatch.setattr(export, "_write_saved_model", someone_else_exports_meanwhile)
    with pytest.raises(FileExistsError, match="export as version=7"):
        export.export_model(model, "mnist", 6)
    assert (target / "theirs").read_text() == "keep me"
