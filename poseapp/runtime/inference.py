"""From a model's heatmap logits to keypoints in crop pixels with confidences."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import nn

from ..models.record import PoseOutput
from ..skeleton import FLIP_INDEX
from .flops import count_macs
from .transforms import (
    CROP_PADDING,
    HEATMAP_STRIDE,
    INPUT_SIZE,
    box_to_center_scale,
    crop_matrix,
    decode_heatmaps,
    flip_heatmaps,
    heatmaps_to_image,
)

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
    coords, peak = decode_heatmaps(prob, (w * HEATMAP_STRIDE, h * HEATMAP_STRIDE))
    return coords, (peak * 2 * math.pi * sigma**2).clamp(0.0, 1.0)


def image_keypoints(logits: torch.Tensor, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, J, 2) in image pixels and their scores (N, J), both float64 numpy, of the heatmap
    ``logits`` (N, J, H, W) of crops made with the image -> crop ``matrices`` (N, 2, 3)."""
    coords, scores = keypoints_from_logits(logits)
    return heatmaps_to_image(coords.cpu().double(), matrices).numpy(), scores.cpu().double().numpy()


def pose_logits(
    model: nn.Module, crops: torch.Tensor, knob: float | None = None, flip: bool = False
) -> tuple[torch.Tensor, PoseOutput]:
    """Heatmap logits (B, J, H, W) of ``crops`` and the run record of the model call.

    ``flip``: the flip test. The mirrored crops run in the same batch as the originals, so the record covers
    2B crops (originals first); their maps are mirrored back with the left/right channels swapped and
    averaged with the originals'. A model that keeps or merges tokens decides for each pass on its own. It
    costs twice the compute for a steadier, better-centred peak (``macs_per_crop`` counts both passes).
    """
    if not flip:
        out = model(crops, knob)
        return out.heatmaps, out
    n = crops.shape[0]
    out = model(torch.cat([crops, crops.flip(-1)]), knob)
    maps = out.heatmaps.float()
    return (maps[:n] + flip_heatmaps(maps[n:], FLIP_INDEX)) / 2, out


def macs_per_crop(model: nn.Module, out: PoseOutput, crops: int) -> torch.Tensor:
    """Multiply-adds of each of ``crops`` crops (crops,), summed over the passes of one ``pose_logits``."""
    return count_macs(model, out).reshape(-1, crops).sum(dim=0)


def crop_batch(
    image_bgr: np.ndarray, boxes_xywh: np.ndarray, input_size: tuple[int, int] = INPUT_SIZE
) -> tuple[torch.Tensor, np.ndarray]:
    """The model input for the people in ``boxes_xywh`` (N, 4): RGB crops in [0, 1] (N, 3, h, w) of
    ``input_size`` (w, h), each box padded by ``CROP_PADDING`` at the crop's aspect; and the image->crop
    matrices (N, 2, 3)."""
    w, h = input_size
    crops = np.empty((len(boxes_xywh), h, w, 3), dtype=np.uint8)
    matrices = np.empty((len(boxes_xywh), 2, 3))
    for i, box in enumerate(boxes_xywh):
        matrices[i] = crop_matrix(*box_to_center_scale(box, w / h, CROP_PADDING), out_size=input_size)
        crops[i] = cv2.warpAffine(image_bgr, matrices[i], (w, h), flags=cv2.INTER_LINEAR)
    tensor = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor, matrices
