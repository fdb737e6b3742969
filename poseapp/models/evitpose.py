"""EViTPose: learnable joint tokens choose which patches the deeper blocks still process.

At each pruning layer the block runs on every current token (so the patches about to be dropped are
updated once), then the attention the joint tokens gave each patch, averaged over heads and joints,
ranks the patches and the top ``keep_ratio`` share is gathered into a smaller dense tensor.

Two heads: ``"tokens"`` (TokenPose-style: each joint token through an MLP to its heatmap) and ``"grid"``
(every patch scattered back to the 16x12 grid in the state it last had, kept ones after the last block,
dropped ones as they were when dropped, then a small deconvolution head). The grid head learns much
faster at this project's compute; the joint tokens still choose the patches. With ``head_lateral`` the grid
head also reads the conv stem's stride-8 and stride-4 maps (``DeconvHead``), which no pruning touches.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .heads import DeconvHead, TokenHeatmapHead, heatmap_hw
from .knob import Knob
from .record import PoseOutput
from .stem import embed_with_finer, lateral_channels, make_stem
from .vit import DEFAULT_IMG_HW, Block, ViTSize, init_weights, patch_importance


def _scatter_rows(target: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``target`` (B, N, D) with ``rows`` (B, k, D) written at positions ``index`` (B, k)."""
    return target.scatter(1, index.unsqueeze(-1).expand(-1, -1, rows.shape[-1]), rows)


class EViTPose(nn.Module):
    knob = Knob("keep_ratio", low=0.25, high=1.0, default=0.5)
    """Default 0.5: half the patches go on past each pruning layer, for a small loss of accuracy against keep
    1.0 and a large saving in GFLOPs (each checkpoint's model card, ``weights/*.md``, gives both)."""

    def __init__(
        self,
        size: ViTSize,
        num_joints: int,
        img_hw: tuple[int, int] = DEFAULT_IMG_HW,
        patch: int = 16,
        stem: str = "patch",
        prune_layers: tuple[int, ...] = (4, 7, 10),
        head_hidden: int = 384,
        head: str = "grid",
        head_channels: int = 128,
        head_lateral: bool = False,
    ) -> None:
        super().__init__()
        self.size, self.num_joints, self.patch = size, num_joints, patch
        self.prune_layers = tuple(prune_layers)
        self.grid = (img_hw[0] // patch, img_hw[1] // patch)
        self.input_size = (img_hw[1], img_hw[0])
        """(w, h) of the crops it takes."""
        self.patch_embed = make_stem(stem, size.dim, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], size.dim))
        self.joint_tokens = nn.Parameter(torch.zeros(1, num_joints, size.dim))
        self.blocks = nn.ModuleList(Block(size.dim, size.heads, size.mlp_ratio) for _ in range(size.depth))
        self.norm = nn.LayerNorm(size.dim, eps=1e-6)
        if head not in ("grid", "tokens"):
            raise ValueError(f"EViTPose head must be 'grid' or 'tokens', not {head!r}")
        if head_lateral and head != "grid":
            raise ValueError("lateral connections belong to the grid head")
        self.head_type = head
        self.head_lateral = head_lateral
        self.head = (
            DeconvHead(
                size.dim,
                num_joints,
                head_channels,
                lateral=lateral_channels(self.patch_embed) if head_lateral else (),
            )
            if head == "grid"
            else TokenHeatmapHead(size.dim, head_hidden, heatmap_hw(img_hw))
        )
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.joint_tokens, std=0.02)
        self.apply(init_weights)

    @staticmethod
    def kept_count(patches: int, keep_ratio: float) -> int:
        """Patches that survive one pruning layer."""
        return max(1, math.ceil(patches * keep_ratio - 1e-9))

    def forward(self, x: torch.Tensor, keep_ratio: float | None = None) -> PoseOutput:
        keep = self.knob.clamp(keep_ratio)
        j = self.num_joints
        patches, finer = embed_with_finer(self.patch_embed, x, self.head_lateral)
        patches = patches + self.pos_embed
        b, n, d = patches.shape
        tokens = torch.cat([self.joint_tokens.expand(b, -1, -1), patches], dim=1)
        index = torch.arange(n, device=x.device).expand(b, n)
        kept: list[torch.Tensor] = []
        counts: list[int] = []
        last_state = patches
        for layer, block in enumerate(self.blocks, start=1):
            prune = keep < 1.0 and layer in self.prune_layers
            counts.append(tokens.shape[1])
            tokens, weights = block(tokens, rows=j if prune else 0)
            if prune:
                current = tokens.shape[1] - j
                score = patch_importance(weights, j, current)
                top = score.topk(self.kept_count(current, keep), dim=1).indices.sort(dim=1).values
                if self.head_type == "grid":
                    last_state = _scatter_rows(last_state, index, tokens[:, j:])
                chosen = tokens[:, j:].gather(1, top.unsqueeze(-1).expand(-1, -1, d))
                tokens = torch.cat([tokens[:, :j], chosen], dim=1)
                index = index.gather(1, top)
                kept.append(index)
        if self.head_type == "grid":
            grid = self.norm(_scatter_rows(last_state, index, tokens[:, j:]))
            heatmaps = self.head(grid.transpose(1, 2).reshape(b, d, *self.grid), finer)
        else:
            heatmaps = self.head(self.norm(tokens[:, :j]))
        per_block = torch.tensor(counts, dtype=torch.long).expand(b, -1).clone()
        return PoseOutput(heatmaps, per_block, keep, self.grid, kept_patches=kept)
