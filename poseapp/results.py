"""The small dataclasses that pass between pipeline stages (capture -> detect -> track -> pose -> render)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    index: int
    """Position in the source, 0-based (file mode: every index appears once, in order)."""
    image: np.ndarray
    """(H, W, 3) uint8 BGR."""
    time: float
    """Presentation time in seconds from the start of the source."""


@dataclass
class Detection:
    box: np.ndarray
    """(4,) x0, y0, x1, y1 in image pixels."""
    score: float


@dataclass
class PoseRecord:
    """What the pose model did for one person, in crop pixels (see ``models.record.PoseOutput``)."""

    kept_patches: list[np.ndarray] = field(default_factory=list)
    """EViTPose: per pruning layer, indices into ``grid`` of the patches kept."""
    grid: tuple[int, int] = (16, 12)
    patch: int = 16
    """Crop pixels per grid cell (``grid`` x ``patch`` = the model's crop, 256x192 by default)."""
    granularity: np.ndarray | None = None
    """EMGPose: (rows, cols) 0 = fine stage not run, 1 whole, 2 = 2x2, 3 = 3x3."""
    token_boxes: np.ndarray | None = None
    """EMGPose: (N_f, 4) crop-pixel boxes of the fine-stage tokens."""
    merge_groups: list[np.ndarray] = field(default_factory=list)
    """EMGPose: per WBAS layer, (n_before,) output index of each token."""


@dataclass
class Person:
    track_id: int
    box: np.ndarray
    """(4,) x0, y0, x1, y1 in image pixels."""
    keypoints: np.ndarray
    """(J, 2) image pixels, joints of ``skeleton.JOINTS``."""
    scores: np.ndarray
    """(J,) confidence in [0, 1]."""
    crop_matrix: np.ndarray
    """(2, 3) image -> crop affine the model saw."""
    record: PoseRecord = field(default_factory=PoseRecord)


@dataclass
class FrameResult:
    frame: Frame
    people: list[Person]
    knob: float
    pose_ms: float
    """Wall time of the batched pose call for this frame."""
    gflops: float
    """10^9 multiply-adds the pose model spent on this frame (all people)."""
    detector_ran: bool = False
    dropped: int = 0
    """Live mode: frames skipped so far because processing was slower than capture."""
    fps: float = 0.0
    posed: int | None = None
    """Set when the model posed only this many of ``people`` (a latency budget too small for all); the
    others carry their last pose along their track."""
