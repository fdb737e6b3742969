"""UniTransPose (Kinfu and Vidal, "Transformers with Joint Tokens and Local-Global Attention for Efficient
Human Pose Estimation", arXiv 2503.00232, Sec. 4): a four-stage hierarchical encoder of JAGL blocks and a
sub-pixel CNN decoder, predicting the unified skeleton.

The stages run at strides 4, 8, 16 and 32 of the crop, with strided convolutions between them. In a JAGL
(joint-aware global-local) block no patch attends to every patch. Each patch attends to the patches of its
window (``windows``: local patch-to-patch attention, the windows shifted by half in every other block); then
J joint tokens, one per joint, attend to every patch (global aggregation), to one another (reasoning between
joints), and every patch attends to them (the global context re-injected). A block thus costs linear time
in the patches, where a ViT block's cost grows with their square, and still lets any patch inform any other.
The joint tokens are learned once and carry over from stage to stage through a linear map to the next
width. The decoder (``heads.SubPixelDecoder``) brings the four stages' features to stride 4 by pixel shuffle.

Stems:

- ``patch``: a 4x4 patch embedding and strided 3x3 convolutions between the stages, all from random weights,
  for the ablation.
- ``yolo``: the early stages warm-started from yolo11n-pose's pose-trained backbone: its layers 0-2 embed the
  crop at stride 4 with 64 channels, layers 3-4 lead from stage 1 to stage 2 (stride 8, 128 channels) and
  layers 5-6 with the stem's 1x1 projection from stage 2 to stage 3 (stride 16, ``stem.YOLO_LEVELS``), so
  stages 1 and 2 have yolo11n-pose's widths there; a strided convolution leads to stage 4.
- ``yolo_pyramid``: yolo11n-pose through its PAN neck (``stem.PYRAMID_LEVELS``) gives every level a
  pose-trained map: its backbone's stride-4 map and the neck's P3, P4 and P5, each brought to the level's
  width by a 1x1 convolution. The stride-4 level runs no blocks (its map goes to the decoder as it is; at
  stride 4 attention costs the most and the neck's maps already carry the context); each later stage takes
  its neck map plus a strided convolution of the stage before, which starts at zero so that training begins
  from the teacher's features (``UniTransPoseSize.pyramid_depths``).

The crop may be any multiple of 4 pixels a side: a grid that no window size divides is padded inside the
window attention and cut back, and a grid of odd side is halved rounding up.

The model has no run-time knob (``knob.FIXED``): every block runs both paths for every crop. Its record
gives, per stage, the windows (crop-pixel boxes) and the attention the joint tokens gave each patch.
``joint_tokens=False`` builds the local-only ablation: the same stages without the joint-token path, so
that a patch sees beyond its window only through the shifted windows and the downsampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from .heads import SubPixelDecoder
from .knob import FIXED, Knob
from .record import PoseOutput
from .stem import PYRAMID_LEVELS, YOLO_LEVELS, YoloStem
from .vit import DEFAULT_IMG_HW, Block, Mlp, PatchEmbed, attend, init_weights
from .windows import WindowAttention, WindowLayout

STEM_STRIDE = 4
"""Crop pixels per stage-1 patch; each later stage halves the grid."""
STEMS = ("patch", "yolo", "yolo_pyramid")


@dataclass(frozen=True)
class UniTransPoseSize:
    dims: tuple[int, ...]
    """Channels of each stage."""
    depths: tuple[int, ...]
    """JAGL blocks of each stage."""
    heads: tuple[int, ...]
    local_depths: tuple[int, ...]
    """Blocks of each stage in the local-only ablation (``joint_tokens=False``): the multiply-adds of the
    joint-token path spent on more stage-3 blocks, so that both variants cost about the same."""
    pyramid_depths: tuple[int, ...]
    """Blocks of each stage on the ``yolo_pyramid`` stem: none at stride 4, the rest deeper."""
    pyramid_local_depths: tuple[int, ...]
    """The same for the local-only ablation, at about the same cost."""
    window: int = 8
    """Largest window side, in patches (``WindowLayout.fit``)."""
    mlp_ratio: float = 4.0


SIZES: dict[str, UniTransPoseSize] = {
    "t": UniTransPoseSize(
        dims=(64, 128, 192, 256),
        depths=(1, 2, 3, 1),
        heads=(2, 4, 6, 8),
        local_depths=(1, 2, 7, 1),
        pyramid_depths=(0, 1, 4, 1),
        pyramid_local_depths=(0, 1, 7, 1),
    ),
    "s": UniTransPoseSize(
        dims=(64, 128, 256, 384),
        depths=(2, 2, 6, 2),
        heads=(2, 4, 8, 12),
        local_depths=(2, 2, 11, 2),
        pyramid_depths=(0, 2, 8, 2),
        pyramid_local_depths=(0, 2, 14, 2),
    ),
}
"""32 channels a head. Stages 1 and 2 have yolo11n-pose's widths, so that both sizes take the ``yolo`` stem.
At 256x192: T 1.46 GFLOPs and 8.3 M parameters, S 2.99 GFLOPs and 25.6 M (EViTPose-T and -S at keep 1.0:
1.64 and 5.31 GFLOPs, 6.2 and 22.7 M)."""


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, n, C) to other tokens (B, m, C), which give the keys and values."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attended values (B, n, C), and with ``weights`` the attention (B, heads, n, m)."""
        (b, n, d), m = x.shape, context.shape[1]
        q = self.q(x).reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
        k, v = self.kv(context).reshape(b, m, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out, attention = attend(q, k, v, rows=n if weights else 0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), attention


class JointTokenAttention(nn.Module):
    """The global path of a JAGL block: the joint tokens gather from every patch, reason among themselves
    (a transformer block on the J tokens) and every patch reads them back."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_patches = nn.LayerNorm(dim, eps=1e-6)
        self.norm_joints = nn.LayerNorm(dim, eps=1e-6)
        self.gather = CrossAttention(dim, heads)
        self.reason = Block(dim, heads, mlp_ratio)
        self.norm_context = nn.LayerNorm(dim, eps=1e-6)
        self.scatter = CrossAttention(dim, heads)

    def forward(
        self, patches: torch.Tensor, joints: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patches (B, N, C) and joint tokens (B, J, C), both updated, and the attention the joint tokens
        gave each patch, averaged over heads and joints (B, N)."""
        normed = self.norm_patches(patches)
        gathered, attention = self.gather(self.norm_joints(joints), normed, weights=True)
        joints, _ = self.reason(joints + gathered)
        context, _ = self.scatter(normed, self.norm_context(joints))
        return patches + context, joints, attention.mean(dim=(1, 2))


class JAGLBlock(nn.Module):
    """Joint-aware global-local block: window attention, the joint-token path, then an MLP (all pre-norm,
    residual). Patches are (B, rows, cols, C), joint tokens (B, J, C); without ``global_path`` the block is
    window attention and the MLP alone (the local-only ablation) and the joint tokens are None."""

    def __init__(
        self, dim: int, heads: int, layout: WindowLayout, mlp_ratio: float, global_path: bool = True
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.local = WindowAttention(dim, heads, layout)
        self.joint = JointTokenAttention(dim, heads, mlp_ratio) if global_path else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, joints: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Patches and joint tokens, updated, and the joint tokens' attention to each patch (B, N), None
        without the joint-token path."""
        b, rows, cols, d = x.shape
        x = x + self.local(self.norm1(x))
        patches, attention = x.reshape(b, rows * cols, d), None
        if self.joint is not None:
            patches, joints, attention = self.joint(patches, joints)
        patches = patches + self.mlp(self.norm2(patches))
        return patches.reshape(b, rows, cols, d), joints, attention


class Stage(nn.Module):
    """``depth`` JAGL blocks on one grid, the odd ones with shifted windows."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        grid: tuple[int, int],
        window: int,
        mlp_ratio: float,
        global_path: bool = True,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.layout = WindowLayout.fit(grid, window)
        shifted = WindowLayout.fit(grid, window, shifted=True)
        self.blocks = nn.ModuleList(
            JAGLBlock(dim, heads, shifted if i % 2 else self.layout, mlp_ratio, global_path)
            for i in range(depth)
        )

    def forward(
        self, x: torch.Tensor, joints: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Patches (B, rows, cols, C) and joint tokens (B, J, C) through the blocks, and the joint tokens'
        attention to each patch averaged over the blocks (B, rows, cols), None without joint tokens."""
        seen = None
        for block in self.blocks:
            x, joints, attention = block(x, joints)
            if attention is not None:
                seen = attention if seen is None else seen + attention
        if seen is None:
            return x, joints, None
        return x, joints, (seen / len(self.blocks)).reshape(-1, *self.grid)


class Downsample(nn.Module):
    """Between stages: LayerNorm and a strided 3x3 convolution, (B, h, w, C) -> (B, h', w', C'), h' and w'
    the halves rounded up."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.conv = nn.Conv2d(dim, out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class UniTransPose(nn.Module):
    knob: Knob = FIXED

    def __init__(
        self,
        size: UniTransPoseSize,
        num_joints: int,
        img_hw: tuple[int, int] = DEFAULT_IMG_HW,
        stem: str = "patch",
        joint_tokens: bool = True,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(
                f"UniTransPose's stem is one of {', '.join(STEMS)} (yolo11n-pose's layers), not {stem!r}"
            )
        widths = tuple(channels for _, _, channels in YOLO_LEVELS[:-1])
        if stem == "yolo" and tuple(size.dims[: len(widths)]) != widths:
            raise ValueError(f"the yolo stem needs stages as wide as yolo11n-pose's {widths}: {size.dims}")
        if img_hw[0] % STEM_STRIDE or img_hw[1] % STEM_STRIDE:
            raise ValueError(f"UniTransPose needs a crop of multiples of {STEM_STRIDE} pixels, not {img_hw}")
        dims = size.dims
        self.size, self.num_joints, self.patch = size, num_joints, STEM_STRIDE
        self.img_hw = tuple(img_hw)
        self.input_size = (img_hw[1], img_hw[0])
        """(w, h) of the crops it takes."""
        self.grid = (img_hw[0] // STEM_STRIDE, img_hw[1] // STEM_STRIDE)
        """The stride-4 grid, the heatmaps' and the record's stride-4 maps'."""
        pyramid = stem == "yolo_pyramid"
        if pyramid:
            depths = size.pyramid_depths if joint_tokens else size.pyramid_local_depths
        else:
            depths = size.depths if joint_tokens else size.local_depths
        self.first = next(i for i, depth in enumerate(depths) if depth)
        """The first stage that runs blocks: the position embedding and the joint tokens start there."""
        last_yolo = len(YOLO_LEVELS) - 1  # the stage the yolo stem's projection feeds
        if stem == "patch":
            self.patch_embed = PatchEmbed(dims[0], STEM_STRIDE)
        else:
            self.patch_embed = YoloStem(None if pyramid else dims[last_yolo], stem)
        self.lateral = (
            nn.ModuleList(
                nn.Conv2d(channels, dim, 1)
                for (_, channels, _), dim in zip(PYRAMID_LEVELS, dims, strict=True)
            )
            if pyramid
            else None
        )
        first_own = 1 if stem != "yolo" else last_yolo + 1
        self.downsample = nn.ModuleDict(
            {str(i): Downsample(dims[i - 1], dims[i]) for i in range(first_own, len(dims))}
        )
        grids = [self.grid]
        for _ in dims[1:]:
            grids.append(((grids[-1][0] + 1) // 2, (grids[-1][1] + 1) // 2))
        first_grid = grids[self.first]
        self.pos_embed = nn.Parameter(torch.zeros(1, first_grid[0] * first_grid[1], dims[self.first]))
        self.joint_tokens = (
            nn.Parameter(torch.zeros(1, num_joints, dims[self.first])) if joint_tokens else None
        )
        self.joint_proj = nn.ModuleList(
            nn.Linear(a, b) for a, b in pairwise(dims[self.first :]) if joint_tokens
        )
        self.stages = nn.ModuleList(
            Stage(dim, depth, heads, grid, size.window, size.mlp_ratio, joint_tokens)
            for dim, depth, heads, grid in zip(dims, depths, size.heads, grids, strict=True)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for dim in dims)
        self.head = SubPixelDecoder(dims, num_joints)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.joint_tokens is not None:
            nn.init.trunc_normal_(self.joint_tokens, std=0.02)
        self.apply(init_weights)
        if pyramid:  # each stage starts from its neck map alone
            for down in self.downsample.values():
                nn.init.zeros_(down.conv.weight)
                nn.init.zeros_(down.conv.bias)
        crop = torch.tensor([img_hw[1], img_hw[0]] * 2)
        for i in range(self.first, len(self.stages)):
            boxes = torch.minimum(self.stages[i].layout.boxes() * (STEM_STRIDE << i), crop)
            self.register_buffer(f"window_boxes{i}", boxes, persistent=False)

    def _stage_input(self, i: int, x: torch.Tensor, levels: list[torch.Tensor] | None) -> torch.Tensor:
        """The input (B, rows, cols, C) of stage ``i`` (from 0): from the crop (B, 3, H, W) for the first,
        else from stage ``i - 1``'s output; on the pyramid stem, plus the stem's level ``i``."""
        if levels is not None:
            lateral = self.lateral[i](levels[i]).permute(0, 2, 3, 1)
            return lateral if i == 0 else lateral + self.downsample[str(i)](x)
        if isinstance(self.patch_embed, YoloStem) and i < len(YOLO_LEVELS):
            maps = self.patch_embed.run(x if i == 0 else x.permute(0, 3, 1, 2), *YOLO_LEVELS[i][:2])
            if i == len(YOLO_LEVELS) - 1:
                maps = self.patch_embed.proj(maps)
            return maps.permute(0, 2, 3, 1)
        if i == 0:
            return self.patch_embed(x).reshape(x.shape[0], *self.grid, -1)
        return self.downsample[str(i)](x)

    def forward(self, x: torch.Tensor, knob: float | None = None) -> PoseOutput:
        b = x.shape[0]
        levels = self.patch_embed.levels(x) if self.lateral is not None else None
        joints = None if self.joint_tokens is None else self.joint_tokens.repeat(b, 1, 1)
        carried = 0 if joints is None else self.num_joints
        maps, attention, counts = [], [], []
        for i, stage in enumerate(self.stages):
            x = self._stage_input(i, x, levels)
            if i == self.first:
                x = x + self.pos_embed.reshape(1, *stage.grid, -1)
            elif i > self.first and joints is not None:
                joints = self.joint_proj[i - self.first - 1](joints)
            x, joints, seen = stage(x, joints)
            maps.append(self.norms[i](x).permute(0, 3, 1, 2))
            if seen is not None:
                attention.append(seen)
            counts += [stage.grid[0] * stage.grid[1] + carried] * len(stage.blocks)
        return PoseOutput(
            self.head(maps),
            torch.tensor(counts, dtype=torch.long).expand(b, -1).clone(),
            self.knob.clamp(knob),
            self.grid,
            joint_attention=attention,
            window_boxes=[
                getattr(self, f"window_boxes{i}").expand(b, -1, -1) for i in range(self.first, len(maps))
            ],
        )
