"""Evaluation: COCO keypoint AP on shared joints, PCK, and evaluate() with ground-truth or detected boxes."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from poseapp.data import PoseDataset, load_people, read_bgr
from poseapp.engine.evaluate import AP_KEYS, ModelEstimator, coco_keypoint_ap, evaluate
from poseapp.models import EViTPose
from poseapp.models.vit import ViTSize
from poseapp.results import Predictions
from poseapp.runtime.inference import crop_batch
from poseapp.skeleton import COCO17, JOINTS, NUM_JOINTS

LSP_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
    "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
)  # fmt: skip
# A standing person in a 60 x 120 box whose top-left corner is at the origin, on the unified skeleton.
POSE = {
    "nose": (30, 12), "left_eye": (33, 9), "right_eye": (27, 9), "left_ear": (37, 11), "right_ear": (23, 11),
    "left_shoulder": (42, 28), "right_shoulder": (18, 28), "left_elbow": (48, 48), "right_elbow": (12, 46),
    "left_wrist": (50, 66), "right_wrist": (9, 64), "left_hip": (38, 66), "right_hip": (22, 66),
    "left_knee": (39, 90), "right_knee": (21, 91), "left_ankle": (40, 114), "right_ankle": (20, 115),
    "neck": (30, 24), "head_top": (30, 2),
}  # fmt: skip
BOX_WH = (60.0, 120.0)
IMAGE_WH = (200, 150)
# Three images: two people, one person, nobody.
OFFSETS = {1: [(10, 10), (110, 20)], 2: [(70, 5)], 3: []}


def _keypoints(names, offset):
    return [v for name in names for v in (POSE[name][0] + offset[0], POSE[name][1] + offset[1], 2)]


def write_coco(folder: Path, names=COCO17, offsets=OFFSETS) -> Path:
    """Images (noise, so a model sees something) and their COCO keypoint file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, people in offsets.items():
        name = f"{image_id}.png"
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (IMAGE_WH[1], IMAGE_WH[0], 3), dtype=np.uint8))
        images.append({"id": image_id, "file_name": name, "width": IMAGE_WH[0], "height": IMAGE_WH[1]})
        for offset in people:
            annotations.append(
                {
                    "id": len(annotations),  # starts at 0 on purpose: COCOeval must not see id 0
                    "image_id": image_id,
                    "category_id": 7,
                    "bbox": [*offset, *BOX_WH],
                    "area": BOX_WH[0] * BOX_WH[1],
                    "iscrowd": 0,
                    "num_keypoints": len(names),
                    "keypoints": _keypoints(names, offset),
                }
            )
    ann_file = folder / "ann.json"
    category = {"id": 7, "name": "person", "keypoints": list(names)}
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [category]}))
    return ann_file


def perfect_results(names, shift=(0.0, 0.0), offsets=OFFSETS, category_id=7):
    return [
        {
            "image_id": image_id,
            "category_id": category_id,
            "keypoints": _keypoints(names, (offset[0] + shift[0], offset[1] + shift[1])),
            "score": 0.9,
        }
        for image_id, people in offsets.items()
        for offset in people
    ]


class Oracle:
    """Answers each box with the labelled pose of the person whose box it is, shifted by ``shift``."""

    def __init__(self, joints=JOINTS, shift=(0.0, 0.0)):
        self.joints = joints
        self.shift = np.asarray(shift)

    def predict(self, image_bgr, boxes_xywh, knob=None):
        xy = np.array([[POSE[name] for name in JOINTS]] * len(boxes_xywh), dtype=np.float64).reshape(
            -1, NUM_JOINTS, 2
        )
        xy += np.asarray(boxes_xywh)[:, None, :2] + self.shift
        scores = np.isin(np.array(JOINTS), self.joints)[None].repeat(len(xy), 0).astype(np.float64)
        return Predictions(xy, scores, np.full(len(xy), np.nan))


