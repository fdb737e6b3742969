"""The transformer core shared by every pose model: attention, MLP, block, patch embedding, sizes.

Attention runs fused (``scaled_dot_product_attention``) unless a caller needs the attention rows of the
first few tokens (the joint / keypoint tokens), or ``explicit_attention`` is on. The explicit path does the
same multiply-adds as the fused one, so FLOP counts agree either way; it exists because importance scores
need the weights and because ``torch.utils.flop_counter`` does not see fused CPU attention.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTSize:
    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0


SIZES: dict[str, ViTSize] = {
    "t": ViTSize(dim=192, depth=12, heads=3),
    "s": ViTSize(dim=384, depth=12, heads=6),
    "b": ViTSize(dim=768, depth=12, heads=12),
}

DEFAULT_IMG_HW: tuple[int, int] = (256, 192)
"""Crop (h, w) the pose models take unless built for another (the ``img_hw`` of their config)."""

_EXPLICIT = False


@contextmanager
def explicit_attention() -> Iterator[None]:
    """Compute every attention with plain matmuls (for FLOP counting and reference checks)."""
    global _EXPLICIT
    previous, _EXPLICIT = _EXPLICIT, True
    try:
        yield
    finally:
        _EXPLICIT = previous


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: int = 0, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d)) v for queries (B, heads, n, d) and keys and values (B, heads, m, d).

    ``mask`` (bool, broadcast to (B, heads, n, m)) lets each query attend only the keys where it is True
    (every row needs one). With ``rows > 0`` also return the attention of the first ``rows`` queries to
    every key, (B, heads, rows, m); that, and ``explicit_attention``, take the plain-matmul path.

    Training on the CPU takes it as well: there the backward of PyTorch's fused kernel
    (``scaled_dot_product_attention``) costs several times that of the plain matmuls, most of all on many
    short sequences such as UniTransPose's windows (``docs/training.md``). Inference, and any training
    on a GPU, keep the fused kernel, which is the faster there."""
    training_on_cpu = q.requires_grad and q.device.type == "cpu" and torch.is_grad_enabled()
    if rows or _EXPLICIT or training_on_cpu:
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        attn = logits.softmax(dim=-1)
        return attn @ v, attn[:, :, :rows] if rows else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, rows: int = 0, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over ``x`` (B, N, D), each token only to those ``mask`` allows (``attend``). With
        ``rows > 0`` also return the attention of the first ``rows`` tokens to every token,
        (B, heads, rows, N)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out, weights = attend(q, k, v, rows, mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), weights


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rows: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, weights = self.attn(self.norm1(x), rows)
        x = x + y
        return x + self.mlp(self.norm2(x)), weights


def resample_pos_embed(pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Position embeddings (1, rows * cols, D) of a ``grid`` resampled bilinearly to ``new_grid`` (a
    model trained at one crop size seeding one at another)."""
    rows, cols = grid
    maps = pos.reshape(1, rows, cols, -1).permute(0, 3, 1, 2)
    maps = F.interpolate(maps, size=new_grid, mode="bilinear", align_corners=False)
    return maps.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], -1)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` patches, linearly projected: (B, 3, H, W) -> (B, N, D)."""

    def __init__(self, dim: int, patch: int = 16, in_chans: int = 3) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def embed_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embed already-cut patches (..., 3 * patch * patch), channel-major like ``F.unfold``."""
        weight = self.proj.weight.flatten(1)
        return F.linear(pixels, weight, self.proj.bias)


def patch_importance(weights: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """Importance of ``count`` patch tokens starting at ``first``: the attention the query rows give
    them, averaged over heads and query tokens. ``weights`` is (B, heads, rows, N) -> (B, count)."""
    return weights[..., first : first + count].mean(dim=(1, 2))


def init_weights(module: nn.Module) -> None:
    """timm-style init: truncated normal for linear layers, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
