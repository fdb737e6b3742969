"""From a model's heatmap logits to keypoints in crop pixels with confidences."""

from __future__ import annotations

import math

import torch

from .transforms import decode_heatmaps

TARGET_SIGMA = 2.0


def keypoints_from_logits(
    logits: torch.Tensor, sigma: float = TARGET_SIGMA
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, J, H, W) logits -> crop-pixel coordinates (B, J, 2) and scores (B, J) in [0, 1].

    The location is the sub-pixel peak of the softmax map; the score is its peak probability relative to
    that of the training target (a Gaussian of ``sigma`` cells normalised to sum 1), so a map as sharp as
    the targets scores 1 and a flat, unsure one scores near 0.
    """
    b, j, h, w = logits.shape
    prob = logits.float().flatten(2).softmax(dim=-1).reshape(b, j, h, w)
    coords, peak = decode_heatmaps(prob)
    return coords, (peak * 2 * math.pi * sigma**2).clamp(0.0, 1.0)
