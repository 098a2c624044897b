"""Every notebook, run by papermill with small parameters into a temporary folder.

Each run gets a fresh, empty models folder, which proves the notebook works when opened first
on a fresh clone (it must make any missing model itself). The notebook records values with
`helpers.notebook.record`; the checks below assert on them. nbval, run by the same pytest
command, separately executes every notebook with its default parameters and compares the
outputs of cells marked `# NBVAL_CHECK_OUTPUT`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def check_00(records):
    assert records["failed_checks"] == []
    assert records["smoke_test"] == "passed"


def check_01(records):
    assert records["data_source"] == "offline"
    assert records["streamed_count"] == 4
    assert records["summarized_count"] == 100
    assert 1 <= records["bidi_answers"] <= 50
    assert records["deadline_code"] == "DEADLINE_EXCEEDED"
    assert 0 <= records["deadline_received"] <= 2  # 200 ms pause per image, 0.5 s deadline
    assert records["metadata_echoed"] == "nb01-0001"
    assert records["error_codes"] == {
        "bad pixels": "INVALID_ARGUMENT",
        "offset past the end": "OUT_OF_RANGE",
        "slow stream": "DEADLINE_EXCEEDED",
        "no such method": "UNIMPLEMENTED",
        "nobody listening": "UNAVAILABLE",
        "cancelled by the client": "CANCELLED",
    }
    sizes = records["payload_bytes"]
    assert sizes["tensor_content"] == sizes["float_val"] == 3159 and sizes["uint8"] == 807
    assert sizes["json"] > 2 * sizes["tensor_content"]
    assert records["server_stopped"] is True


def check_02(records):
    assert records["data_source"] == "offline"
    assert records["test_accuracy"] >= 0.85
    assert records["checkpoint"] == "mnist_mlp.keras"


def check_03(records):
    assert records["export_path"] == "mnist/1"
    assert records["signature"] == {
        "inputs": ["image"],
        "outputs": ["probabilities"],
        "method": "tensorflow/serving/predict",
    }
    assert records["max_difference"] <= 1e-6


def check_04(records):
    assert records["first_version"] == 1
    assert (records["input_key"], records["output_key"]) == ("image", "probabilities")
    assert 0 < records["v2_live_seconds"] <= 60  # the notebook's TIMEOUT, on a busy machine too
    assert records["accuracy_v1"] >= 0.8 and 0.0 <= records["accuracy_v2"] <= 1.0
    assert records["version_after_rollback"] == 1
    # The canary decision follows the rule, whatever the data: promote only on a real gain.
    canary = records["canary"]
    only_v1, only_v2 = canary["only_v1_right"], canary["only_v2_right"]
    if canary["p_value"] < 0.05 and only_v1 != only_v2:
        assert canary["verdict"] == ("better" if only_v2 > only_v1 else "worse")
    else:
        assert canary["verdict"] == "not better"
    assert records["promoted"] is (canary["verdict"] == "better")


def check_05(records):
    assert records["requests_identical"] is True and records["decoders_agree"] is True
    assert records["channel_reuse_speedup"] > 0  # measured: positive, never a floor
    assert records["preprocessed_accuracy"] >= 0.8
    assert 0.0 <= records["raw_pixels_accuracy"] <= 1.0
    assert records["raw_pixels_mean_confidence"] > 0.95  # what raw pixels really break
    assert 0 <= records["raw_pixels_flipped"] <= 256
    assert records["error_codes"] == {
        "missing batch dimension": "INVALID_ARGUMENT",
        "float64 pixels": "INVALID_ARGUMENT",
        "raw 0-255 pixels": "none (silent)",
        "wrong input key": "INVALID_ARGUMENT",
        "unknown model": "NOT_FOUND",
        "unknown version": "NOT_FOUND",
        "unknown label": "INVALID_ARGUMENT",
        "unknown signature": "FAILED_PRECONDITION",
        "response over the receive limit": "RESOURCE_EXHAUSTED",
        "server down": "UNAVAILABLE",
        "REST port used for gRPC": "UNAVAILABLE",
    }


def check_06(records):
    assert records["num_images"] == 300
    assert records["accuracy"] >= 0.8 and records["server_matches_local"] is True
    assert (records["drawn_one_label"], records["drawn_seven_label"]) == (1, 7)
    assert records["drawn_after_cleanup"] == 1  # the panel reconnects after the clean-up cell
    assert abs(records["num_mistakes"] - (1 - records["accuracy"]) * 300) <= 1


def check_07(records):
    assert records["predictions_equal"] is True and records["lean_identical"] is True
    assert records["rest_error_statuses"] == {
        "wrong shape": 400,
        "unknown signature": 400,
        "unknown model": 404,
    }
    wire = records["wire_bytes_ratio"]  # the same images every run; the prose says "about 2.5"
    assert set(wire) == {"1", "8"} and all(2.4 < ratio < 2.8 for ratio in wire.values())
    # Every call and every throughput window ends with at least one finished call, so each
    # ratio has a positive numerator and denominator.
    ratios = [v for column in records["latency_ratios"].values() for v in column.values()]
    ratios += list(records["throughput_ratios"].values())
    assert len(ratios) == 4 * 2 + 2 and all(math.isfinite(r) and r > 0 for r in ratios)
    assert 0 <= records["server_json_share"] <= 1
    verdict = records["verdict"].splitlines()
    assert [line.split(":")[0] for line in verdict[:2]] == ["1 image", "8 images"]
    assert len(verdict) == 5 and "inf" not in records["verdict"] and "nan" not in records["verdict"]
    costs = records["client_costs"]
    assert 0 < costs["lean"]["installed_mb"] < costs["tensorflow"]["installed_mb"]
    assert costs["lean"]["import_s"] > 0 and costs["tensorflow"]["import_s"] > 0
    assert records["server_stopped"] is True


def check_08(records):
    refused = "UNAVAILABLE"
    assert records["tls_outcomes"] == {
        "plaintext client": refused,
        "CA not trusted": refused,
        "host name not in certificate": refused,
        "correct": "OK",
    }
    assert records["mtls_outcomes"] == {
        "no client certificate": refused,
        "certificate from another CA": refused,
        "certificate signed by our CA": "OK",
    }
    (before, removed, back) = records["health_timeline"]
    assert before == back == ["SERVING", "v1 AVAILABLE"]
    assert removed[0] == "SERVING" and removed[1] != "v1 AVAILABLE"  # health != readiness
    sent = records["metrics_sent"]
    assert sent["INVALID_ARGUMENT"] == 3 and sent["OK"] > 0  # BAD_CALLS below
    assert records["metrics_counted"] == sent  # the server counts what the callers saw
    assert records["latency_histogram_calls"] == records["ok_counted"] > 0  # OK calls only
    assert records["servers_stopped"] == 4


def check_09(records):
    assert len(records["batching"]) == 4
    for rows in records["batching"].values():
        assert [row["concurrency"] for row in rows] == [1, 8] * 2  # REPEATS rounds
        assert all(row["errors"] == 0 and row["req_per_s"] > 0 for row in rows)
        assert all(0 < row["p50_ms"] <= row["p99_ms"] for row in rows)
    assert set(records["batching_verdicts"].values()) <= {"pays", "does not pay", "unclear"}
    for trials in records["warmup_ms"].values():
        assert len(trials) == 2 and all(len(times) == 3 for times in trials)
    assert records["limit_codes"] == {
        "default client": "RESOURCE_EXHAUSTED",
        "receive limit 16 MiB": "OK",
        "send limit 1 MiB": "RESOURCE_EXHAUSTED",
    }
    deadline = records["deadline"]
    assert deadline["deadline 0.5 s"][0] == "DEADLINE_EXCEEDED"
    assert deadline["no deadline, cancel at 0.5 s"][0] == "CANCELLED"
    assert set(records["canary_outcomes"]) == {"OK"}  # zero failed calls
    assert records["canary_verdict"] in ("better", "not better", "worse")
    if records["canary_verdict"] != "better":  # a losing candidate never answered a caller
        assert set(records["canary_answered_by"]) == {"1"}
    assert set(records["hasty_outcomes"]) == {"OK"}
    assert records["hasty_answered_by_v2"] >= 0
    assert set(records["sigterm"]["calls in flight at SIGTERM"]) <= {"OK"}  # drained, none lost
    assert records["servers_stopped"] == 4


def check_10(records):
    assert sorted(records["trap_counts"]) == [0, 40]
    assert sorted(records["pick_first_counts"]) == [0, 40]
    for spread in (records["round_robin_counts"], records["l7_counts"] or [20, 20]):
        assert sum(spread) == 40 and max(spread) - min(spread) <= 2
    assert records["failed_calls"]["retryPolicy"] == 0
    assert all(calls > 0 for calls in records["calls_in_failure_run"].values())
    assert records["seconds_until_even"] is not None and records["restart_seconds"] > 0
    room = records["learners"]
    assert (room["learners"], room["calls"], room["errors"]) == (6, 6 * 7, 0)
    assert 0 < room["p50_ms"] <= room["p99_ms"] <= room["slowest_ms"]
    # The sentence under the room's run states this ratio; it is the recorded percentiles' own.
    assert room["p99_over_p50"] == pytest.approx(room["p99_ms"] / room["p50_ms"])
    assert room["p99_over_p50"] >= 1
    assert records["lean_client_agrees"] is True
    assert records["ports_freed"] is True


#: notebook -> (small parameters, checks on what it recorded)
CASES = {
    "00_check_your_environment": ({"DOCKER_TIMEOUT": 2.0}, check_00),
    "01_understand_grpc": (
        {"NUM_IMAGES": 100, "STREAM_LIMIT": 4, "BATCH_SIZE": 16, "TIMING_REPEATS": 1},
        check_01,
    ),
    "02_train_the_model": ({"EPOCHS": 2, "MIN_ACCURACY": 0.85}, check_02),
    "03_export_and_inspect": ({}, check_03),
    "04_serve_the_model": ({"V2_EPOCHS": 1, "V2_TRAIN_IMAGES": 2000}, check_04),
    "05_call_it_over_grpc": (
        {"NUM_IMAGES": 256, "TIMING_CALLS": 20, "CONCURRENT_CALLS": 16},
        check_05,
    ),
    "06_visualise_predictions": ({"NUM_IMAGES": 300, "BATCH_SIZE": 64, "GRID_SIZE": 16}, check_06),
    "07_compare_grpc_and_rest": (
        {
            "BATCH_SIZES": [1, 8],
            "LATENCY_CALLS": 3,
            "THROUGHPUT_SECONDS": 0.2,
            "CONCURRENCY": [1, 4],
        },
        check_07,
    ),
    "08_secure_and_observe": ({"TRAFFIC_SECONDS": 0.5, "BAD_CALLS": 3}, check_08),
    "09_operate_in_production": (
        {
            "CONCURRENCY": [1, 8],
            "LOAD_SECONDS": 0.3,
            "REPEATS": 2,
            "CANDIDATE_TRAIN_IMAGES": 500,
            "CANARY_IMAGES": 200,
            "WARMUP_VERSIONS": 2,
        },
        check_09,
    ),
    "10_scale_out": (
        {
            "NUM_REPLICAS": 2,
            "CALLS": 40,
            "LOAD_THREADS": 2,
            "LOAD_RATE": 60.0,
            "SECONDS_BEFORE_KILL": 1.0,
            "SECONDS_DOWN": 0.5,
            "SECONDS_AFTER": 2.0,
            "LEARNERS": 6,
            "SINGLE_CALLS": 5,
        },
        check_10,
    ),
}


def test_every_notebook_has_a_papermill_case():
    on_disk = {path.stem for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    assert on_disk == set(CASES), "add a case (parameters and checks) for each notebook"


def run_notebook(name: str, tmp_path: Path, monkeypatch) -> tuple[dict, object]:
    """Run notebooks/<name>.ipynb with its small parameters into `tmp_path`, check what it
    recorded, and return (the records, the executed notebook)."""
    parameters, check = CASES[name]
    records = tmp_path / "records.json"
    monkeypatch.setenv("COURSE_RECORD_FILE", str(records))
    executed = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(executed),
        parameters=parameters,
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        execution_timeout=300,
    )
    assert records.is_file(), f"{name} recorded nothing"
    recorded = json.loads(records.read_text())
    check(recorded)
    return recorded, nbformat.read(executed, as_version=4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs_with_small_parameters(name, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_MODELS_DIR", str(tmp_path / "models"))
    scratch = tmp_path / "tmp"  # the kernel's temporary folder: it must be empty afterwards
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    _, executed = run_notebook(name, tmp_path, monkeypatch)
    assert not any(
        output.get("output_type") == "error"
        for cell in executed.cells
        for output in cell.get("outputs", [])
    )
    leftovers = sorted(path.name for path in scratch.iterdir())
    assert not leftovers, f"{name} left temporary files or folders behind: {leftovers}"
