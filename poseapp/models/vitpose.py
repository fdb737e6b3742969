"""ViTPose baseline: a plain ViT over all 16x12 patches and the classic deconvolution head (with a conv stem,
optionally fed its finer maps too: ``head_lateral``)."""

from __future__ import annotations

import torch
from torch import nn

from .heads import DeconvHead
from .knob import FIXED, Knob
from .record import PoseOutput
from .stem import embed_with_finer, lateral_channels, make_stem
from .vit import DEFAULT_IMG_HW, Block, ViTSize, init_weights


class ViTPose(nn.Module):
    knob: Knob = FIXED

    def __init__(
        self,
        size: ViTSize,
        num_joints: int,
        img_hw: tuple[int, int] = DEFAULT_IMG_HW,
        patch: int = 16,
        stem: str = "patch",
        head_channels: int = 256,
        head_lateral: bool = False,
    ) -> None:
        super().__init__()
        self.size, self.num_joints, self.patch = size, num_joints, patch
        self.grid = (img_hw[0] // patch, img_hw[1] // patch)
        self.input_size = (img_hw[1], img_hw[0])
        """(w, h) of the crops it takes."""
        self.patch_embed = make_stem(stem, size.dim, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], size.dim))
        self.blocks = nn.ModuleList(Block(size.dim, size.heads, size.mlp_ratio) for _ in range(size.depth))
        self.norm = nn.LayerNorm(size.dim, eps=1e-6)
        self.head_lateral = head_lateral
        lateral = lateral_channels(self.patch_embed) if head_lateral else ()
        self.head = DeconvHead(size.dim, num_joints, head_channels, lateral=lateral)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, knob: float | None = None) -> PoseOutput:
        tokens, finer = embed_with_finer(self.patch_embed, x, self.head_lateral)
        tokens = tokens + self.pos_embed
        b, n, d = tokens.shape
        for block in self.blocks:
            tokens, _ = block(tokens)
        grid = self.norm(tokens).transpose(1, 2).reshape(b, d, *self.grid)
        counts = torch.full((b, len(self.blocks)), n, dtype=torch.long)
        return PoseOutput(self.head(grid, finer), counts, self.knob.clamp(knob), self.grid)
