"""Local attention inside windows of a token grid: UniTransPose's patch-to-patch step (arXiv 2503.00232).

A grid of rows x cols tokens is cut into windows of at most ``window`` x ``window`` tokens, as few per side as
cover it and all of one size (``WindowLayout.fit``): a side of 12 tokens gives two windows of 6, not one of
8 and one mostly empty. Where no such size divides a side (the 48x36 stride-4 grid of a 192x144 crop) the
grid is padded at the bottom and right to whole windows, the padding is kept out of every real token's
attention by a mask, and it is cut away again afterwards.

A shifted layout rolls the grid up and left by half a window before cutting it, so that its windows straddle
the plain layout's borders and alternating the two lets information cross them (the shifted windows of
Liu et al., Swin Transformer, 2021). The roll brings the top rows and left columns round to the far side, into
windows with tokens they do not border; the mask keeps the two groups apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .vit import Attention


@dataclass(frozen=True)
class WindowLayout:
    """How a ``grid`` (rows, cols) of tokens is cut into ``window`` (rows, cols) windows after a roll of
    ``shift`` (rows, cols) up and left."""

    grid: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int] = (0, 0)

    @classmethod
    def fit(cls, grid: tuple[int, int], window: int, shifted: bool = False) -> WindowLayout:
        """The fewest windows of at most ``window`` tokens a side that cover ``grid``, evenly sized; shifted
        by half a window along each side that has more than one."""
        sides = tuple(math.ceil(g / math.ceil(g / window)) for g in grid)
        shift = tuple(s // 2 if shifted and s < g else 0 for s, g in zip(sides, grid, strict=True))
        return cls(tuple(grid), sides, shift)

    @property
    def counts(self) -> tuple[int, int]:
        """Windows down and across."""
        return math.ceil(self.grid[0] / self.window[0]), math.ceil(self.grid[1] / self.window[1])

    @property
    def padded(self) -> tuple[int, int]:
        """(rows, cols) of the grid padded to whole windows."""
        return self.counts[0] * self.window[0], self.counts[1] * self.window[1]

    @property
    def windows(self) -> int:
        return self.counts[0] * self.counts[1]

    @property
    def size(self) -> int:
        """Tokens in a window, padding included."""
        return self.window[0] * self.window[1]

    def boxes(self) -> torch.Tensor:
        """(windows, 4) long: each window of the unshifted layout as (x0, y0, x1, y1) grid cells, row-major,
        cut to the grid."""
        r, c = torch.meshgrid(torch.arange(self.counts[0]), torch.arange(self.counts[1]), indexing="ij")
        (wr, wc), (rows, cols) = self.window, self.grid
        r, c = r.reshape(-1), c.reshape(-1)
        return torch.stack(
            [c * wc, r * wr, ((c + 1) * wc).clamp(max=cols), ((r + 1) * wr).clamp(max=rows)], dim=1
        )

    def mask(self) -> torch.Tensor | None:
        """(windows, size, size) bool: which tokens of a window (row-major) each of its tokens may attend.
        A real token attends the real tokens of its own side of a roll's seam; a padding token (whose output
        is thrown away) attends its side's tokens, padding included, so that no row is empty. None when every
        token may attend its whole window (no padding, no shift)."""
        if self.padded == self.grid and self.shift == (0, 0):
            return None
        sides = []
        for padded, shift, grid in zip(self.padded, self.shift, self.grid, strict=True):
            source = (torch.arange(padded) + shift) % padded  # grid position each rolled position holds
            sides.append((source < shift, source < grid))  # (came round the seam, real)
        (wrapped_r, real_r), (wrapped_c, real_c) = sides
        group = 2 * wrapped_r[:, None].long() + wrapped_c[None, :].long()
        real = real_r[:, None] & real_c[None, :]
        labels = _cut(torch.stack([group, real.long()], dim=-1)[None], self.window)
        group, real = labels[..., 0], labels[..., 1].bool()
        same = group[:, :, None] == group[:, None, :]
        return same & (real[:, None, :] | ~real[:, :, None])


def _cut(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * windows, wh * ww, C), windows row-major."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(2, 3)
    return x.reshape(-1, wh * ww, c)


def partition(x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """Tokens (B, rows, cols, C) -> windows (B * windows, size, C): padded, rolled, cut."""
    (rows, cols), (padded_rows, padded_cols) = layout.grid, layout.padded
    if (padded_rows, padded_cols) != (rows, cols):
        x = F.pad(x, (0, 0, 0, padded_cols - cols, 0, padded_rows - rows))
    if layout.shift != (0, 0):
        x = x.roll((-layout.shift[0], -layout.shift[1]), dims=(1, 2))
    return _cut(x, layout.window)


def merge(windows: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """The inverse of ``partition``: windows (B * windows, size, C) -> tokens (B, rows, cols, C)."""
    (down, across), (wh, ww), c = layout.counts, layout.window, windows.shape[-1]
    x = windows.reshape(-1, down, across, wh, ww, c).transpose(2, 3).reshape(-1, down * wh, across * ww, c)
    if layout.shift != (0, 0):
        x = x.roll(layout.shift, dims=(1, 2))
    return x[:, : layout.grid[0], : layout.grid[1]]


class WindowAttention(nn.Module):
    """Multi-head self-attention (``vit.Attention``) of each token with the tokens of its window:
    (B, rows, cols, C) -> (B, rows, cols, C)."""

    def __init__(self, dim: int, heads: int, layout: WindowLayout) -> None:
        super().__init__()
        self.layout = layout
        self.attn = Attention(dim, heads)
        self.register_buffer("mask", layout.mask(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = partition(x, self.layout)
        mask = None
        if self.mask is not None:  # the same for every crop: (B * windows, 1, size, size)
            mask = self.mask.expand(x.shape[0], -1, -1, -1).reshape(-1, 1, *self.mask.shape[1:])
        out, _ = self.attn(windows, mask=mask)
        return merge(out, self.layout)
