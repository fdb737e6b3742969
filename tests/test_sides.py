"""Repairing swapped left/right human labels against a teacher (``data.sides``, ``label --fix-sides``)."""

import json

import cv2
import numpy as np
import pytest

from poseapp.data.sides import swap_groups, swapped_groups
from poseapp.engine.label import label_images
from poseapp.results import Predictions
from poseapp.skeleton import COCO17, FLIP_INDEX, INDEX, JOINTS, NUM_JOINTS

ARMS = [INDEX[f"{side}_{part}"] for side in ("left", "right") for part in ("shoulder", "elbow", "wrist")]


def _person(seed=0):
    """A labelled person: distinct joints spread over a 200-pixel box, every joint visible."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 200, (NUM_JOINTS, 2)), np.full(NUM_JOINTS, 2.0)


def _arms_swapped(xy):
    out = xy.copy()
    for part in ("shoulder", "elbow", "wrist"):
        left, right = INDEX[f"left_{part}"], INDEX[f"right_{part}"]
        out[[left, right]] = xy[[right, left]]
    return out


def test_labels_that_agree_with_the_teacher_are_left_alone():
    xy, visibility = _person()
    teacher = xy + np.random.default_rng(1).normal(0, 3, xy.shape)
    assert swapped_groups(xy, visibility, teacher, np.full(NUM_JOINTS, 0.9)) == []


def test_an_arm_pair_labelled_from_the_observers_side_is_found_and_swapped_back():
    truth, visibility = _person()
    labels = _arms_swapped(truth)
    teacher = truth + np.random.default_rng(2).normal(0, 3, truth.shape)
    groups = swapped_groups(labels, visibility, teacher, np.full(NUM_JOINTS, 0.9))
    assert groups == ["arms"]
    np.testing.assert_array_equal(swap_groups(labels, groups), truth)
    assert swapped_groups(truth[FLIP_INDEX], visibility, teacher, np.full(NUM_JOINTS, 0.9)) == [
        "arms",
        "legs",
    ]


def test_a_group_is_not_judged_on_unsure_or_unlabelled_joints():
    truth, visibility = _person()
    labels = _arms_swapped(truth)
    unsure = np.full(NUM_JOINTS, 0.9)
    unsure[[INDEX["left_elbow"], INDEX["right_wrist"]]] = 0.1  # one usable arm pair left: too few
    assert swapped_groups(labels, visibility, truth, unsure) == []
    hidden = visibility.copy()
    hidden[[INDEX["left_shoulder"], INDEX["left_wrist"]]] = 0
    assert swapped_groups(labels, hidden, truth, np.full(NUM_JOINTS, 0.9)) == []


def test_swap_groups_moves_any_per_joint_values():
    visibility = np.arange(NUM_JOINTS, dtype=float)
    out = swap_groups(visibility, ["legs"])
    assert out[INDEX["left_knee"]] == INDEX["right_knee"] and out[INDEX["right_ankle"]] == INDEX["left_ankle"]
    assert (
        out[INDEX["left_wrist"]] == INDEX["left_wrist"]
        and visibility[INDEX["left_knee"]] == INDEX["left_knee"]
    )


class MirrorTeacher:
    """Sees the person as ``truth`` (COCO-17 joints, sure of each)."""

    name = "mirror"
    joints = COCO17

    def __init__(self, truth):
        self.truth = truth

    def predict(self, image_bgr, boxes_xywh, knob=None):
        scores = np.isin(np.array(JOINTS), COCO17).astype(np.float64) * 0.9
        return Predictions(self.truth[None].copy(), scores[None], np.full(1, np.nan))


def test_label_fix_sides_renames_only_the_swapped_human_labels(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((220, 220, 3), np.uint8))
    truth, _ = _person(3)
    labels = _arms_swapped(truth)
    keypoints = np.column_stack([labels, np.full(NUM_JOINTS, 2.0)])
    keypoints[INDEX["right_elbow"], 2] = 1  # an occluded label keeps its flag through the swap
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 220, "height": 220}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 200],
                         "keypoints": keypoints.ravel().tolist()}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(JOINTS)}],
    }  # fmt: skip
    (tmp_path / "human.json").write_text(json.dumps(data))

    summary = label_images(
        MirrorTeacher(truth),
        tmp_path,
        tmp_path / "fixed.json",
        fill_only=tmp_path / "human.json",
        fix_sides=True,
    )
    assert summary.side_swaps == 1
    written = json.loads(summary.out_json.read_text())
    out = np.reshape(written["annotations"][0]["keypoints"], (NUM_JOINTS, 3))
    np.testing.assert_allclose(out[:, :2], truth, atol=0.01)
    assert out[INDEX["left_elbow"], 2] == 1 and out[INDEX["right_elbow"], 2] == 2
    assert written["info"]["side_swaps"] == 1
    with pytest.raises(ValueError, match="fill_only"):
        label_images(MirrorTeacher(truth), tmp_path, tmp_path / "x.json", fix_sides=True)


def test_label_command_refuses_fix_sides_without_human_labels(tmp_path, capsys):
    from poseapp.cli import main

    assert main(["label", "--source", str(tmp_path), "--out", str(tmp_path / "o.json"), "--fix-sides"]) == 2
    assert "needs --fill-only" in capsys.readouterr().err
