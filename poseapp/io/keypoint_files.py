"""Pose results as files: COCO keypoint-results JSON and a flat CSV with one entry per person per frame
(``--json``, ``--csv``), and one frame as a JSON object (``FrameResult.to_json`` / ``from_json``)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import numpy as np

from poseapp.results import Frame, FrameResult, Person
from poseapp.skeleton import COCO17, INDEX, JOINTS, NUM_JOINTS

COCO_FROM_UNIFIED = np.array([INDEX[name] for name in COCO17])
"""Row of each COCO-17 joint (in COCO order) in the unified skeleton, found by name."""

_BOX = slice(1, 5)
_JOINTS = slice(5, 5 + 3 * NUM_JOINTS)
_COLUMNS = 5 + 3 * NUM_JOINTS
"""Per person: track_id, x0, y0, x1, y1, then x, y, score for each joint of ``JOINTS``."""
DECIMALS = 3


_ENTRY_KEYS = ("image_id", "category_id", "keypoints", "score", "track_id", "bbox", "keypoints_unified")


def _number_array(length: int) -> dict:
    return {"type": "array", "items": {"type": "number"}, "minItems": length, "maxItems": length}


COCO_RESULTS_SCHEMA: dict = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "COCO keypoint results with track ids and the unified skeleton",
    "type": "array",
    "items": {
        "type": "object",
        "required": list(_ENTRY_KEYS),
        "additionalProperties": False,
        "properties": {
            "image_id": {"type": "integer", "minimum": 0, "description": "frame index in the source"},
            "category_id": {"const": 1, "description": "person"},
            "keypoints": {**_number_array(3 * len(COCO17)), "description": "x, y, score in COCO-17 order"},
            "score": {"type": "number", "description": "mean score of the person's joints"},
            "track_id": {"type": "integer"},
            "bbox": {**_number_array(4), "description": "x, y, width, height"},
            "keypoints_unified": {**_number_array(3 * NUM_JOINTS), "description": "x, y, score of JOINTS"},
        },
    },
}


class ResultsExporter:
    """Collects the numbers of each FrameResult (never its image) and writes them as COCO JSON or CSV.

    Each frame keeps one small float array with a row per person, so a long clip costs about
    ``8 * (5 + 3 * NUM_JOINTS)`` bytes per person per frame.
    """

    def __init__(self) -> None:
        self._frames: list[tuple[int, float, np.ndarray]] = []

    def add(self, result: FrameResult) -> None:
        if result.people:
            self._frames.append((result.frame.index, result.frame.time, _rows(result.people)))

    def __len__(self) -> int:
        """Number of person entries (one per person per frame)."""
        return sum(len(rows) for _, _, rows in self._frames)

    def _entries(self) -> Iterator[dict]:
        for index, _, rows in self._frames:
            yield from _coco_entries(index, rows)

    def to_coco_json(self, path: str | os.PathLike[str]) -> None:
        """COCO keypoint results (a list, see ``COCO_RESULTS_SCHEMA``); ``image_id`` is the frame index."""

        def write(f: IO[str]) -> None:  # entry by entry: the whole list as dicts would be large
            f.write("[")
            for n, entry in enumerate(self._entries()):
                f.write(",\n" if n else "\n")
                json.dump(entry, f)
            f.write("\n]\n")

        _write_atomically(path, write)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """One row per frame and track: frame, time, track_id, x0, y0, x1, y1, <joint>_x, _y, _score..."""
        header = ["frame", "time", "track_id", "x0", "y0", "x1", "y1"]
        header += [f"{name}_{field}" for name in JOINTS for field in ("x", "y", "score")]

        def write(f: IO[str]) -> None:
            writer = csv.writer(f)
            writer.writerow(header)
            for index, seconds, rows in self._frames:
                for row in rows.round(DECIMALS):
                    writer.writerow([index, round(seconds, 6), int(row[0]), *row[1:].tolist()])

        _write_atomically(path, write, newline="")


def _rows(people: Sequence[Person]) -> np.ndarray:
    """One row of ``_COLUMNS`` numbers per person: track id, box, then x, y, score of every joint."""
    rows = np.empty((len(people), _COLUMNS))
    for row, person in zip(rows, people, strict=True):
        row[0] = person.track_id
        row[_BOX] = person.box
        joints = row[_JOINTS].reshape(NUM_JOINTS, 3)
        joints[:, :2] = person.keypoints
        joints[:, 2] = person.scores
    return rows


def _coco_entries(image_id: int, rows: np.ndarray) -> Iterator[dict]:
    """The COCO keypoint result of each person row of one frame (``COCO_RESULTS_SCHEMA``)."""
    for row in rows.round(DECIMALS):
        x0, y0, x1, y1 = row[_BOX].tolist()
        joints = row[_JOINTS].reshape(NUM_JOINTS, 3)
        yield {
            "image_id": image_id,
            "category_id": 1,
            "keypoints": joints[COCO_FROM_UNIFIED].ravel().tolist(),
            "score": round(float(joints[:, 2].mean()), DECIMALS),
            "track_id": int(row[0]),
            "bbox": [x0, y0, round(x1 - x0, DECIMALS), round(y1 - y0, DECIMALS)],
            "keypoints_unified": joints.ravel().tolist(),
        }


def frame_to_json(result: FrameResult) -> str:
    """One frame as a JSON object: ``image_id`` (the frame index), ``time``, ``knob``, ``pose_ms``,
    ``gflops``, ``keypoint_names`` (the joints of each person's ``keypoints_unified``, in order) and
    ``people``, a COCO keypoint result per person exactly as ``to_coco_json`` writes it."""
    index = result.frame.index
    return json.dumps(
        {
            "image_id": index,
            "time": result.frame.time,
            "knob": result.knob,
            "pose_ms": result.pose_ms,
            "gflops": result.gflops,
            "keypoint_names": list(JOINTS),
            "people": list(_coco_entries(index, _rows(result.people))),
        }
    )


def frame_from_json(text: str, image: np.ndarray | None = None) -> FrameResult:
    """The ``FrameResult`` of ``frame_to_json``'s ``text`` (on ``image``, if given): boxes, keypoints, scores
    and track ids to ``DECIMALS`` places; the run records (overlays) are not kept."""
    data = json.loads(text)
    if data.get("keypoint_names") != list(JOINTS):
        raise ValueError(f"keypoint_names in the JSON are not PoseApp's joints {list(JOINTS)}")
    people = []
    for entry in data["people"]:
        x, y, w, h = entry["bbox"]
        joints = np.asarray(entry["keypoints_unified"], dtype=np.float64).reshape(NUM_JOINTS, 3)
        box = np.array([x, y, x + w, y + h], dtype=np.float64)
        people.append(Person(entry["track_id"], box, joints[:, :2].copy(), joints[:, 2].copy()))
    frame = Frame(data["image_id"], image, data["time"])
    return FrameResult(frame, people, data["knob"], data["pose_ms"], data["gflops"])


def _write_atomically(
    path: str | os.PathLike[str], write: Callable[[IO[str]], None], newline: str | None = None
) -> None:
    """Write a text file through a temporary file next to it, so ``path`` is never left half-written."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
