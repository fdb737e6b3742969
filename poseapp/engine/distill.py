"""Heatmap distillation from a frozen PoseApp model's flip test.

Knowledge distillation (Hinton et al., "Distilling the knowledge in a neural network", 2015) with a teacher
that is an ensemble of one network over an image and its mirror: the flip test averages the two heatmaps,
which is steadier and better centred than either (on coco_dev it adds about 0.026 AP to the default, the
model card of ``evitpose_t_192x144``). Training the student towards that average asks one forward pass to
do what two did, the self-distillation of Zhang et al. ("Be your own teacher", ICCV 2019) with the test-time
ensemble as the teacher. The teacher's softmax heatmaps are mixed with the label's normalised Gaussian, so
the labels keep pulling the joints where the corpus' teachers put them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..models import WeightsError, load_model
from ..runtime.inference import pose_logits
from .losses import as_distributions


class HeatmapTeacher:
    """A frozen checkpoint whose flip-test heatmaps, at its highest knob (keep every token, run every
    stage), soften a student's training targets (``soft_targets``).

    WeightsError when the checkpoint's crop size differs from the student's: the teacher sees the student's
    very crops.
    """

    def __init__(self, path: str | Path, input_size: tuple[int, int], device: torch.device) -> None:
        """``input_size``: the student's crop (width, height), as ``model.input_size``."""
        if Path(path).suffix.lower() == ".onnx":
            raise WeightsError(f"{path} is an ONNX export: give the checkpoint it was exported from")
        model = load_model(path)
        if tuple(model.input_size) != tuple(input_size):
            size, want = ("{1}x{0}".format(*wh) for wh in (model.input_size, input_size))  # as H x W
            raise WeightsError(f"the teacher {path} takes {size} crops, the student {want}")
        self.model = model.to(device).eval().requires_grad_(False)
        self.knob = model.knob.high

    @torch.no_grad()
    def soft_targets(self, images: torch.Tensor, target: torch.Tensor, share: float) -> torch.Tensor:
        """Per-joint distributions (B, J, H, W), each summing to 1: ``share`` of the teacher's flip-test
        softmax and ``1 - share`` of the normalised Gaussian ``target``."""
        logits, _ = pose_logits(self.model, images, self.knob, flip=True)
        return mix_targets(target, logits, share)


def mix_targets(target: torch.Tensor, teacher_logits: torch.Tensor, share: float) -> torch.Tensor:
    """``share`` of softmax(``teacher_logits``) per joint map plus ``1 - share`` of ``target`` normalised
    to sum 1 (a joint without a Gaussian, one outside the crop, takes the teacher's share alone; its loss
    weight is zero anyway). Both (B, J, H, W)."""
    soft = F.softmax(teacher_logits.float().flatten(2), dim=-1)
    return (share * soft + (1.0 - share) * as_distributions(target)).view_as(target)