def test_perfect_results_score_one_and_shifted_ones_less(tmp_path):
    ann_file = write_coco(tmp_path)
    perfect = coco_keypoint_ap(ann_file, perfect_results(COCO17))
    assert set(perfect) == set(AP_KEYS)
    assert math.isnan(perfect.pop("APl"))  # every person is of COCO's medium size: nothing to score
    assert all(value == pytest.approx(1.0) for value in perfect.values())
    shifted = coco_keypoint_ap(ann_file, perfect_results(COCO17, shift=(10, 0)))
    assert shifted["AP"] < 0.9


def test_zero_people_gives_nan_with_a_warning(tmp_path):
    ann_file = write_coco(tmp_path, offsets={1: [], 2: []})
    with pytest.warns(UserWarning, match="no labelled people"):
        ap = coco_keypoint_ap(ann_file, [])
    assert all(math.isnan(value) for value in ap.values())
    with pytest.warns(UserWarning):
        report = evaluate(Oracle(), ann_file, tmp_path)
    assert report.people == 0 and math.isnan(report.pck) and report.results == []


def test_joints_the_model_lacks_are_left_out(tmp_path):
    ann_file = write_coco(tmp_path, names=LSP_NAMES)  # neck and head_top, which COCO-17 models lack
    results = perfect_results(LSP_NAMES)
    for result in results:
        for name in ("neck", "head_top"):
            at = 3 * LSP_NAMES.index(name)
            result["keypoints"][at : at + 3] = [0, 0, 0]
    assert coco_keypoint_ap(ann_file, results, COCO17)["AP"] == pytest.approx(1.0)
    assert coco_keypoint_ap(ann_file, results, JOINTS)["AP"] < 0.9

    report = evaluate(Oracle(joints=COCO17), ann_file, tmp_path)
    assert report.ap["AP"] == pytest.approx(1.0) and report.pck == 1.0
    neck = LSP_NAMES.index("neck")
    assert all(r["keypoints"][3 * neck : 3 * neck + 3] == [0, 0, 0] for r in report.results)


def test_evaluate_with_ground_truth_boxes(tmp_path):
    ann_file = write_coco(tmp_path)
    report = evaluate(Oracle(), ann_file, tmp_path)
    assert report.ap["AP"] == pytest.approx(1.0) and report.pck == 1.0
    assert report.people == 3 and len(report.results) == 3 and report.knob is None
    assert math.isnan(report.gflops)
    assert {r["category_id"] for r in report.results} == {7}

    torso = np.hypot(*np.subtract(POSE["left_shoulder"], POSE["right_hip"]))
    assert 5 < 0.2 * torso < 10
    shifted = evaluate(Oracle(shift=(10, 0)), ann_file, tmp_path)
    assert shifted.ap["AP"] < 0.9 and shifted.pck == 0.0
    assert evaluate(Oracle(shift=(0, 5)), ann_file, tmp_path).pck == 1.0


def test_evaluate_with_detected_boxes(tmp_path):
    ann_file = write_coco(tmp_path)
    truth = {p.image_id: [] for p in load_people(ann_file, tmp_path)}
    for person in load_people(ann_file, tmp_path):
        x, y, w, h = person.box_xywh
        truth[person.image_id].append((np.array([x, y, x + w, y + h]), 0.8))
    boxes_of = iter([truth[1], truth[2], []])  # images are visited in id order, image 3 has nobody

    report = evaluate(Oracle(), ann_file, tmp_path, boxes="detect", detector=lambda image: next(boxes_of))
    assert report.ap["AP"] == pytest.approx(1.0) and report.pck == 1.0
    assert [r["score"] for r in report.results] == pytest.approx([0.8] * 3)

    missed = evaluate(Oracle(), ann_file, tmp_path, boxes="detect", detector=lambda image: [])
    assert missed.ap["AP"] == 0.0 and missed.pck == 0.0 and missed.results == []
    with pytest.raises(ValueError, match="needs a detector"):
        evaluate(Oracle(), ann_file, tmp_path, boxes="detect")


