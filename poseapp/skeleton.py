"""The unified skeleton: joint names, flip pairs, limbs, colours and name-based dataset mapping.

Every model predicts the joints of ``JOINTS`` in this order: COCO-17 plus the extra named joints that
the training datasets carry (LSP's ``neck`` and ``head_top``). A dataset is mapped onto it by joint
*name*; a joint the dataset does not label gets weight 0, never a made-up value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COCO17: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

JOINTS: tuple[str, ...] = COCO17 + ("neck", "head_top")
NUM_JOINTS = len(JOINTS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINTS)}

# Spellings other datasets use for the same joint (MPII, AI Challenger, CrowdPose, JHMDB ...).
ALIASES: dict[str, str] = {
    "upper_neck": "neck", "thorax": "neck", "head": "head_top", "top_head": "head_top",
    "headtop": "head_top", "head top": "head_top", "neck_base": "neck",
    "l_shoulder": "left_shoulder", "r_shoulder": "right_shoulder", "l_elbow": "left_elbow",
    "r_elbow": "right_elbow", "l_wrist": "left_wrist", "r_wrist": "right_wrist", "l_hip": "left_hip",
    "r_hip": "right_hip", "l_knee": "left_knee", "r_knee": "right_knee", "l_ankle": "left_ankle",
    "r_ankle": "right_ankle",
}  # fmt: skip


def _partner(name: str) -> str | None:
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a) :]
    return None


FLIP_INDEX: np.ndarray = np.array([INDEX.get(_partner(n) or n, i) for i, n in enumerate(JOINTS)])
"""``FLIP_INDEX[j]`` is the joint that ``j`` becomes in a horizontally mirrored image."""

LIMBS: tuple[tuple[str, str], ...] = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"),
    ("right_elbow", "right_wrist"), ("left_eye", "right_eye"), ("nose", "left_eye"),
    ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
    ("neck", "head_top"), ("left_shoulder", "neck"), ("right_shoulder", "neck"),
)  # fmt: skip
LIMB_INDEX: np.ndarray = np.array([(INDEX[a], INDEX[b]) for a, b in LIMBS])


def _side(name: str) -> str:
    return "left" if name.startswith("left_") else "right" if name.startswith("right_") else "centre"


_SIDE_BGR = {"left": (255, 128, 0), "right": (0, 128, 255), "centre": (0, 220, 0)}
LIMB_COLORS_BGR: tuple[tuple[int, int, int], ...] = tuple(
    _SIDE_BGR[_side(a) if _side(a) == _side(b) else "centre"] for a, b in LIMBS
)
JOINT_COLORS_BGR: tuple[tuple[int, int, int], ...] = tuple(_SIDE_BGR[_side(n)] for n in JOINTS)

# Per-joint OKS constants: COCO's published sigmas; neck and head top take the shoulder's and ear's.
_COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                0.107, 0.107, 0.087, 0.087, 0.089, 0.089)  # fmt: skip
SIGMAS: np.ndarray = np.array(_COCO_SIGMAS + (0.079, 0.035), dtype=np.float64)


def canonical_name(name: str) -> str:
    """Lower-case, underscore-separated joint name with known aliases resolved."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, ALIASES.get(key.replace("_", " "), key))
    return key.replace(" ", "_")


def joint_mapping(names: Sequence[str]) -> np.ndarray:
    """For a dataset's joint names, the index of each in ``JOINTS`` (-1 where the skeleton lacks it)."""
    return np.array([INDEX.get(canonical_name(n), -1) for n in names], dtype=np.int64)


def to_unified(keypoints: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Map ``(K, 3)`` keypoints ``[x, y, v]`` in a dataset's order onto the unified skeleton.

    Returns ``(xy, visibility)`` of shapes ``(NUM_JOINTS, 2)`` and ``(NUM_JOINTS,)``; joints the dataset
    does not name, or did not label (v == 0), have visibility 0 and coordinates 0.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(len(names), 3)
    xy = np.zeros((NUM_JOINTS, 2))
    vis = np.zeros(NUM_JOINTS)
    for src, dst in enumerate(joint_mapping(names)):
        if dst >= 0 and keypoints[src, 2] > 0:
            xy[dst] = keypoints[src, :2]
            vis[dst] = keypoints[src, 2]
    return xy, vis
