"""Box and keypoint geometry: box formats, IoU, OKS, the box of a pose and of points, box motion."""

from __future__ import annotations

import numpy as np
import pytest

from poseapp.geometry import (
    box_from_keypoints,
    box_motion,
    iou_matrix,
    oks_matrix,
    points_extent,
    transform_points,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from poseapp.skeleton import NUM_JOINTS


def test_box_formats_round_trip():
    xyxy = np.array([[10.0, 20.0, 40.0, 100.0], [0.0, 0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), [[10, 20, 30, 80], [0, 0, 1, 2]])
    np.testing.assert_array_equal(xywh_to_xyxy(xyxy_to_xywh(xyxy)), xyxy)


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    np.testing.assert_allclose(iou_matrix(a, b), [[1, 1 / 3, 0], [1, 1 / 3, 0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_oks_matrix_identity_and_scores():
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, (2, NUM_JOINTS, 2))
    oks = oks_matrix(kp, kp)
    np.testing.assert_allclose(np.diag(oks), 1.0)
    assert oks[0, 1] < 0.5
    # Joints below min_score on either side are ignored; no common joint means 0.
    scores = np.zeros((2, NUM_JOINTS))
    assert np.all(oks_matrix(kp, kp, scores, scores) == 0)
    moved = kp[:1].copy()
    moved[0, 0] += 50
    scores_b = np.ones((1, NUM_JOINTS))
    scores_b[0, 0] = 0
    assert oks_matrix(moved, kp[:1], scores_b=scores_b)[0, 0] == pytest.approx(1.0)


def test_points_extent_and_the_box_of_a_pose():
    points = np.array([[1.0, 5.0], [4.0, 2.0], [3.0, 9.0]])
    np.testing.assert_array_equal(points_extent(points), [1, 2, 3, 7])
    np.testing.assert_array_equal(points_extent(np.zeros((0, 2))), np.zeros(4))
    keypoints = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 200.0], [100.0, 200.0], [500.0, 500.0]])
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.1])
    np.testing.assert_allclose(box_from_keypoints(keypoints, scores, 0.3), [-10, -20, 110, 220])
    assert box_from_keypoints(keypoints, np.full(5, 0.1), 0.3) is None


def test_box_motion_takes_one_box_onto_another():
    old, new = np.array([10.0, 20.0, 30.0, 60.0]), np.array([0.0, 0.0, 40.0, 20.0])
    corners = transform_points(old.reshape(2, 2), box_motion(old, new))
    np.testing.assert_allclose(corners.ravel(), new)
