"""Convolutional stem with the layout of yolo11n-pose's layers 0-6, for a pose-trained warm start.

Those layers turn a 256x192 crop into exactly the 16x12 grid of 128-channel features (stride 16); a 1x1
convolution projects them to the transformer width. The architecture is built from Ultralytics' own
building blocks (no weights); ``init_from_yolo`` copies the teacher's trained tensors in at
training time. The project's checkpoints then hold plain tensors like every other layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

YOLO_LAYERS = 7
YOLO_CHANNELS = 128


def yolo_stem_body() -> nn.Sequential:
    """yolo11n-pose layers 0-6 (the YOLO11 backbone at scale n up to stride 16), random weights."""
    from ultralytics.nn.modules import C3k2, Conv

    body = nn.Sequential(
        Conv(3, 16, 3, 2),
        Conv(16, 32, 3, 2),
        C3k2(32, 64, 1, False, 0.25),
        Conv(64, 64, 3, 2),
        C3k2(64, 128, 1, False, 0.25),
        Conv(128, 128, 3, 2),
        C3k2(128, 128, 1, True),
    )
    for module in body.modules():
        if isinstance(module, nn.BatchNorm2d):  # Ultralytics' BatchNorm settings
            module.eps, module.momentum = 1e-3, 0.03
    return body


class YoloStem(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, H/16 * W/16, dim) tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = yolo_stem_body()
        self.proj = nn.Conv2d(YOLO_CHANNELS, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x)).flatten(2).transpose(1, 2)

    def init_from_yolo(self, weights: str | Path) -> None:
        """Copy layers 0-6 of an Ultralytics pose checkpoint (e.g. ``yolo11n-pose.pt``) into the body."""
        from ultralytics.nn.tasks import load_checkpoint

        teacher, _ = load_checkpoint(str(weights), device="cpu")
        state = {
            key.split(".", 1)[1]: value.float()
            for key, value in teacher.state_dict().items()
            if key.split(".")[1].isdigit() and int(key.split(".")[1]) < YOLO_LAYERS
        }
        self.body.load_state_dict(state)

    def freeze_body(self, frozen: bool = True) -> None:
        """Freeze (or release) the pose-trained layers; frozen BatchNorm keeps its running statistics."""
        for p in self.body.parameters():
            p.requires_grad_(not frozen)
        self.body.train(not frozen and self.training)

    def fuse(self) -> None:
        """Fold every BatchNorm into its convolution (inference only: the state dict changes shape)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self.eval()
        for module in self.body.modules():
            if isinstance(getattr(module, "bn", None), nn.BatchNorm2d) and hasattr(module, "forward_fuse"):
                module.conv = fuse_conv_bn_eval(module.conv, module.bn)
                del module.bn
                module.forward = module.forward_fuse

    def train(self, mode: bool = True) -> YoloStem:
        super().train(mode)
        if not next(self.body.parameters()).requires_grad:
            self.body.eval()
        return self
