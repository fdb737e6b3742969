"""The results and the small dataclasses that pass between pipeline stages (capture -> detect -> track ->
pose -> render), and the estimator protocol: what any top-down pose estimator (a PoseApp model, a teacher)
returns for the people of an image (``Predictions``, ``PosedPeople``, ``PoseEstimator``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .skeleton import NUM_JOINTS

if TYPE_CHECKING:
    from .runtime.render import Overlays


@dataclass
class Frame:
    index: int
    """Position in the source, 0-based (file mode: every index appears once, in order)."""
    image: np.ndarray | None
    """(H, W, 3) uint8 BGR; None only in a result read back by ``FrameResult.from_json`` without its image."""
    time: float
    """Presentation time in seconds from the start of the source."""


@dataclass
class Detection:
    box: np.ndarray
    """(4,) x0, y0, x1, y1 in image pixels."""
    score: float


Detector = Callable[[np.ndarray], list[Detection]]
"""``image_bgr -> person detections, best first``: ``runtime.detect.PersonDetector`` or a stand-in (tests)."""


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
    window_boxes: list[np.ndarray] = field(default_factory=list)
    """UniTransPose: per stage, (windows, 4) crop-pixel boxes of its attention windows."""
    joint_attention: list[np.ndarray] = field(default_factory=list)
    """UniTransPose: per stage, (rows, cols) the attention its joint tokens gave each patch (sums to 1)."""


@dataclass
class Person:
    """One person posed in an image: what the pipeline, the renderer, the exports and the Python API
    (``from poseapp import Person``) pass around."""

    track_id: int | None
    """Stable id along a video (``Pose.track``, the pipeline); None for a single image (``Pose(image)``)."""
    box: np.ndarray
    """(4,) x0, y0, x1, y1 in image pixels."""
    keypoints: np.ndarray
    """(J, 2) image pixels, joints of ``skeleton.JOINTS``."""
    scores: np.ndarray
    """(J,) confidence in [0, 1]."""
    crop_matrix: np.ndarray | None = None
    """(2, 3) image -> crop affine the model saw; None when read back from JSON."""
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

    def plot(self, overlays: Overlays | None = None) -> np.ndarray:
        """A copy of the frame with the people drawn (``runtime.render.draw_result``); by default skeletons,
        boxes and track ids, without the HUD."""
        from .runtime.render import Overlays, draw_result

        if self.frame.image is None:
            raise ValueError("this result has no image to draw on: pass image= to FrameResult.from_json")
        return draw_result(self.frame.image, self, overlays or Overlays(hud=False))

    def to_json(self) -> str:
        """This frame as JSON: its index, time and statistics, the joint names, and one COCO keypoint result
        per person, as ``--json`` writes them (``io.keypoint_files.frame_to_json``); ``from_json`` reads it
        back."""
        from .io.keypoint_files import frame_to_json

        return frame_to_json(self)

    @classmethod
    def from_json(cls, text: str, image: np.ndarray | None = None) -> FrameResult:
        """The result ``to_json`` wrote (coordinates to 3 decimals, no run records), on ``image`` if given."""
        from .io.keypoint_files import frame_from_json

        return frame_from_json(text, image)


@dataclass
class Predictions:
    """Keypoints of the people of one image, on the unified skeleton, in the order of their boxes."""

    xy: np.ndarray
    """(N, J, 2) image pixels."""
    scores: np.ndarray
    """(N, J) in [0, 1]."""
    gflops: np.ndarray
    """(N,) 10^9 multiply-adds spent on each person (NaN where unknown: the teachers)."""

    @classmethod
    def empty(cls) -> Predictions:
        return cls(np.zeros((0, NUM_JOINTS, 2)), np.zeros((0, NUM_JOINTS)), np.zeros(0))


@dataclass
class PosedPeople:
    """The people an end-to-end estimator found in one image."""

    boxes: np.ndarray
    """(N, 4) x0, y0, x1, y1 image pixels."""
    box_scores: np.ndarray
    """(N,)"""
    pose: Predictions


class PoseEstimator(Protocol):
    """Top-down keypoints on the unified skeleton for given person boxes of one image: a PoseApp model
    (``engine.evaluate.ModelEstimator``) or a teacher (``engine.teachers``). One that also finds the people
    itself has ``detect_people(image_bgr) -> PosedPeople``."""

    joints: tuple[str, ...]
    """Names (of ``skeleton.JOINTS``) it predicts; the other joints come back with score 0."""

    def predict(
        self, image_bgr: np.ndarray, boxes_xywh: np.ndarray, knob: float | None = None
    ) -> Predictions: ...
