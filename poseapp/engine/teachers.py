"""Teacher pose models (MoveNet Thunder, YOLO11n-pose) as ``results.PoseEstimator``s on the unified skeleton.

Both predict COCO-17, mapped onto ``skeleton.JOINTS`` by name (``neck`` and ``head_top`` score 0). Both
learned coordinates normalised by the image size from COCO labels, so scaling them back by the size gives
the labels' own pixel convention, which is the project's.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from ..geometry import invert_matrix, iou_matrix, transform_points, xywh_to_xyxy
from ..paths import CHECKOUT, default_detector
from ..results import PosedPeople, Predictions
from ..runtime.transforms import CROP_PADDING, box_to_center_scale, crop_image, crop_matrix
from ..skeleton import COCO17, NUM_JOINTS, joint_mapping

DEFAULT_MOVENET: Path = CHECKOUT.parent / "shared" / "teachers" / "movenet-thunder.onnx"
DEFAULT_YOLO_POSE: Path = default_detector()
_COCO_TO_UNIFIED = joint_mapping(COCO17)


def _require(path: str | PathLike[str]) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"teacher model file not found: {path}")
    return path


def square_crop_matrix(box_xywh: np.ndarray, size: int) -> np.ndarray:
    """Image->crop matrix of a ``size`` x ``size`` crop around the box padded by ``CROP_PADDING``."""
    center, window = box_to_center_scale(box_xywh, aspect=1.0, padding=CROP_PADDING)
    return crop_matrix(center, window, out_size=(size, size))


def coco17_to_unified(xy: np.ndarray, scores: np.ndarray) -> Predictions:
    """COCO-17 keypoints ``(N, 17, 2)`` and scores ``(N, 17)`` as ``Predictions`` on the unified skeleton."""
    n = len(xy)
    unified_xy, unified_scores = np.zeros((n, NUM_JOINTS, 2)), np.zeros((n, NUM_JOINTS))
    unified_xy[:, _COCO_TO_UNIFIED] = xy
    unified_scores[:, _COCO_TO_UNIFIED] = scores
    return Predictions(unified_xy, unified_scores, np.full(n, np.nan))


class MoveNetTeacher:
    """MoveNet SinglePose Thunder (ONNX, CPU): one person per square 256 x 256 crop of its padded box."""

    name = "movenet-thunder"
    joints = COCO17
    size = 256

    def __init__(self, path: str | PathLike[str] = DEFAULT_MOVENET, threads: int = 0) -> None:
        """``threads``: onnxruntime's intra-op threads (0: its default, one per core)."""
        import onnxruntime as ort

        self.path = _require(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(
        self, image_bgr: np.ndarray, boxes_xywh: np.ndarray, knob: float | None = None
    ) -> Predictions:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        xy, scores = np.zeros((len(boxes_xywh), 17, 2)), np.zeros((len(boxes_xywh), 17))
        for i, box in enumerate(boxes_xywh):
            matrix = square_crop_matrix(box, self.size)
            crop = crop_image(rgb, matrix, (self.size, self.size))
            out = self.session.run(None, {self.input: crop[None].astype(np.int32)})[0].reshape(17, 3)
            xy[i] = transform_points(out[:, 1::-1] * self.size, invert_matrix(matrix))  # (y, x) -> (x, y)
            scores[i] = out[:, 2]
        return coco17_to_unified(xy, scores)


class YoloPoseTeacher:
    """Ultralytics YOLO pose model: end-to-end on whole images (``detect_people``) or top-down on the
    padded square crop of each given box (``predict``), keeping the person it finds that best overlaps the
    box."""

    name = "yolo11n-pose"
    joints = COCO17
    crop_size = 320

    def __init__(
        self,
        weights: str | PathLike[str] = DEFAULT_YOLO_POSE,
        device: str = "cpu",
        conf: float = 0.1,
        imgsz: int = 640,
        detect_conf: float | None = None,
    ) -> None:
        """``conf``: the lowest box score inside a top-down crop; ``detect_conf``: the lowest box score of
        ``detect_people`` on a whole image (default ``conf``)."""
        self.path = _require(weights)
        from ultralytics import YOLO  # imported on use: loading Ultralytics takes seconds

        self.model = YOLO(str(self.path))
        if self.model.task != "pose":
            raise ValueError(f"{self.path} is a '{self.model.task}' model, not a pose model")
        self.device, self.conf, self.imgsz = device, conf, imgsz
        self.detect_conf = conf if detect_conf is None else detect_conf

    def _run(
        self, image_bgr: np.ndarray, imgsz: int, conf: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Boxes xyxy (N, 4), box scores (N,) of at least ``conf``, COCO-17 keypoints (N, 17, 2) and scores
        (N, 17), best first."""
        result = self.model.predict(image_bgr, imgsz=imgsz, conf=conf, device=self.device, verbose=False)[0]
        boxes = result.boxes.xyxy.cpu().numpy().astype(np.float64)
        box_scores = result.boxes.conf.cpu().numpy().astype(np.float64)
        keypoints = result.keypoints
        xy = keypoints.xy.cpu().numpy().astype(np.float64).reshape(-1, 17, 2)
        scores = (
            np.ones(xy.shape[:2]) if keypoints.conf is None else keypoints.conf.cpu().numpy().reshape(-1, 17)
        )
        order = np.argsort(-box_scores, kind="stable")
        return boxes[order], box_scores[order], xy[order], scores[order].astype(np.float64)

    def detect_people(self, image_bgr: np.ndarray) -> PosedPeople:
        boxes, box_scores, xy, scores = self._run(image_bgr, self.imgsz, self.detect_conf)
        return PosedPeople(boxes, box_scores, coco17_to_unified(xy, scores))

    def predict(
        self, image_bgr: np.ndarray, boxes_xywh: np.ndarray, knob: float | None = None
    ) -> Predictions:
        xy, scores = np.zeros((len(boxes_xywh), 17, 2)), np.zeros((len(boxes_xywh), 17))
        for i, box in enumerate(boxes_xywh):
            matrix = square_crop_matrix(box, self.crop_size)
            found_boxes, _, found_xy, found_scores = self._run(
                crop_image(image_bgr, matrix, (self.crop_size, self.crop_size)), self.crop_size, self.conf
            )
            corners = transform_points(xywh_to_xyxy(box).reshape(2, 2), matrix)
            iou = iou_matrix(corners.reshape(1, 4), found_boxes)[0]
            if iou.size and iou.max() > 0:
                best = iou.argmax()
                xy[i] = transform_points(found_xy[best], invert_matrix(matrix))
                scores[i] = found_scores[best]
        return coco17_to_unified(xy, scores)
