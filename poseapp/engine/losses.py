"""Training losses: heatmap cross-entropy (and MSE for comparison), OKS, EMGPose's quality loss.

The models' heatmaps are logits. Cross-entropy treats each joint's map as a distribution over the
64x48 cells and the Gaussian target, normalised to sum 1, as the label: at this project's compute it
learns where plain heatmap MSE sits on the all-zero plateau (see ../shared/TRAINING-FACTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _weighted_mean(per_joint: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (per_joint * weight).sum() / weight.sum().clamp_min(1.0)


def as_distributions(maps: torch.Tensor) -> torch.Tensor:
    """Non-negative maps (B, J, H, W) flattened to (B, J, H * W), each scaled to sum 1 (an all-zero map,
    a joint without a label, stays zero)."""
    flat = maps.float().flatten(2)
    return flat / flat.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def heatmap_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy per joint map, averaged over joints with weight > 0.

    logits, target: (B, J, H, W); weight: (B, J). Joints with zero weight (unlabelled) add nothing.
    """
    label = as_distributions(target)
    log_prob = F.log_softmax(logits.flatten(2).float(), dim=-1)
    return _weighted_mean(-(label * log_prob).sum(dim=-1), weight)


def heatmap_mse(heatmaps: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ViTPose's loss: mean squared error per joint map, joints weighted."""
    return _weighted_mean((heatmaps.float() - target).pow(2).flatten(2).mean(dim=-1), weight)


LOSSES = {"ce": heatmap_cross_entropy, "mse": heatmap_mse}


def object_keypoint_similarity(
    pred: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor, area: torch.Tensor, sigmas: torch.Tensor
) -> torch.Tensor:
    """COCO OKS of each prediction (B, J, 2) against its truth (B, J, 2), over the visible joints.

    ``area`` (B,) is the object scale squared (COCO's segment area or box area); people with no visible
    joint score 0.
    """
    d2 = (pred - truth).pow(2).sum(dim=-1)
    k2 = (2 * sigmas) ** 2
    e = d2 / (2 * area.clamp_min(1.0).unsqueeze(-1) * k2 + torch.finfo(pred.dtype).eps)
    mask = (visible > 0).to(pred.dtype)
    return (torch.exp(-e) * mask).sum(dim=-1) / mask.sum(dim=-1).clamp_min(1.0)


QUALITY_TARGETS = ("oks", "gain")


def quality_target(kind: str, coarse_oks: torch.Tensor, fine_oks: torch.Tensor) -> torch.Tensor:
    """What EMGPose's quality predictor learns for each crop, (B,); a crop whose Q is above eta stops after
    the coarse stage.

    ``"oks"``: the coarse result's OKS, as in the paper. ``"gain"``: one minus what the fine stage adds to it,
    ``1 - max(fine OKS - coarse OKS, 0)``, so that the crops the fine stage would not improve stop. On the
    corpus hold-out the coarse OKS says little about the gain (Spearman -0.39): people whose coarse pose is
    poor are often poor in both stages, while an oracle that sends the half with the largest gain through
    the fine stage loses no mean OKS against sending everyone (`weights/emgpose_t.md`)."""
    if kind == "oks":
        return coarse_oks
    if kind == "gain":
        return 1 - (fine_oks - coarse_oks).clamp_min(0)
    raise ValueError(f"quality target {kind!r}: one of {', '.join(QUALITY_TARGETS)}")


def quality_loss(quality: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """EMGPose's quality predictor loss: squared error towards its target (``quality_target``)."""
    return (quality.float() - target.detach()).pow(2).mean()
