"""Heatmap heads: a deconvolution head over the patch grid (ViTPose) and an MLP head over joint tokens
(TokenPose-style, EViTPose and EMGPose)."""

from __future__ import annotations

import torch
from torch import nn

HEATMAP_HW = (64, 48)
"""(h, w) of the heatmaps of a 256x192 crop (stride 4); ``heatmap_hw`` gives it for another crop."""


def heatmap_hw(img_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the stride-4 heatmaps of an ``img_hw`` (h, w) crop."""
    return img_hw[0] // 4, img_hw[1] // 4


class DeconvHead(nn.Module):
    """ViTPose's classic decoder: two stride-2 transposed convolutions, BN, ReLU, then a 1x1 conv."""

    def __init__(self, dim: int, joints: int, channels: int = 256, kernel: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.kernel = kernel
        layers: list[nn.Module] = []
        for cin in (dim, channels):
            layers += [
                nn.ConvTranspose2d(cin, channels, kernel, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels, joints, 1)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) patch features -> (B, J, 4h, 4w) heatmaps."""
        return self.out(self.up(grid))

    def fuse(self) -> None:
        """Fold each BatchNorm into the transposed convolution before it (inference only)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self.eval()
        fused: list[nn.Module] = []
        for layer in self.up:
            if isinstance(layer, nn.BatchNorm2d) and isinstance(fused[-1], nn.ConvTranspose2d):
                fused[-1] = fuse_conv_bn_eval(fused[-1], layer, transpose=True)
            else:
                fused.append(layer)
        self.up = nn.Sequential(*fused)


class TokenHeatmapHead(nn.Module):
    """Each joint token alone predicts its joint's heatmap through a shared MLP."""

    def __init__(self, dim: int, hidden: int = 384, heatmap_hw: tuple[int, int] = HEATMAP_HW) -> None:
        super().__init__()
        self.heatmap_hw = heatmap_hw
        self.hidden = hidden
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, heatmap_hw[0] * heatmap_hw[1])

    def forward(self, joints: torch.Tensor) -> torch.Tensor:
        """(B, J, D) normalised joint tokens -> (B, J, H, W) heatmaps."""
        b, j, _ = joints.shape
        return self.fc2(self.act(self.fc1(joints))).reshape(b, j, *self.heatmap_hw)
