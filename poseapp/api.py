"""PoseApp's Python front door: ``Pose``, the people in an image, on given boxes, or along a video.

```python
from poseapp import Pose

pose = Pose()                          # the default checkpoint and person detector, device "auto"
people = pose(image_bgr)               # [Person]: box (x0, y0, x1, y1), keypoints (19, 2), scores
people = pose(image_bgr, boxes=xyxy)   # top-down on your boxes; the detector is not run
for result in pose.track("clip.mp4"):  # or a webcam index, a folder of images, an iterable of BGR arrays
    result.people, result.plot(), result.to_json()
```

An image is posed by the detector then the top-down predictor (``runtime.predictor.TopDownPredictor``),
with no tracking or smoothing; ``track`` runs the video pipeline (``runtime.pipeline.PosePipeline``:
detector every few frames, Kalman tracker with stable ids, One-Euro smoothing, the latency budget), built
by the same ``runtime.build.PipelineBuilder`` as ``main.py --video`` and the viewer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .geometry import xyxy_to_xywh
from .io.video import CaptureThread, open_source
from .results import Detector, Frame, FrameResult, Person
from .runtime.build import PipelineBuilder
from .runtime.pipeline import DEFAULT_WEIGHTS, PipelineConfig, person_records
from .runtime.predictor import TopDownPredictor

Source = str | int | os.PathLike[str] | Iterable[np.ndarray]
"""What ``Pose.track`` reads: a video file, a webcam index, a folder of images, or BGR images."""


class Pose:
    """A pose model with its person detector, on images, on given boxes, or along videos.

    ``weights``: a PoseApp checkpoint (``weights/*.safetensors``) or its ONNX export; None: the default
    (``paths.default_weights``). ``detector``: an Ultralytics checkpoint or any ``image_bgr -> [Detection]``
    callable; None: yolo11n-pose (``paths.default_detector``), loaded when first needed. ``device``: ``cpu``,
    ``cuda`` or ``auto``. ``knob``: the model's keep ratio (EViTPose) or eta (EMGPose); None: its default.
    ``budget_ms``: along a video, adapt the knob to stay under this many pose milliseconds per frame.
    ``flip``: the flip test (more accurate, twice the pose cost). The rest are the video pipeline's options.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        detector: str | Path | Detector | None = None,
        device: str = "auto",
        *,
        knob: float | None = None,
        budget_ms: float | None = None,
        precision: str = "auto",
        flip: bool = False,
        detect_every: int = 5,
        smoothing: bool = True,
    ) -> None:
        cfg = PipelineConfig(
            weights=weights or DEFAULT_WEIGHTS, device=device, precision=precision, detect_every=detect_every,
            budget_ms=budget_ms, knob=knob, smoothing=smoothing, flip=flip,
        )  # fmt: skip
        self.builder = PipelineBuilder(cfg, detector)
        self.model = self.builder.model()
        self.predictor = TopDownPredictor(self.model, self.builder.cfg.device, precision)

    @property
    def cfg(self) -> PipelineConfig:
        """The options every pipeline of this ``Pose`` is built with (device resolved)."""
        return self.builder.cfg

    def __call__(self, image_bgr: np.ndarray, boxes: np.ndarray | None = None) -> list[Person]:
        """The people in ``image_bgr`` (H, W, 3) uint8: those the detector finds (best first, at most
        ``cfg.max_people``), or one per row of ``boxes`` (N, 4) x0, y0, x1, y1 in that order. Keypoints
        are on ``skeleton.JOINTS``, in image pixels; ``track_id`` is None."""
        if boxes is None:
            found = self.builder.detector()(image_bgr)[: self.cfg.max_people]
            boxes = np.array([d.box for d in found])
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return []
        posed = self.predictor(image_bgr, xyxy_to_xywh(boxes), self.cfg.knob, self.cfg.flip)
        records = person_records(self.model, posed.output)[: len(boxes)]
        return [
            Person(None, box, kp, sc, m, record)
            for box, kp, sc, m, record in zip(
                boxes, posed.keypoints, posed.scores, posed.matrices, records, strict=True
            )
        ]

    def track(self, source: Source, fps: float = 30.0) -> Iterator[FrameResult]:
        """One ``FrameResult`` per frame of ``source``, in order, with track ids stable across frames:
        ``.people``, ``.plot()`` (the annotated frame), ``.to_json()``.

        ``source``: a video file, a webcam index (``0`` or ``"0"``: newest frame always, stale ones dropped
        and counted in ``.dropped``), a folder of .jpg/.png images (sorted by name), or an iterable of BGR
        images (timed at ``fps``, as a folder is). Every call starts afresh: no tracks, no smoothing history.
        Decoding runs on its own thread; it stops when the loop ends or breaks.
        """
        pipeline = self.builder(model=self.model)
        if isinstance(source, np.ndarray) and source.ndim == 3:
            raise TypeError("track() takes a sequence of images; pose(image) poses one image")
        if not isinstance(source, (str, int, os.PathLike)):
            for index, image in enumerate(source):
                yield pipeline.step(Frame(index, image, index / fps))
            return
        spec = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
        capture = CaptureThread(open_source(spec, fps))
        capture.start()
        try:
            while (frame := capture.get()) is not None:
                result = pipeline.step(frame, None if capture.live else capture.peek())
                result.dropped = capture.dropped
                yield result
        finally:
            capture.stop()
