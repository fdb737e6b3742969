"""Exact multiply-accumulate counts of a model call, from the token counts it really used.

Counted: every matrix product and convolution (attention projections, attention scores and mixing,
MLPs, patch embeddings, heads, WBAS similarities). Not counted, like the pose papers' counters:
normalisation, activations, softmax, pooling, interpolation, gathers. "GFLOPs" in this project means
10^9 multiply-adds, the convention of ViTPose, EViTPose and EMGPose (ViTPose-S at 256x192: 5.7).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from ..models.emgpose import EMGPose
from ..models.evitpose import EViTPose
from ..models.heads import DeconvHead, TokenHeatmapHead
from ..models.onnx_model import OnnxPoseModel
from ..models.record import PoseOutput
from ..models.stem import YoloStem
from ..models.vit import ViTSize
from ..models.vitpose import ViTPose
from ..models.wbas import wbas_split


def linear_macs(tokens: int | torch.Tensor, fan_in: int, fan_out: int) -> int | torch.Tensor:
    return tokens * fan_in * fan_out


def block_macs(tokens: int | torch.Tensor, size: ViTSize) -> int | torch.Tensor:
    """One transformer block on ``tokens`` tokens: qkv, scores, mixing, projection, MLP."""
    d, hidden = size.dim, int(size.dim * size.mlp_ratio)
    projections = linear_macs(tokens, d, 3 * d) + linear_macs(tokens, d, d)
    attention = 2 * tokens * tokens * d
    return projections + attention + 2 * linear_macs(tokens, d, hidden)


def patch_embed_macs(patches: int | torch.Tensor, dim: int, patch: int = 16) -> int | torch.Tensor:
    return patches * 3 * patch * patch * dim


_CONV_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], int]] = weakref.WeakKeyDictionary()


def conv_macs(module: nn.Module, input_hw: tuple[int, int]) -> int:
    """Multiply-adds of every convolution in ``module`` for one (1, 3, h, w) input (shapes from a dry run)."""
    cache = _CONV_CACHE.setdefault(module, {})
    if input_hw not in cache:
        total = 0

        def count(conv: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
            nonlocal total
            kh, kw = conv.kernel_size
            total += output[0].numel() * (conv.in_channels // conv.groups) * kh * kw

        hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, nn.Conv2d)]
        was_training = module.training
        try:
            module.eval()
            with torch.no_grad():
                param = next(module.parameters())
                module(torch.zeros(1, 3, *input_hw, dtype=param.dtype, device=param.device))
        finally:
            module.train(was_training)
            for hook in hooks:
                hook.remove()
        cache[input_hw] = total
    return cache[input_hw]


def deconv_head_macs(head: DeconvHead, dim: int, joints: int, grid: tuple[int, int]) -> int:
    h, w = grid
    k2, c = head.kernel**2, head.channels
    first = h * w * dim * c * k2
    second = (2 * h) * (2 * w) * c * c * k2
    return first + second + (4 * h) * (4 * w) * c * joints


def token_head_macs(head: TokenHeatmapHead, dim: int, joints: int) -> int:
    return joints * (dim * head.hidden + head.hidden * head.heatmap_hw[0] * head.heatmap_hw[1])


def head_macs(head: nn.Module, dim: int, joints: int, grid: tuple[int, int]) -> int:
    if isinstance(head, DeconvHead):
        return deconv_head_macs(head, dim, joints, grid)
    return token_head_macs(head, dim, joints)


def count_macs(model: nn.Module, out: PoseOutput) -> torch.Tensor:
    """Multiply-adds each sample of ``out`` cost, (B,) int64."""
    if isinstance(model, OnnxPoseModel):  # a fixed knob: every crop costs what the exporter counted
        return torch.full((out.heatmaps.shape[0],), model.macs_per_crop, dtype=torch.long)
    size: ViTSize = model.size
    counts = out.tokens_per_block.to(torch.long)
    if isinstance(model, EMGPose):
        return _emgpose_macs(model, counts, out.fine_stage.cpu())
    image_hw = (model.grid[0] * model.patch, model.grid[1] * model.patch)
    if isinstance(model, ViTPose | EViTPose):
        fixed = conv_macs(model.patch_embed, image_hw) + head_macs(
            model.head, size.dim, model.num_joints, model.grid
        )
        return fixed + block_macs(counts, size).sum(dim=1)
    raise TypeError(f"no FLOP formula for {type(model).__name__}")


def _emgpose_macs(model: EMGPose, counts: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    size, d, j = model.size, model.size.dim, model.num_joints
    depth = len(model.blocks)
    n = model.grid[0] * model.grid[1]
    rows, cols = model.grid
    head = head_macs(model.head, d, j, (2 * rows, 2 * cols))
    h, w = model.img_hw
    # The coarse stage embeds the half-resolution crop; the fine stage reuses that for the cells kept whole
    # and embeds the full and 1.5x crops (the conv stem) or only the 2x2 and 3x3 cells' patches.
    if isinstance(model.patch_embed, YoloStem):
        coarse_embed = conv_macs(model.patch_embed, (h // 2, w // 2))
        fine_embed = sum(conv_macs(model.patch_embed, (h * s // 2, w * s // 2)) for s in (2, 3))
    else:
        high, mid, _ = model.split_counts()
        coarse_embed = patch_embed_macs(n, d, model.patch)
        fine_embed = patch_embed_macs(9 * high + 4 * mid, d, model.patch)
    coarse = coarse_embed + head + linear_macs(1, d, d) + linear_macs(1, d, 1)
    coarse = coarse + block_macs(counts[:, :depth], size).sum(dim=1)
    similarity = torch.zeros_like(coarse)
    for layer in model.merge_layers:
        for i, tokens in enumerate(counts[:, depth + layer - 1].tolist()):
            if tokens:
                _, middle, _ = wbas_split(tokens - j, model.r_head, model.r_last)
                similarity[i] += ((middle + 1) // 2) * (middle // 2) * d
    fine_fixed = fine_embed + 2 * linear_macs(n, d, d) + head
    if isinstance(model.head, DeconvHead):  # the unmerged tokens laid onto the grid: one (cells x N) matmul
        fine_fixed += 4 * n * model.fine_tokens() * d
    fine_cost = fine_fixed + block_macs(counts[:, depth:], size).sum(dim=1) + similarity
    return coarse + torch.where(fine, fine_cost, torch.zeros_like(fine_cost))
