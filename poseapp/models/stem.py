"""Convolutional stems cut from yolo11n-pose, for a pose-trained warm start.

Two depths of the same network give the same stride-16, 128-channel token grid:

- ``yolo``: layers 0-6, the YOLO11 backbone at scale n up to stride 16.
- ``yolo_neck``: layers 0-19, the backbone through stride 32 (SPPF, C2PSA) and the PAN neck back up to its
  stride-16 output, the features yolo11n-pose's own pose head reads. They carry context from a 2x larger
  window and were trained to locate keypoints, which transfers far better to ordinary photos (the second
  probe of ``shared/TRAINING-FACTS.md``).

A third, ``yolo_pyramid``, is the whole network but its pose head (layers 0-22) and gives a hierarchical
encoder its four levels (``PYRAMID_LEVELS``): the backbone's stride-4 map and the PAN neck's P3, P4 and P5
outputs, the maps yolo11n-pose's own head reads, all from one pass.

The layers are built from Ultralytics' model description (no weights); ``init_from_yolo`` copies the
teacher's trained tensors in at training time, so the project's checkpoints hold plain tensors like every
other layer. A 1x1 convolution projects the features to the transformer width.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .vit import PatchEmbed

YOLO_CHANNELS = 128
STEM_LAYERS: dict[str, int] = {"yolo": 7, "yolo_neck": 20, "yolo_pyramid": 23}
"""How many leading layers of yolo11n-pose each stem takes."""
YOLO_LEVELS: tuple[tuple[int, int, int], ...] = ((0, 3, 64), (3, 5, 128), (5, 7, 128))
"""The ``yolo`` stem's body cut where its stride changes: (first layer, layer after the last, channels out)
of the pieces that end at strides 4, 8 and 16. A hierarchical encoder runs its own stages between them
(``YoloStem.run``)."""
FINER_OUTPUTS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "yolo": ((4, 128), (2, 64)),
    "yolo_neck": ((16, 64), (2, 64)),
}
"""Each stem's stride-8 and stride-4 maps on the way to its output: (the layer that gives it, its
channels). In ``yolo_neck`` the stride-8 map is the PAN neck's P3 output, the finest map yolo11n-pose's
pose head reads; the stride-4 map is the backbone's first C3k2. ``YoloStem.pyramid`` returns both beside
the stride-16 features at no extra cost."""
PYRAMID_LEVELS: tuple[tuple[int, int, int], ...] = ((2, 64, 4), (16, 64, 8), (19, 128, 16), (22, 256, 32))
"""The ``yolo_pyramid`` stem's levels: (the layer that gives it, its channels, its stride)."""
_STEM_STRIDE = 16
# the input is padded to a multiple of this
_DEEPEST_STRIDE = {"yolo": 16, "yolo_neck": 32, "yolo_pyramid": 32}


def yolo_stem_body(layers: int) -> nn.ModuleList:
    """The first ``layers`` layers of yolo11n-pose with random weights, each keeping Ultralytics' ``f``
    (the earlier layer(s) it reads; -1 = the one before) so that ``YoloStem`` can route the neck's skip
    connections."""
    from ultralytics.nn.tasks import PoseModel

    model = PoseModel("yolo11n-pose.yaml", verbose=False)
    body = nn.ModuleList(list(model.model)[:layers])
    for module in body.modules():
        if isinstance(module, nn.BatchNorm2d):  # Ultralytics' BatchNorm settings
            module.eps, module.momentum = 1e-3, 0.03
    return body


