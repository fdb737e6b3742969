"""Heatmap heads: a deconvolution head over the patch grid (ViTPose), an MLP head over joint tokens
(TokenPose-style, EViTPose and EMGPose) and a sub-pixel decoder over a feature pyramid (UniTransPose)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

HEATMAP_HW = (64, 48)
"""(h, w) of the heatmaps of a 256x192 crop (stride 4); ``heatmap_hw`` gives it for another crop."""


def heatmap_hw(img_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the stride-4 heatmaps of an ``img_hw`` (h, w) crop."""
    return img_hw[0] // 4, img_hw[1] // 4


class DeconvHead(nn.Module):
    """ViTPose's classic decoder: two stride-2 transposed convolutions, BN, ReLU, then a 1x1 conv.

    With ``lateral`` (the channels of a stride-8 and a stride-4 map of the same crop) each upsampled map
    also gets that finer map through a 1x1 convolution, added before its ReLU: the skip connections of a
    U-Net or a feature pyramid (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017),
    which bring a conv stem's fine detail to a decoder that otherwise sees only the stride-16 patch grid.
    They start at zero, so a model trained without them keeps its output when they are added.
    """

    def __init__(
        self, dim: int, joints: int, channels: int = 256, kernel: int = 4, lateral: Sequence[int] = ()
    ) -> None:
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
        if len(lateral) not in (0, 2):
            raise ValueError("lateral takes the channels of a stride-8 and a stride-4 map, or nothing")
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in lateral)
        for conv in self.lateral:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, grid: torch.Tensor, finer: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """(B, D, h, w) patch features -> (B, J, 4h, 4w) heatmaps; ``finer``: the (B, C, 2h, 2w) and
        (B, C', 4h, 4w) maps the ``lateral`` convolutions take (required when the head has them)."""
        if len(finer) != len(self.lateral):
            raise ValueError(f"the head takes {len(self.lateral)} finer maps, got {len(finer)}")
        x, stage = grid, 0
        for layer in self.up:
            if isinstance(layer, nn.ReLU) and self.lateral:
                x = x + self.lateral[stage](finer[stage])
                stage += 1
            x = layer(x)
        return self.out(x)

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


class SubPixelDecoder(nn.Module):
    """UniTransPose's sub-pixel CNN decoder (arXiv 2503.00232): upsampling by pixel shuffle (Shi et al.,
    "Real-time single image and video super-resolution using an efficient sub-pixel convolutional neural
    network", 2016) instead of transposed convolutions.

    From the coarsest map down, a 1x1 convolution widens the map to four times the next finer map's channels
    and a pixel shuffle turns those into a map of twice the size with the finer map's channels, which is
    added to the finer map. A grid of odd side was halved rounding up, so the shuffled map can overhang the
    finer one by a row or a column: that is cut away. At the finest map (stride 4) a 3x3 convolution and a
    1x1 convolution give the heatmaps.
    """

    def __init__(self, dims: Sequence[int], joints: int) -> None:
        """``dims``: channels of the maps, finest first."""
        super().__init__()
        self.lift = nn.ModuleList(nn.Conv2d(coarse, 4 * fine, 1) for fine, coarse in pairwise(dims))
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.GELU()
        self.smooth = nn.Conv2d(dims[0], dims[0], 3, padding=1)
        self.out = nn.Conv2d(dims[0], joints, 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Maps (B, dims[i], h_i, w_i), finest first, each ceil(half) the size of the one before -> heatmaps
        (B, J, h_0, w_0)."""
        x = maps[-1]
        for lift, finer in zip(reversed(self.lift), reversed(maps[:-1]), strict=True):
            x = self.act(finer + self.shuffle(lift(x))[..., : finer.shape[-2], : finer.shape[-1]])
        return self.out(self.act(self.smooth(x)))
