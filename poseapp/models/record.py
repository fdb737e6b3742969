"""What a pose model returns: its heatmaps and a record of what it did to get them.

The overlays, the FLOP counter and the budget controller read this record; nothing re-derives it.
All fields are plain tensors with the batch first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PoseOutput:
    heatmaps: torch.Tensor
    """(B, J, 64, 48) logits; a softmax over each map gives the joint's location distribution."""
    tokens_per_block: torch.Tensor
    """(B, blocks) tokens each transformer block processed for each sample (0 = block not run)."""
    knob: float
    grid: tuple[int, int]
    """(rows, cols) of the patch grid that patch indices and the granularity map refer to."""
    kept_patches: list[torch.Tensor] = field(default_factory=list)
    """EViTPose: per pruning layer, (B, k) indices into ``grid`` of the patches kept after it."""
    granularity: torch.Tensor | None = None
    """EMGPose: (B, rows, cols) 0 = fine stage not run, 1 = kept whole, 2 = split 2x2, 3 = split 3x3."""
    token_boxes: torch.Tensor | None = None
    """EMGPose: (B, N_f, 4) crop-pixel box (x0, y0, x1, y1) of every fine-stage image token."""
    merge_groups: list[torch.Tensor] = field(default_factory=list)
    """EMGPose WBAS: per merge layer, (B, n_before) index of the token each input token became."""
    fine_stage: torch.Tensor | None = None
    """EMGPose: (B,) bool, whether the multi-granularity stage ran for the sample."""
    quality: torch.Tensor | None = None
    """EMGPose: (B,) predicted OKS of the coarse result."""
    coarse_heatmaps: torch.Tensor | None = None
    """EMGPose: (B, J, 64, 48) the coarse stage's heatmaps (trained alongside the final ones)."""
    window_boxes: list[torch.Tensor] = field(default_factory=list)
    """UniTransPose: per stage, (B, windows, 4) crop-pixel boxes (x0, y0, x1, y1) of its attention windows,
    cut to the crop (its shifted blocks use the same windows moved by half a window, wrapping round)."""
    joint_attention: list[torch.Tensor] = field(default_factory=list)
    """UniTransPose: per stage, (B, rows, cols) the attention its joint tokens gave each of its patches,
    averaged over heads, joints and the stage's blocks (each map sums to 1). Stage s's grid is ``grid``
    halved s times, rounding up."""
