"""Box and keypoint geometry in image pixels: box formats, overlap (IoU), pose similarity (OKS), the box of a
pose, and 2x3 affine maps of points.

Conventions
-----------
* Points are continuous pixel coordinates ``(x, y)``; pixel ``(i, j)`` (row, column) has its centre at
  ``(x=j, y=i)``, as in ``cv2.warpAffine``.
* Boxes are corners ``(x0, y0, x1, y1)`` ("xyxy", what detectors, trackers and ``results`` use) or corner
  and size ``(x, y, w, h)`` ("xywh", what COCO files and the top-down crops use).
* Affine matrices are 2x3 float64 and map source points to destination points: ``p' = A @ p + t``.

Pure numpy, with no model, tracker or dataset behind it: the runtime, the evaluation and the teachers all
measure boxes and poses with these functions.
"""

from __future__ import annotations

import numpy as np

from .skeleton import SIGMAS


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Boxes (..., 4) from corners (x0, y0, x1, y1) to corner and size (x, y, w, h)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Boxes (..., 4) from corner and size (x, y, w, h) to corners (x0, y0, x1, y1)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), x0 y0 x1 y1."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def points_extent(points: np.ndarray) -> np.ndarray:
    """``(x, y, w, h)`` float64 of the smallest box holding ``points`` (K, 2); zeros for no points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        return np.zeros(4)
    low, high = points.min(axis=0), points.max(axis=0)
    return np.concatenate([low, high - low])


def keypoint_similarity(
    a: np.ndarray, b: np.ndarray, area: np.ndarray | float, sigmas: np.ndarray = SIGMAS
) -> np.ndarray:
    """Per joint, how COCO's OKS scores two positions ``a`` and ``b`` (..., J, 2) of an object of scale
    ``area``: ``exp(-d^2 / (2 * area * kappa^2))`` with ``kappa = 2 * sigma`` of the joint (broadcasting)."""
    d2 = np.sum((np.asarray(a, dtype=np.float64) - b) ** 2, axis=-1)
    k2 = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    return np.exp(-d2 / (2 * k2 * area))


def oks_matrix(
    kp_a: np.ndarray,
    kp_b: np.ndarray,
    scores_a: np.ndarray | None = None,
    scores_b: np.ndarray | None = None,
    areas: np.ndarray | None = None,
    sigmas: np.ndarray = SIGMAS,
    min_score: float = 0.3,
) -> np.ndarray:
    """COCO object keypoint similarity of each pose of ``kp_a`` (N, J, 2) with each of ``kp_b`` (M, J, 2).

    ``areas`` (M,) is the object scale of the ``b`` poses; by default the area of the box around each
    one's confident joints. Only joints with score >= ``min_score`` in both poses count (all joints when
    scores are omitted); a pair with no such joint has similarity 0.
    """
    kp_a = np.asarray(kp_a, dtype=np.float64)
    kp_b = np.asarray(kp_b, dtype=np.float64)
    n, j = kp_a.shape[:2]
    m = kp_b.shape[0]
    ok_a = np.ones((n, j), bool) if scores_a is None else np.asarray(scores_a) >= min_score
    ok_b = np.ones((m, j), bool) if scores_b is None else np.asarray(scores_b) >= min_score
    if areas is None:
        extents = [points_extent(kp_b[i][ok_b[i]]) for i in range(m)]
        areas = np.array([float(extent[2] * extent[3]) for extent in extents])
    area = np.asarray(areas, dtype=np.float64)[None, :, None] + np.spacing(1)
    sim = keypoint_similarity(kp_a[:, None], kp_b[None], area, np.asarray(sigmas)[:j])  # (N, M, J)
    valid = ok_a[:, None] & ok_b[None]
    count = valid.sum(-1)
    return np.divide((sim * valid).sum(-1), count, out=np.zeros((n, m)), where=count > 0)


def box_from_keypoints(keypoints: np.ndarray, scores: np.ndarray, min_score: float) -> np.ndarray | None:
    """The (4,) x0, y0, x1, y1 box of the joints scoring at least ``min_score``, padded like a detector's
    person box (a tenth of each side, at least 4 pixels); None with fewer than 4 such joints."""
    good = scores >= min_score
    if good.sum() < 4:
        return None
    lo, hi = keypoints[good].min(axis=0), keypoints[good].max(axis=0)
    pad = np.maximum((hi - lo) * 0.1, 4.0)
    return np.concatenate([lo - pad, hi + pad])


def box_motion(old_box: np.ndarray, new_box: np.ndarray) -> np.ndarray:
    """The (2, 3) image affine (scale per axis, then shift) that takes ``old_box`` onto ``new_box``."""
    old, new = np.asarray(old_box, np.float64), np.asarray(new_box, np.float64)
    scale = np.maximum(new[2:] - new[:2], 1e-6) / np.maximum(old[2:] - old[:2], 1e-6)
    return np.column_stack([np.diag(scale), new[:2] - scale * old[:2]])


def invert_matrix(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (or of each in a ``(..., 2, 3)`` stack)."""
    m = np.asarray(m, dtype=np.float64)
    linear = np.linalg.inv(m[..., :2])
    shift = -linear @ m[..., 2:]
    return np.concatenate([linear, shift], axis=-1)


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points ``(..., 2)``."""
    points = np.asarray(points, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return points @ m[:, :2].T + m[:, 2]
