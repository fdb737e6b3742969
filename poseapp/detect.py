"""Person detection with any Ultralytics detection or pose checkpoint (only its person boxes are used)."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import numpy as np

from .results import Detection

DEFAULT_DETECTOR: Path = Path(__file__).resolve().parent.parent / "assets" / "fetched" / "yolo11n-pose.pt"

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


class PersonDetector:
    """Person boxes from an Ultralytics YOLO checkpoint.

    The person class is looked up by name in the checkpoint's classes, so COCO detectors (80 classes) and
    pose models (one class) both work.
    """

    def __init__(
        self, weights: str | Path, device: str = "cpu", conf: float = 0.25, imgsz: int = 640
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

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        """Person boxes (image pixels) and scores in ``image_bgr`` (H, W, 3) uint8, best first."""
        result = self.model.predict(
            image_bgr,
            classes=[self.person_class],
            conf=self.conf,
            imgsz=self.imgsz,
            device=self.device,
            verbose=False,
        )[0]
        boxes = result.boxes.xyxy.cpu().numpy().astype(np.float64)
        scores = result.boxes.conf.cpu().numpy().astype(np.float64)
        order = np.argsort(-scores, kind="stable")
        return [Detection(box=boxes[i], score=float(scores[i])) for i in order]
