"""The one top-down step: person boxes of an image -> crops -> one batched model call -> image keypoints.

``TopDownPredictor`` is what the video pipeline, the Python API (``Pose(image, boxes=...)``), the accuracy
evaluation (``engine.evaluate``: ``ModelEstimator`` on an image's boxes, ``predict_dataset`` on a dataset's
eval crops, which training validates with) and the eta calibration (``engine.calibrate``) call, so every
path poses a box the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import PoseOutput
from .inference import crop_batch, image_keypoints, pose_logits
from .precision import autocast, bf16_weights, model_precision


@dataclass
class TopDownOutput:
    """The people of one ``TopDownPredictor`` call, in the order of its boxes."""

    keypoints: np.ndarray
    """(N, J, 2) image pixels."""
    scores: np.ndarray
    """(N, J) in [0, 1]."""
    matrices: np.ndarray
    """(N, 2, 3) image -> crop affine of each person's crop."""
    output: PoseOutput
    """The model call's run record (kept patches, granularity, token counts: overlays and FLOPs read it)."""
    pose_ms: float
    """Milliseconds of the model call and the decoding (not the cropping): what a latency budget limits."""


class TopDownPredictor:
    """A pose model on the boxes of an image: eval crops, one batch, heatmap decoding, back to the image.

    ``precision`` is resolved for the model and device (``precision.model_precision``: ``auto`` is bf16
    autocast where the device computes it natively, else fp32). In bf16 ``model`` is the predictor's own
    copy with bf16 weights (``precision.bf16_weights``), so ``model`` is the one to read records from."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", precision: str = "auto") -> None:
        self.device = torch.device(device)
        self.precision = model_precision(model, precision, self.device)
        model = model.to(self.device).eval()
        self.model = bf16_weights(model) if self.precision == "bf16" else model

    @torch.inference_mode()
    def __call__(
        self, image_bgr: np.ndarray, boxes_xywh: np.ndarray, knob: float | None = None, flip: bool = False
    ) -> TopDownOutput:
        """Pose the people in ``boxes_xywh`` (N >= 1, 4) of ``image_bgr`` (H, W, 3) uint8 at ``knob`` (None:
        the model's default); ``flip`` adds the flip test (``inference.pose_logits``, twice the cost)."""
        crops, matrices = crop_batch(image_bgr, boxes_xywh, self.model.input_size)
        return self.pose_crops(crops, matrices, knob, flip)

    @torch.no_grad()
    def pose_crops(
        self, crops: torch.Tensor, matrices: np.ndarray, knob: float | None = None, flip: bool = False
    ) -> TopDownOutput:
        """The model and the decoding on crops already made: ``crops`` (N, 3, h, w) RGB in [0, 1] at the
        model's input size, cut with the image -> crop ``matrices`` (N, 2, 3) (``crop_batch``, or a dataset's
        eval crops). Under ``no_grad`` rather than ``inference_mode``, so a training loop can validate its
        model with it."""
        start = time.perf_counter()
        with autocast(self.precision, self.device):
            logits, out = pose_logits(self.model, crops.to(self.device), knob, flip)
        keypoints, scores = image_keypoints(logits, matrices)
        return TopDownOutput(keypoints, scores, matrices, out, 1000 * (time.perf_counter() - start))
