"""Repairing human labels whose left and right are swapped, by agreement with a teacher.

Crowd-sourced labels (LSPET's, for one) name some people's limbs from the observer's side instead of the
person's: about one person in ten there, measured against MoveNet, where Fashion and pelota agree with it on
nearly everyone. Training on them teaches a model to assume people face the camera. The repair keeps every
human position and only swaps the names of an arm pair or a leg pair when the teacher's joints lie far
closer to the swapped labels than to the labels as given.
"""

from __future__ import annotations

import numpy as np

from poseapp.skeleton import INDEX

SIDE_GROUPS: dict[str, tuple[str, ...]] = {
    "arms": ("shoulder", "elbow", "wrist"),
    "legs": ("hip", "knee", "ankle"),
}
"""Joints whose left and right are swapped together."""

SWAP_RATIO = 0.5
"""Swap only where the mean distance to the swapped labels is below this fraction of the unswapped one."""
MIN_PAIRS = 2
"""Left/right pairs the teacher and the labels must share in a group before it is judged."""


def _pairs(parts: tuple[str, ...]) -> np.ndarray:
    return np.array([(INDEX[f"left_{p}"], INDEX[f"right_{p}"]) for p in parts])


_GROUP_PAIRS = {name: _pairs(parts) for name, parts in SIDE_GROUPS.items()}


def swapped_groups(
    xy: np.ndarray,
    visibility: np.ndarray,
    teacher_xy: np.ndarray,
    teacher_scores: np.ndarray,
    min_confidence: float = 0.3,
    ratio: float = SWAP_RATIO,
) -> list[str]:
    """The groups of ``SIDE_GROUPS`` whose labels ``xy`` (J, 2) read better with left and right swapped.

    A pair counts when both its joints are labelled (``visibility > 0``) and the teacher is at least
    ``min_confidence`` sure of both; a group is judged on ``MIN_PAIRS`` such pairs or more.
    """
    found = []
    for name, pairs in _GROUP_PAIRS.items():
        usable = (visibility[pairs] > 0).all(axis=1) & (teacher_scores[pairs] >= min_confidence).all(axis=1)
        if usable.sum() < MIN_PAIRS:
            continue
        left, right = pairs[usable, 0], pairs[usable, 1]
        labels = np.concatenate([xy[left], xy[right]])
        as_given = np.linalg.norm(teacher_xy[np.concatenate([left, right])] - labels, axis=1).mean()
        swapped = np.linalg.norm(teacher_xy[np.concatenate([right, left])] - labels, axis=1).mean()
        if swapped < ratio * as_given:
            found.append(name)
    return found


def swap_groups(values: np.ndarray, groups: list[str]) -> np.ndarray:
    """A copy of per-joint ``values`` (J, ...) with the left and right joints of ``groups`` exchanged."""
    out = np.array(values, copy=True)
    for name in groups:
        pairs = _GROUP_PAIRS[name]
        out[pairs[:, 0]], out[pairs[:, 1]] = values[pairs[:, 1]], values[pairs[:, 0]]
    return out
