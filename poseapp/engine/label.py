"""Pseudo-labels from a teacher: COCO keypoint files on the unified skeleton with per-joint confidences.

Each annotation has ``keypoints`` ``[x, y, v]`` in ``skeleton.JOINTS`` order (v = 2 where the teacher's
confidence reaches ``min_confidence``, else 0 and x = y = 0) and ``keypoint_scores``, the confidence of
every joint (1 for a human label), for confidence-weighted training.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from ..data import load_people, read_bgr
from ..data.sides import swap_groups, swapped_groups
from ..geometry import keypoint_similarity, xyxy_to_xywh
from ..results import PoseEstimator, Predictions
from ..skeleton import COCO17, INDEX, JOINTS, LIMB_INDEX, NUM_JOINTS, joint_mapping
from .teachers import YoloPoseTeacher

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_BOX_SCORE = 0.5
MIN_CONFIDENCE = 0.3


@dataclass
class LabelSummary:
    out_json: Path
    image_dir: Path
    """The folder the json's ``file_name``s are relative to (pass it with the json to ``load_people``)."""
    images: int
    people: int
    side_swaps: int = 0
    """Arm or leg pairs whose human left/right labels were swapped to agree with the teacher."""


def unified_category() -> dict:
    return {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(JOINTS),
        "skeleton": (LIMB_INDEX + 1).tolist(),
    }


def keypoint_annotation(
    ann_id: int,
    image_id: int,
    box_xywh: np.ndarray,
    xy: np.ndarray,
    visibility: np.ndarray,
    confidence: np.ndarray,
) -> dict:
    """A COCO annotation of one person on the unified skeleton; unlabelled joints are written 0, 0, 0."""
    labelled = visibility > 0
    keypoints = np.column_stack([np.where(labelled[:, None], xy, 0.0), visibility])
    box = [round(float(v), 2) for v in box_xywh]
    return {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": 1,
        "bbox": box,
        "area": round(box[2] * box[3], 2),
        "iscrowd": 0,
        "num_keypoints": int(labelled.sum()),
        "keypoints": [round(float(v), 2) for v in keypoints.ravel()],
        "keypoint_scores": [round(float(v), 4) for v in confidence],
    }


JOINT_AGREEMENT = 0.5
"""Keypoint similarity (as OKS scores a joint) above which two teachers' positions of a joint are averaged."""
PERSON_AGREEMENT = 0.7
"""Mean keypoint similarity of the joints both teachers see, below which they disagree about a person."""
TILTED_DEG = 45.0
"""A body whose hips-to-shoulders line leans further than this from upright is lying, bent or inverted."""
_FACE = np.array([INDEX[n] for n in COCO17[:5]])  # nose, eyes, ears
_LEGS = np.array([INDEX[n] for n in COCO17[11:]])  # hips, knees, ankles
_SHOULDERS = np.array([INDEX["left_shoulder"], INDEX["right_shoulder"]])
_HIPS = np.array([INDEX["left_hip"], INDEX["right_hip"]])
_SEEN = 0.3  # a teacher's confidence from which its joint counts as seen, for the person-level tests


def _upright(xy: np.ndarray, scores: np.ndarray) -> float:
    """+1 if the seen face is above the seen legs, -1 if below, 0 without both."""
    face, legs = scores[_FACE] >= _SEEN, scores[_LEGS] >= _SEEN
    if not face.any() or not legs.any():
        return 0.0
    return float(np.sign(xy[_LEGS][legs, 1].mean() - xy[_FACE][face, 1].mean()))


def _tilt_deg(xy: np.ndarray, scores: np.ndarray) -> float:
    """How far the hips-to-shoulders line leans from straight up, in degrees (0 without both)."""
    shoulders, hips = scores[_SHOULDERS] >= _SEEN, scores[_HIPS] >= _SEEN
    if not shoulders.any() or not hips.any():
        return 0.0
    up = xy[_SHOULDERS][shoulders].mean(axis=0) - xy[_HIPS][hips].mean(axis=0)
    return float(np.degrees(np.arctan2(abs(up[0]), -up[1])))


