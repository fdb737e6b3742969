"""COCO-results JSON and CSV export: schema, joint mapping by name, one entry per person per frame."""

from __future__ import annotations

import csv
import gc
import json
import math
import weakref

import numpy as np
import pytest

from poseapp.io.keypoint_files import COCO_RESULTS_SCHEMA, ResultsExporter
from poseapp.results import Frame, FrameResult, Person
from poseapp.skeleton import COCO17, INDEX, JOINTS, NUM_JOINTS

try:
    import jsonschema
except ImportError:  # not a dependency: the hand check below covers the schema's keywords
    jsonschema = None


def check_schema(instance, schema, where="$"):
    """Validate against the JSON-schema keywords COCO_RESULTS_SCHEMA uses."""
    if "const" in schema:
        assert instance == schema["const"], where
    kind = schema.get("type")
    if kind == "array":
        assert isinstance(instance, list), where
        assert schema.get("minItems", 0) <= len(instance) <= schema.get("maxItems", math.inf), where
        for i, item in enumerate(instance):
            check_schema(item, schema["items"], f"{where}[{i}]")
    elif kind == "object":
        assert isinstance(instance, dict), where
        assert set(schema["required"]) <= instance.keys(), where
        if schema.get("additionalProperties") is False:
            assert instance.keys() <= schema["properties"].keys(), where
        for key, sub in schema["properties"].items():
            if key in instance:
                check_schema(instance[key], sub, f"{where}.{key}")
    elif kind in ("integer", "number"):
        allowed = int if kind == "integer" else (int, float)
        assert isinstance(instance, allowed) and not isinstance(instance, bool), where
        assert math.isfinite(instance) and instance >= schema.get("minimum", -math.inf), where


def validate(entries):
    check_schema(entries, COCO_RESULTS_SCHEMA)
    if jsonschema is not None:
        jsonschema.validate(entries, COCO_RESULTS_SCHEMA)


def person(track_id: int, offset: float) -> Person:
    keypoints = np.stack([np.arange(NUM_JOINTS) + offset, np.arange(NUM_JOINTS) + 100 + offset], axis=1)
    scores = np.linspace(0.1, 0.9, NUM_JOINTS)
    keypoints[INDEX["left_wrist"]] = (123.25, 456.5)
    scores[INDEX["left_wrist"]] = 0.875
    keypoints[INDEX["head_top"]] = (777.0, 888.0)
    box = np.array([10.0 + offset, 20.0, 60.0 + offset, 120.0])
    return Person(track_id, box, keypoints, scores, np.eye(2, 3))


def result(index: int, people: list[Person]) -> FrameResult:
    frame = Frame(index, np.zeros((48, 64, 3), np.uint8), index / 25)
    return FrameResult(frame, people, knob=1.0, pose_ms=3.0, gflops=1.0)


@pytest.fixture
def exporter() -> ResultsExporter:
    exporter = ResultsExporter()
    exporter.add(result(5, [person(1, 0.0), person(2, 300.0)]))
    exporter.add(result(6, []))
    exporter.add(result(7, [person(1, 1.0), person(2, 301.0)]))
    return exporter


def test_coco_json_validates_and_maps_joints_by_name(exporter, tmp_path):
    path = tmp_path / "results.json"
    exporter.to_coco_json(path)
    entries = json.loads(path.read_text())
    validate(entries)
    assert len(entries) == len(exporter) == 4
    assert [(e["image_id"], e["track_id"]) for e in entries] == [(5, 1), (5, 2), (7, 1), (7, 2)]

    first = entries[0]
    assert first["category_id"] == 1
    wrist = COCO17.index("left_wrist")
    assert wrist == 9
    assert first["keypoints"][3 * wrist : 3 * wrist + 3] == [123.25, 456.5, 0.875]
    nose = first["keypoints"][:3]
    assert nose[:2] == [INDEX["nose"], 100.0 + INDEX["nose"]]
    assert 777.0 not in first["keypoints"]  # head_top is not a COCO joint ...
    top = INDEX["head_top"]
    assert first["keypoints_unified"][3 * top : 3 * top + 2] == [777.0, 888.0]  # ... but is kept here
    assert first["bbox"] == [10.0, 20.0, 50.0, 100.0]
    scores = first["keypoints_unified"][2::3]
    assert first["score"] == pytest.approx(np.mean(scores), abs=1e-3)
    assert entries[3]["bbox"][0] == 311.0


def test_schema_rejects_a_wrong_entry(exporter, tmp_path):
    path = tmp_path / "results.json"
    exporter.to_coco_json(path)
    entry = json.loads(path.read_text())[0]
    entry["keypoints"] = entry["keypoints_unified"]  # 19 joints where COCO has 17
    with pytest.raises(AssertionError):
        check_schema([entry], COCO_RESULTS_SCHEMA)


def test_csv_has_one_row_per_person_per_frame(exporter, tmp_path):
    path = tmp_path / "results.csv"
    exporter.to_csv(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[:7] == ["frame", "time", "track_id", "x0", "y0", "x1", "y1"]
    assert len(header) == 7 + 3 * NUM_JOINTS
    assert header[7 + 3 * INDEX["left_wrist"] : 10 + 3 * INDEX["left_wrist"]] == [
        "left_wrist_x",
        "left_wrist_y",
        "left_wrist_score",
    ]
    assert header[-3:] == [f"{JOINTS[-1]}_x", f"{JOINTS[-1]}_y", f"{JOINTS[-1]}_score"]
    assert [(r[0], r[2]) for r in body] == [("5", "1"), ("5", "2"), ("7", "1"), ("7", "2")]
    assert all(len(r) == len(header) for r in body)
    column = header.index("left_wrist_x")
    assert float(body[2][column]) == 123.25
    assert float(body[2][1]) == pytest.approx(7 / 25)
    assert [float(v) for v in body[1][3:7]] == [310.0, 20.0, 360.0, 120.0]


def test_writes_are_atomic_and_leave_no_temporary_files(exporter, tmp_path, monkeypatch):
    exporter.to_csv(tmp_path / "a.csv")
    exporter.to_coco_json(tmp_path / "a.json")
    before = (tmp_path / "a.json").read_text()

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted mid-write")

    monkeypatch.setattr(json, "dump", fail)
    with pytest.raises(RuntimeError):
        exporter.to_coco_json(tmp_path / "a.json")
    assert (tmp_path / "a.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json"]
    with pytest.raises(OSError):
        exporter.to_csv(tmp_path / "missing" / "a.csv")
    assert not (tmp_path / "missing").exists()


def test_exporter_keeps_numbers_not_images():
    exporter = ResultsExporter()
    item = result(0, [person(1, 0.0)])
    image = weakref.ref(item.frame.image)
    exporter.add(item)
    del item
    gc.collect()
    assert image() is None
    assert len(exporter) == 1
