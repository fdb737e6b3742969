"""Start-up calibrations cached on disk: one calibration per key, recalibration of a bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from poseapp.models import create_model
from poseapp.runtime.budget import LatencyModel
from poseapp.runtime.latency_cache import cached_latency, default_cache_dir, latency_key


def counting_calibration(calls: list[int]):
    def calibrate() -> LatencyModel:
        calls.append(1)
        return LatencyModel([0.25, 0.5, 1.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0])

    return calibrate


def test_second_start_reads_the_first_calibration(tmp_path) -> None:
    calls: list[int] = []
    first = cached_latency("k", counting_calibration(calls), tmp_path)
    second = cached_latency("k", counting_calibration(calls), tmp_path)
    assert len(calls) == 1
    assert second.predict(0.5, 3) == pytest.approx(first.predict(0.5, 3)) == 17.0
    cached_latency("other", counting_calibration(calls), tmp_path)
    assert len(calls) == 2


def test_a_damaged_file_is_recalibrated_and_replaced(tmp_path) -> None:
    calls: list[int] = []
    (tmp_path / "latency-k.json").write_text('{"grid": [1.0, 0.5], "intercepts": [1, 1], "slopes": [1, 1]}')
    cached_latency("k", counting_calibration(calls), tmp_path)
    assert len(calls) == 1
    assert json.loads((tmp_path / "latency-k.json").read_text())["grid"] == [0.25, 0.5, 1.0]


def test_no_cache_dir_or_an_unwritable_one_still_calibrates(tmp_path) -> None:
    calls: list[int] = []
    cached_latency("k", counting_calibration(calls), None)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    model = cached_latency("k", counting_calibration(calls), blocked / "cache")
    assert len(calls) == 2 and model.grid.tolist() == [0.25, 0.5, 1.0]


def test_round_trip_and_validation() -> None:
    model = LatencyModel([0.25, 1.0], [1.0, 2.0], [3.0, 4.0])
    again = LatencyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(again.slopes, model.slopes)
    with pytest.raises(ValueError):
        LatencyModel.from_dict({"grid": [0.5], "intercepts": [1.0, 2.0], "slopes": [1.0]})
    with pytest.raises(ValueError):
        LatencyModel.from_dict({"grid": [0.5], "intercepts": [float("nan")], "slopes": [1.0]})


def test_key_tells_models_and_thread_counts_apart() -> None:
    cpu = torch.device("cpu")
    evit, vit = create_model("evitpose_t", stem="yolo"), create_model("vitpose_t")
    assert latency_key(evit, cpu) == latency_key(create_model("evitpose_t", stem="yolo"), cpu)
    assert latency_key(evit, cpu) != latency_key(vit, cpu)
    threads, before = torch.get_num_threads(), latency_key(evit, cpu)
    try:
        torch.set_num_threads(threads + 1)
        assert latency_key(evit, cpu) != before
    finally:
        torch.set_num_threads(threads)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("POSEAPP_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("POSEAPP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "poseapp"