class YoloStem(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, H/16 * W/16, dim) tokens, for H and W multiples of 16; the
    ``yolo_pyramid`` kind has no projection and gives its levels (``levels``) instead."""

    def __init__(self, dim: int | None, kind: str = "yolo") -> None:
        super().__init__()
        if kind not in STEM_LAYERS:
            raise ValueError(f"unknown stem {kind!r}; known: {', '.join(STEM_LAYERS)}")
        if (dim is None) != (kind == "yolo_pyramid"):
            raise ValueError("the yolo_pyramid stem, and only it, has no projection (dim None)")
        self.kind = kind
        self.keep_statistics = False
        """BatchNorm in eval mode even while training (``freeze_body``)."""
        self.body = yolo_stem_body(STEM_LAYERS[kind])
        self.proj = None if dim is None else nn.Conv2d(YOLO_CHANNELS, dim, kernel_size=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-16 feature map (B, 128, H/16, W/16). The neck needs sides that are multiples of 32:
        others are zero-padded at the right and bottom and the grid cut back afterwards."""
        return self.pyramid(x)[0]

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stride-16 feature map and the stride-8 and stride-4 maps the body computes on the way to it
        (``FINER_OUTPUTS``): (B, 128, H/16, W/16), (B, C8, H/8, W/8), (B, C4, H/4, W/4), from one pass."""
        h, w = x.shape[-2:]
        outputs = self._outputs(x)
        (layer8, _), (layer4, _) = FINER_OUTPUTS[self.kind]
        return (
            outputs[-1][..., : h // _STEM_STRIDE, : w // _STEM_STRIDE],
            outputs[layer8][..., : h // 8, : w // 8],
            outputs[layer4][..., : h // 4, : w // 4],
        )

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The ``yolo_pyramid`` stem's maps (``PYRAMID_LEVELS``), finest first, from one pass: (B, C_i,
        ceil(H / s_i), ceil(W / s_i)) for strides s_i 4, 8, 16 and 32 and H, W multiples of 4."""
        h, w = x.shape[-2:]
        outputs = self._outputs(x)
        return [outputs[layer][..., : -(-h // s), : -(-w // s)] for layer, _, s in PYRAMID_LEVELS]

    def _outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every body layer's output, the input zero-padded at the right and bottom to a multiple of the
        deepest stride."""
        h, w = x.shape[-2:]
        multiple = _DEEPEST_STRIDE[self.kind]
        pad_h, pad_w = -h % multiple, -w % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        outputs: list[torch.Tensor] = []
        for layer in self.body:
            source = layer.f
            if source != -1:
                x = (
                    outputs[source]
                    if isinstance(source, int)
                    else [x if j == -1 else outputs[j] for j in source]
                )
            x = layer(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens (B, h * w, dim) of a stride-16 feature map (B, 128, h, w)."""
        return self.proj(features).flatten(2).transpose(1, 2)

    def run(self, x: torch.Tensor, first: int, stop: int) -> torch.Tensor:
        """Body layers ``first`` to ``stop - 1`` on the map ``x`` (B, C, H, W), one after the other (the
        backbone's layers read only the layer before them); ``YOLO_LEVELS`` names the pieces."""
        for layer in self.body[first:stop]:
            x = layer(x)
        return x

    def init_from_yolo(self, weights: str | Path) -> None:
        """Copy this stem's layers of a yolo11n-pose checkpoint (``yolo11n-pose.pt``) into the body."""
        from ultralytics.nn.tasks import load_checkpoint

        teacher, _ = load_checkpoint(str(weights), device="cpu")
        layers = len(self.body)
        state = {
            key.split(".", 1)[1]: value.float()
            for key, value in teacher.state_dict().items()
            if key.split(".")[1].isdigit() and int(key.split(".")[1]) < layers
        }
        self.body.load_state_dict(state)

    def freeze_body(self, frozen: bool = True, keep_statistics: bool = False) -> None:
        """Freeze (or release) the pose-trained layers; frozen BatchNorm keeps its running statistics, and so
        does a released one with ``keep_statistics`` (its scale and shift still learn: "frozen BN", as
        detection backbones are fine-tuned when batches are small or unlike the inputs at inference)."""
        for p in self.body.parameters():
            p.requires_grad_(not frozen)
        self.keep_statistics = frozen or keep_statistics
        self.body.train(not self.keep_statistics and self.training)

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
        if self.keep_statistics or not next(self.body.parameters()).requires_grad:
            self.body.eval()  # its only train-mode behaviour is BatchNorm's
        return self


def make_stem(kind: str, dim: int, patch: int) -> nn.Module:
    """The patch embedding a pose model's ``stem`` config names: ``patch`` (a linear ``patch`` x ``patch``
    embedding) or one of the ``YoloStem`` depths that end in a token grid (``STEM_LAYERS``)."""
    if kind == "yolo_pyramid":
        raise ValueError(
            "the yolo_pyramid stem gives UniTransPose's four levels; a ViT takes patch, yolo or yolo_neck"
        )
    return PatchEmbed(dim, patch) if kind == "patch" else YoloStem(dim, kind)


def lateral_channels(stem: nn.Module) -> tuple[int, int]:
    """Channels of the stride-8 and stride-4 maps ``stem`` gives a head's lateral connections
    (``DeconvHead``); only the conv stems that end in a token grid have them."""
    if not isinstance(stem, YoloStem) or stem.kind not in FINER_OUTPUTS:
        kind = getattr(stem, "kind", "patch")
        raise ValueError(f"a head's lateral maps come from the yolo or yolo_neck stem, not {kind}")
    (_, c8), (_, c4) = FINER_OUTPUTS[stem.kind]
    return c8, c4


def embed_with_finer(stem: nn.Module, x: torch.Tensor, finer: bool) -> tuple[torch.Tensor, tuple]:
    """``stem``'s tokens (B, N, D) of the crops ``x``, and with ``finer`` its stride-8 and stride-4 maps (for
    a head's lateral connections) from the same pass; else no maps."""
    if not finer:
        return stem(x), ()
    features, stride8, stride4 = stem.pyramid(x)
    return stem.embed(features), (stride8, stride4)
