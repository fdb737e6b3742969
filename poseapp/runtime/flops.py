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
from ..models.unitranspose import JAGLBlock, UniTransPose
from ..models.vit import ViTSize
from ..models.vitpose import ViTPose
from ..models.wbas import wbas_split
from .precision import autocast


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
    """Multiply-adds of every convolution in ``module`` for one (1, 3, h, w) input (shapes from a dry run),
    and of the attention products inside yolo11n-pose's C2PSA layer (a stem that reaches its layer 10)."""
    from ultralytics.nn.modules.block import Attention as PSAttention

    cache = _CONV_CACHE.setdefault(module, {})
    if input_hw not in cache:
        total = 0

        def count(conv: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
            nonlocal total
            kh, kw = conv.kernel_size
            total += output[0].numel() * (conv.in_channels // conv.groups) * kh * kw

        def count_attention(attention: PSAttention, inputs: tuple, _output: torch.Tensor) -> None:
            nonlocal total  # scores (N x N x key dims) and mixing (N x N x value dims) per head
            _, channels, h, w = inputs[0].shape
            total += (h * w) ** 2 * (attention.num_heads * attention.key_dim + channels)

        hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, nn.Conv2d)]
        hooks += [
            m.register_forward_hook(count_attention) for m in module.modules() if isinstance(m, PSAttention)
        ]
        was_training = module.training
        try:
            module.eval()
            device = next(module.parameters()).device
            # a copy with bfloat16 weights (``precision.bf16_weights``) keeps float32 norms: run it as it runs
            low = any(p.dtype == torch.bfloat16 for p in module.parameters())
            with torch.no_grad(), autocast("bf16" if low else "fp32", device):
                module(torch.zeros(1, 3, *input_hw, device=device))
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
    lateral = sum(conv.in_channels * c * (2**i * h) * (2**i * w) for i, conv in enumerate(head.lateral, 1))
    return first + second + lateral + (4 * h) * (4 * w) * c * joints


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
    counts = out.tokens_per_block.to(torch.long)
    if isinstance(model, UniTransPose):
        return _unitranspose_macs(model, counts)
    size: ViTSize = model.size
    if isinstance(model, EMGPose):
        return _emgpose_macs(model, counts, out.fine_stage.cpu(), out.coarse_heatmaps is not None)
    image_hw = (model.grid[0] * model.patch, model.grid[1] * model.patch)
    if isinstance(model, ViTPose | EViTPose):
        fixed = conv_macs(model.patch_embed, image_hw) + head_macs(
            model.head, size.dim, model.num_joints, model.grid
        )
        return fixed + block_macs(counts, size).sum(dim=1)
    raise TypeError(f"no FLOP formula for {type(model).__name__}")


def _emgpose_macs(
    model: EMGPose, counts: torch.Tensor, fine: torch.Tensor, coarse_maps_for_all: bool
) -> torch.Tensor:
    """The coarse stage for every crop, the fine stage for those in ``fine``. The coarse stage's head runs for
    the crops that stop there, and for the others too where ``coarse_maps_for_all`` (the record holds every
    crop's coarse heatmaps: training, calibration)."""
    size, d, j = model.size, model.size.dim, model.num_joints
    depth = len(model.blocks)
    n = model.grid[0] * model.grid[1]
    rows, cols = model.grid
    head = head_macs(model.head, d, j, (2 * rows, 2 * cols))
    h, w = model.img_hw
    # The coarse stage embeds the half-resolution crop; the fine stage reuses that for the cells kept whole
    # and runs the conv stem on the full crop (its stride-8 map projected onto the 3x3 grid as well), or
    # embeds only the 2x2 and 3x3 cells' patches.
    if isinstance(model.patch_embed, YoloStem):
        coarse_embed = conv_macs(model.patch_embed, (h // 2, w // 2))
        fine_embed = conv_macs(model.patch_embed, (h, w)) + linear_macs(9 * n, model.fine_proj.in_channels, d)
    else:
        high, mid, _ = model.split_counts()
        coarse_embed = patch_embed_macs(n, d, model.patch)
        fine_embed = patch_embed_macs(9 * high + 4 * mid, d, model.patch)
    coarse = coarse_embed + linear_macs(1, d, d) + linear_macs(1, d, 1)
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
    coarse_head = head if coarse_maps_for_all else torch.where(fine, 0, head)
    return coarse + coarse_head + torch.where(fine, fine_cost, torch.zeros_like(fine_cost))


def cross_attention_macs(
    queries: int | torch.Tensor, keys: int | torch.Tensor, dim: int
) -> int | torch.Tensor:
    """``queries`` tokens attending to ``keys`` other tokens: query, key-value and output projections,
    scores and mixing."""
    return linear_macs(queries, dim, 2 * dim) + linear_macs(keys, dim, 2 * dim) + 2 * queries * keys * dim


def jagl_block_macs(
    block: JAGLBlock, tokens: int | torch.Tensor, joints: int, mlp_ratio: float
) -> int | torch.Tensor:
    """One UniTransPose block on ``tokens`` patches: the window attention (over the padded windows), the
    joint tokens' gather from every patch, their transformer block, the patches' read-back, the MLP."""
    layout = block.local.layout
    d, hidden = block.mlp.fc1.in_features, block.mlp.fc1.out_features
    padded = layout.windows * layout.size
    local = linear_macs(padded, d, 4 * d) + 2 * layout.windows * layout.size**2 * d
    mlp = 2 * linear_macs(tokens, d, hidden)
    if block.joint is None:  # the local-only ablation
        return local + mlp
    reason = block_macs(joints, ViTSize(d, 1, block.joint.reason.attn.heads, mlp_ratio))
    joint_path = cross_attention_macs(joints, tokens, d) + reason + cross_attention_macs(tokens, joints, d)
    return local + joint_path + mlp


def _unitranspose_macs(model: UniTransPose, counts: torch.Tensor) -> torch.Tensor:
    """Every convolution (stem, downsampling, decoder) from a dry run, the joint tokens' maps between stages,
    and each block from the patches it processed (``tokens_per_block`` less the joint tokens)."""
    j = 0 if model.joint_tokens is None else model.num_joints
    fixed = conv_macs(model, model.img_hw)
    fixed += sum(linear_macs(j, proj.in_features, proj.out_features) for proj in model.joint_proj)
    blocks = [block for stage in model.stages for block in stage.blocks]
    ratio = model.size.mlp_ratio
    per_block = [jagl_block_macs(block, counts[:, k] - j, j, ratio) for k, block in enumerate(blocks)]
    return fixed + torch.stack(per_block, dim=1).sum(dim=1)