def fuse_teachers(
    primary_xy: np.ndarray,
    primary_scores: np.ndarray,
    secondary_xy: np.ndarray,
    secondary_scores: np.ndarray,
    box_area: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One label from two teachers' answers for a person (unified skeleton, ``(J, 2)`` and ``(J,)``):
    positions and per-joint weights.

    The primary is yolo11n-pose top-down, the secondary MoveNet Thunder. Measured on the teachers' own
    answers (``docs/training.md``): on COCO photos yolo11n-pose is the better teacher, but on a body that
    is upside down or lying it answers with an upright skeleton, confidently (AP 0.19 against MoveNet's 0.54
    on LSPET's acrobatics), and where the two agree their mean beats either. So:

    1. **Person.** If the teachers disagree which way up the person is, or MoveNet sees the body leaning
       more than ``TILTED_DEG`` from upright and the two skeletons disagree (mean similarity of the joints
       both see under ``PERSON_AGREEMENT``), MoveNet's answer is the label, weighted by its confidences.
    2. **Joints** otherwise: where the two positions agree (similarity at least ``JOINT_AGREEMENT``) their
       confidence-weighted mean, elsewhere the more confident teacher's position. The weight is the chosen
       confidence (the larger one) times the agreement ``1 - c_other * (1 - similarity)``: a joint the
       teachers place apart gets little weight as far as the other teacher is sure of its own answer, and a
       joint one teacher does not predict (confidence 0, e.g. ``neck``) keeps the other's confidence.
    """
    xy1, xy2 = np.asarray(primary_xy, dtype=np.float64), np.asarray(secondary_xy, dtype=np.float64)
    c1 = np.clip(np.asarray(primary_scores, dtype=np.float64), 0.0, 1.0)
    c2 = np.clip(np.asarray(secondary_scores, dtype=np.float64), 0.0, 1.0)
    similarity = keypoint_similarity(xy1, xy2, max(float(box_area), 1.0))
    both = (c1 >= _SEEN) & (c2 >= _SEEN)
    disagree = both.sum() >= 4 and similarity[both].mean() < PERSON_AGREEMENT
    if _upright(xy1, c1) * _upright(xy2, c2) < 0 or (disagree and _tilt_deg(xy2, c2) > TILTED_DEG):
        return xy2.copy(), c2
    first = c1 >= c2
    chosen = np.where(first[:, None], xy1, xy2)
    share = c1 / np.maximum(c1 + c2, 1e-12)
    mean = share[:, None] * xy1 + (1 - share[:, None]) * xy2
    xy = np.where((similarity >= JOINT_AGREEMENT)[:, None], mean, chosen)
    weight = np.maximum(c1, c2) * (1.0 - np.minimum(c1, c2) * (1.0 - similarity))
    return xy, weight


class FusedTeachers:
    """The corpus's label as a ``PoseEstimator``: both teachers top-down on each box, fused by
    ``fuse_teachers``; the scores are the fused weights. ``main.py eval --teacher fused`` scores the
    corpus's labelling on any split."""

    name = "fused teachers"
    joints = COCO17

    def __init__(self, primary: PoseEstimator, secondary: PoseEstimator) -> None:
        self.primary, self.secondary = primary, secondary

    def predict(
        self, image_bgr: np.ndarray, boxes_xywh: np.ndarray, knob: float | None = None
    ) -> Predictions:
        first = self.primary.predict(image_bgr, boxes_xywh)
        second = self.secondary.predict(image_bgr, boxes_xywh)
        fused = [
            fuse_teachers(first.xy[i], first.scores[i], second.xy[i], second.scores[i], box[2] * box[3])
            for i, box in enumerate(np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4))
        ]
        xy = np.array([f[0] for f in fused]).reshape(-1, NUM_JOINTS, 2)
        scores = np.array([f[1] for f in fused]).reshape(-1, NUM_JOINTS)
        return Predictions(xy, scores, np.full(len(xy), np.nan))


def teacher_visibility(confidence: np.ndarray, min_confidence: float = MIN_CONFIDENCE) -> np.ndarray:
    return np.where(confidence >= min_confidence, 2.0, 0.0)


def _frames(source: Path, image_dir: Path, every: int) -> Iterator[tuple[str, np.ndarray]]:
    """``(file_name, image_bgr)``: the images of a folder, or every ``every``-th frame of a video, which is
    written to ``image_dir`` as a JPEG."""
    if source.is_dir():
        for path in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            yield path.name, read_bgr(str(path))
        return
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise OSError(f"cannot open video {source}")
    image_dir.mkdir(parents=True, exist_ok=True)
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                name = f"frame_{index:06d}.jpg"
                cv2.imwrite(str(image_dir / name), frame)
                yield name, frame
            index += 1
    finally:
        capture.release()


def _label_frames(
    teacher: PoseEstimator,
    boxer: YoloPoseTeacher,
    frames: Iterator[tuple[str, np.ndarray]],
    min_box_score: float,
    min_confidence: float,
) -> tuple[list[dict], list[dict]]:
    images, annotations = [], []
    for image_id, (name, image) in enumerate(frames, start=1):
        images.append({"id": image_id, "file_name": name, "width": image.shape[1], "height": image.shape[0]})
        found = boxer.detect_people(image)
        keep = found.box_scores >= min_box_score
        boxes = xyxy_to_xywh(found.boxes[keep])
        if teacher is boxer:
            xy, confidence = found.pose.xy[keep], found.pose.scores[keep]
        else:
            pose = teacher.predict(image, boxes)
            xy, confidence = pose.xy, pose.scores
        for box, joints, scores in zip(boxes, xy, confidence, strict=True):
            visibility = teacher_visibility(scores, min_confidence)
            annotations.append(
                keypoint_annotation(len(annotations) + 1, image_id, box, joints, visibility, scores)
            )
    return images, annotations


def _fill_missing(
    teacher: PoseEstimator, ann_file: Path, image_dir: Path, min_confidence: float, fix_sides: bool
) -> tuple[list[dict], list[dict], int]:
    """The human-labelled people of ``ann_file`` (their boxes and areas too) with the joints its skeleton
    lacks filled in by ``teacher`` (top-down on the human boxes), and, with ``fix_sides``, their arms and
    legs renamed left for right where the teacher agrees far better so (``data.sides``); also the number
    of groups swapped."""
    with open(ann_file, encoding="utf-8") as f:
        data = json.load(f)
    mapping = joint_mapping(data["categories"][0]["keypoints"])
    named = np.zeros(NUM_JOINTS, dtype=bool)
    named[mapping[mapping >= 0]] = True
    fill = np.isin(np.array(JOINTS), teacher.joints) & ~named

    areas = {ann.get("id", i): ann.get("area") for i, ann in enumerate(data["annotations"])}  # as load_people
    by_image: dict[int, list] = {}
    for person in load_people(ann_file, image_dir):
        by_image.setdefault(person.image_id, []).append(person)
    annotations, swaps = [], 0
    for people in by_image.values():
        image = read_bgr(people[0].image_path)
        pose = teacher.predict(image, np.stack([p.box_xywh for p in people]))
        for person, xy, scores in zip(people, pose.xy, pose.scores, strict=True):
            out_xy, visibility = person.xy.copy(), person.visibility.copy()
            if fix_sides:
                groups = swapped_groups(out_xy, visibility, xy, scores, min_confidence)
                out_xy, visibility = swap_groups(out_xy, groups), swap_groups(visibility, groups)
                swaps += len(groups)
            confidence = (visibility > 0).astype(np.float64)
            out_xy[fill], confidence[fill] = xy[fill], scores[fill]
            visibility[fill] = teacher_visibility(scores[fill], min_confidence)
            annotation = keypoint_annotation(
                person.ann_id, person.image_id, person.box_xywh, out_xy, visibility, confidence
            )
            annotation["area"] = areas.get(person.ann_id) or annotation["area"]
            annotations.append(annotation)
    return data["images"], annotations, swaps


def label_images(
    teacher: PoseEstimator,
    source: str | PathLike[str],
    out_json: str | PathLike[str],
    fill_only: str | PathLike[str] | None = None,
    every: int = 5,
    boxer: YoloPoseTeacher | None = None,
    min_box_score: float = MIN_BOX_SCORE,
    min_confidence: float = MIN_CONFIDENCE,
    fix_sides: bool = False,
) -> LabelSummary:
    """Write a COCO keypoint file of ``teacher``'s labels for an image folder or a video.

    People are found by ``boxer`` end-to-end (default: ``teacher`` itself if it is a YOLO teacher, else
    ``YoloPoseTeacher()``), those with a box score >= ``min_box_score`` kept; the keypoints are ``boxer``'s
    own when ``teacher is boxer``, else ``teacher``'s top-down. A video gives every ``every``-th frame, saved
    in ``images/`` beside ``out_json``. With ``fill_only`` (a human-labelled COCO file of the folder
    ``source``), its people keep their human labels and the teacher labels only the joints that file's
    skeleton lacks; ``fix_sides`` also repairs its people's swapped left/right arm and leg labels
    (``data.sides.swapped_groups``).
    """
    source, out_json = Path(source), Path(out_json)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if fix_sides and fill_only is None:
        raise ValueError("fix_sides repairs human labels: give fill_only, the human-labelled file")
    swaps = 0
    if fill_only is not None:
        if not source.is_dir():
            raise ValueError(f"fill_only labels an image folder; {source} is not one")
        image_dir = source
        images, annotations, swaps = _fill_missing(
            teacher, Path(fill_only), source, min_confidence, fix_sides
        )
    else:
        if boxer is None:
            boxer = teacher if isinstance(teacher, YoloPoseTeacher) else YoloPoseTeacher()
        image_dir = source if source.is_dir() else out_json.parent / "images"
        frames = _frames(source, image_dir, every)
        images, annotations = _label_frames(teacher, boxer, frames, min_box_score, min_confidence)

    out_json.parent.mkdir(parents=True, exist_ok=True)
    coco = {
        "info": {
            "description": f"pseudo-labels by {getattr(teacher, 'name', type(teacher).__name__)}",
            "people": "human boxes and labels, missing joints filled" if fill_only else "teacher boxes",
            "min_confidence": min_confidence,
            "side_swaps": swaps,
        },
        "images": images,
        "annotations": annotations,
        "categories": [unified_category()],
    }
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    return LabelSummary(out_json, image_dir, len(images), len(annotations), swaps)
