"""Person detection with any Ultralytics detection or pose checkpoint (only its person boxes are used).

A PyTorch checkpoint runs as a plain ``nn.Module``: letterbox, forward, Ultralytics' NMS, boxes back to
the image. That skips the predictor's per-call bookkeeping and its warm-up, which imports torchvision
(seconds on the viewer's way to its first frame). Exported checkpoints go through ``YOLO.predict``.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..paths import default_detector
from ..results import Detection
from .precision import autocast, resolve_precision

DEFAULT_DETECTOR: Path = default_detector()
"""Resolved once, at import (``paths.py``: ``$POSEAPP_HOME``, the checkout, or the installed share folder)."""

# What Ultralytics raises for a file that is not a loadable checkpoint (today a TypeError wrapping the
# unpickling error; the others cover a readable file of the wrong structure and older releases).
_LOAD_ERRORS = (
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
)
NMS_IOU = 0.7
"""Ultralytics' predictor default."""
STRIDE = 32
PAD_VALUE = 114


def boxes_only(net: nn.Module) -> bool:
    """Make a pose checkpoint's head skip its keypoint branch (an eighth of yolo11n-pose's time here): the
    detector only uses the boxes. True if the head was changed; end-to-end heads are left as they are."""
    from ultralytics.nn.modules.head import Detect, Pose

    head = net.model[-1] if hasattr(net, "model") else None
    if not isinstance(head, Pose) or head.end2end:
        return False

    def forward(x: list[torch.Tensor]) -> torch.Tensor:
        preds = Detect.forward_head(head, x, head.cv2, head.cv3)
        return Detect._inference(head, preds)

    head.forward = forward
    return True


def letterbox(
    image_bgr: np.ndarray, size: int, stride: int = STRIDE
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize the longer side to ``size`` and pad each side to a multiple of ``stride``, centred (the
    minimal rectangle Ultralytics uses for one image). Returns the image, the scale and the (left, top)
    padding, so that ``image_xy = (letterboxed_xy - pad) / scale``."""
    h, w = image_bgr.shape[:2]
    scale = min(size / h, size / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    pad_w, pad_h = (-new_w) % stride, (-new_h) % stride
    if (new_w, new_h) != (w, h):
        image_bgr = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    left, top = pad_w // 2, pad_h // 2
    out = cv2.copyMakeBorder(
        image_bgr, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    return out, scale, (left, top)


class PersonDetector:
    """Person boxes from an Ultralytics YOLO checkpoint.

    The person class is looked up by name in the checkpoint's classes, so COCO detectors (80 classes) and
    pose models (one class) both work.
    """

    def __init__(
        self,
        weights: str | Path,
        device: str = "cpu",
        conf: float = 0.25,
        imgsz: int = 640,
        precision: str = "auto",
    ) -> None:
        path = Path(weights).expanduser().resolve()
        # Checked here because Ultralytics treats a name it cannot find as an asset to download.
        if not path.is_file():
            raise FileNotFoundError(f"Detector weights not found: {path}")
        from ultralytics import YOLO  # imported on use: loading Ultralytics takes seconds

        try:
            model = YOLO(str(path), verbose=False)
            names = model.names
        except _LOAD_ERRORS as e:
            raise ValueError(f"{path} is not a loadable Ultralytics checkpoint ({type(e).__name__}).") from e
        person = [int(k) for k, name in names.items() if str(name).lower() == "person"]
        if not person:
            raise ValueError(f"{path} has no 'person' class (classes: {sorted(names.values())[:10]}).")
        if model.task not in ("detect", "pose", "segment"):
            raise ValueError(f"{path} is a '{model.task}' model, which gives no boxes.")
        with contextlib.suppress(TypeError):  # an exported (non-PyTorch) model cannot be fused: run it as is
            model.fuse(verbose=False)
        self.model = model
        self.path = path
        self.person_class = person[0]
        self.device, self.conf, self.imgsz = device, conf, imgsz
        self.precision = resolve_precision(precision, torch.device(device))
        """The PyTorch module's (``precision.py``); bf16 boxes agree with fp32 ones to IoU 0.99."""
        net = model.model
        self._net: nn.Module | None = None
        if isinstance(net, nn.Module):
            # channels-last convolutions are faster with oneDNN on x86 CPUs, and on GPUs (as Ultralytics does)
            self._net = net.to(device, memory_format=torch.channels_last).eval()
            boxes_only(self._net)
        self._classes = len(names)
        self._lock = threading.Lock()
        """One call at a time: a warm-up on another thread and the first frame may overlap."""

    def warmup(self) -> None:
        """Run once on a small blank image, so the first real frame is not the one paying for lazy set-up."""
        self(np.zeros((64, 64, 3), np.uint8))

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        """Person boxes (image pixels) and scores in ``image_bgr`` (H, W, 3) uint8, best first."""
        with self._lock:
            boxes, scores = self._direct(image_bgr) if self._net is not None else self._predict(image_bgr)
        order = np.argsort(-scores, kind="stable")
        return [Detection(box=boxes[i], score=float(scores[i])) for i in order]

    @torch.inference_mode()
    def _direct(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from ultralytics.utils.nms import non_max_suppression

        padded, scale, (left, top) = letterbox(image_bgr, self.imgsz)
        x = torch.from_numpy(np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1)))
        x = x.to(self.device).float().div_(255).unsqueeze(0)
        with autocast(self.precision, x.device):
            raw = self._net(x)
        prediction = raw[0] if isinstance(raw, (list, tuple)) else raw  # (boxes + scores, extras)
        found = non_max_suppression(
            prediction.float(),
            self.conf,
            NMS_IOU,
            classes=[self.person_class],
            nc=self._classes,
            end2end=bool(getattr(self._net, "end2end", False)),
        )[0]
        boxes = found[:, :4].double().cpu().numpy()
        boxes = (boxes - [left, top, left, top]) / scale
        h, w = image_bgr.shape[:2]
        boxes = boxes.clip(0, [w, h, w, h])
        return boxes, found[:, 4].double().cpu().numpy()

    def _predict(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.model.predict(
            image_bgr,
            classes=[self.person_class],
            conf=self.conf,
            imgsz=self.imgsz,
            device=self.device,
            verbose=False,
        )[0]
        boxes = result.boxes
        return boxes.xyxy.cpu().numpy().astype(np.float64), boxes.conf.cpu().numpy().astype(np.float64)