def test_model_crops_match_the_eval_dataset(tmp_path):
    people = load_people(write_coco(tmp_path), tmp_path)
    sample = PoseDataset(people, train=False)[1]
    crops, matrices = crop_batch(read_bgr(people[1].image_path), people[1].box_xywh[None])
    np.testing.assert_allclose(matrices[0], sample.matrix.numpy())
    np.testing.assert_allclose(crops[0].numpy(), sample.image.numpy(), atol=1.5 / 255)


def test_evaluate_a_tiny_model_end_to_end(tmp_path):
    ann_file = write_coco(tmp_path)
    model = EViTPose(ViTSize(48, 12, 3), NUM_JOINTS)
    report = evaluate(model, ann_file, tmp_path, knob=0.5)
    assert all(math.isfinite(report.ap[key]) for key in AP_KEYS if key != "APl")
    assert math.isfinite(report.pck) and report.gflops > 0
    assert report.knob == 0.5 and report.people == 3 and len(report.results) == 3
    assert all(len(r["keypoints"]) == 3 * len(COCO17) for r in report.results)
    pose = ModelEstimator(model).predict(cv2.imread(str(tmp_path / "3.png")), np.zeros((0, 4)))
    assert pose.xy.shape == (0, NUM_JOINTS, 2)
    flipped = evaluate(model, ann_file, tmp_path, knob=0.5, flip=True)
    assert flipped.gflops == pytest.approx(2 * report.gflops) and "flip test" in flipped.summary()
    assert flipped.results != report.results
    with pytest.raises(ValueError, match="flip test"):
        evaluate(Oracle(), ann_file, tmp_path, flip=True)


def test_pck_is_nan_without_a_torso(tmp_path):
    names = tuple(n for n in COCO17 if n != "right_hip")
    ann_file = write_coco(tmp_path, names=names)
    assert math.isnan(evaluate(Oracle(), ann_file, tmp_path).pck)


def test_per_joint_errors_show_a_systematic_offset(tmp_path):
    ann_file = write_coco(tmp_path)
    torso = np.hypot(*np.subtract(POSE["left_shoulder"], POSE["right_hip"]))
    report = evaluate(Oracle(shift=(0, 5)), ann_file, tmp_path)
    assert set(report.joints) == set(COCO17)  # the joints the dataset labels
    for name, error in report.joints.items():
        assert error.pck == 1.0 and error.count == 3, name
        assert error.bias == pytest.approx((0.0, 5 / torso)), name  # every joint 5 px too low
        assert error.hit_bias == pytest.approx(error.bias), name  # all of them hits
    assert "left_hip" in report.joint_table() and f"{5 / torso:+.3f}" in report.joint_table()
    far = evaluate(Oracle(shift=(-10, 0)), ann_file, tmp_path).joints["nose"]
    assert far.pck == 0.0 and far.bias == pytest.approx((-10 / torso, 0.0))
    assert all(math.isnan(v) for v in far.hit_bias)  # no hit to average


def test_eval_command_uses_the_shipped_default_model(tmp_path, capsys):
    from poseapp.cli import main

    ann_file = write_coco(tmp_path)
    assert main(["eval", "--ann", str(ann_file), "--images", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("evitpose_t (gt boxes")
    assert main(
        ["eval", "--ann", str(ann_file), "--images", str(tmp_path), "--weights", "w", "--teacher", "yolo"]
    )
    assert "not both" in capsys.readouterr().err
    assert main(["eval", "--ann", str(ann_file), "--images", str(tmp_path), "--teacher", "yolo", "--flip"])
    assert "not teachers" in capsys.readouterr().err
    assert main(
        ["eval", "--ann", str(ann_file), "--images", str(tmp_path), "--boxes", "detect", "--box-conf", "1"]
    )
    assert "--box-conf" in capsys.readouterr().err
