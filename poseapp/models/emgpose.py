"""EMGPose: a cheap coarse pass, and a multi-granularity pass only where the coarse one is not enough.

Coarse stage: the half-resolution crop (8x6 patches) with T keypoint tokens and one quality token.
A quality predictor reads the quality token; a sample with predicted quality ``Q > eta`` stops there.
The others go through the multi-granularity stage: the keypoint-to-patch attention, averaged over heads
and keypoints and smoothed by an EMA over layers (GKIS), ranks the coarse patches; the top ``r_h`` share
is re-cut into 3x3 patches (from the 1.5x image), the bottom ``r_l`` share stays whole (half-resolution
patch), the rest becomes 2x2 (full resolution). Coarse output features are reused (MLP, interpolated to
the finer grids) and WBAS merges tokens at the merge layers. Blocks and head are shared by both stages.
With a conv stem (``stem="yolo"`` or ``"yolo_neck"``) the tokens come from feature maps, not from cut-out
patches (a convolution needs the context around a patch), and the fine stage runs the stem once, on the full
crop: its stride-16 map gives the 2x2 cells, and the 3x3 cells (stride 32/3) are that map and the stem's
stride-8 map resampled to their grid, the latter through a projection of its own. Running the stem again on
the 1.5x image instead would cost 2.25 full passes for the tenth of the cells cut 3x3, which made the
stem most of EMGPose's time.

Two heads, as in EViTPose: ``"tokens"`` (the paper's: each keypoint token through an MLP to its heatmap)
and ``"grid"`` (the image tokens laid back onto the full-resolution patch grid, then a deconvolution
head). On the grid, every token merged away keeps its own features from the moment it was merged plus
what the token it went into learned afterwards (a residual form of ToMe's unmerge), and each cell
is the area-weighted mean of the tokens whose boxes cover it; the coarse stage's cells are each spread
over 2x2 grid cells. The grid head learns faster than the token head, as in EViTPose.

In inference the coarse stage's head runs only for the crops that stop there: a crop that goes on gets its
heatmaps from the fine stage, so its coarse heatmaps would be thrown away. Training (whose loss reads them)
and ``coarse_for_all`` (calibration, which compares both stages per person) draw them for every crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .heads import DeconvHead, TokenHeatmapHead, heatmap_hw
from .knob import Knob
from .record import PoseOutput
from .stem import FINER_OUTPUTS, YoloStem, make_stem
from .vit import DEFAULT_IMG_HW, Block, Mlp, ViTSize, init_weights, patch_importance
from .wbas import wbas_merge

SPLITS = (1, 2, 3)
"""Granularity levels: a coarse cell is cut into s x s patches of side ``patch`` at scale s/2."""


def _child_table(rows: int, cols: int, split: int) -> torch.Tensor:
    """For each coarse cell (row-major), the indices of its ``split`` x ``split`` children in the grid
    ``split`` times finer, (rows * cols, split * split)."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    dr, dc = torch.meshgrid(torch.arange(split), torch.arange(split), indexing="ij")
    fine_r = r.reshape(-1, 1) * split + dr.reshape(1, -1)
    fine_c = c.reshape(-1, 1) * split + dc.reshape(1, -1)
    return fine_r * (cols * split) + fine_c


def _box_table(rows: int, cols: int, cell: float) -> torch.Tensor:
    """Crop-pixel boxes (x0, y0, x1, y1) of a rows x cols grid of ``cell``-sized squares, row-major."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    r, c = r.reshape(-1).float(), c.reshape(-1).float()
    return torch.stack([c * cell, r * cell, (c + 1) * cell, (r + 1) * cell], dim=1)


def unmerge(
    final: torch.Tensor, before: list[torch.Tensor], after: list[torch.Tensor], groups: list[torch.Tensor]
) -> torch.Tensor:
    """Features (B, n, D) of the tokens before the first merge, from the merged tokens ``final`` (B, m, D).

    Per merge, ``before`` holds the tokens that went in, ``after`` those that came out and ``groups``
    (B, n_in) the output index of every input token (``wbas_merge``). Each token keeps its own features
    from the moment it was merged and adds what its token learned afterwards; a token never merged gets
    its final features. Giving each merged token just its group's features (ToMe's unmerge) would blur the
    heatmaps: every member of a group would get the same features, so the cells they cover could no longer
    tell one position from another; this form keeps what told them apart when they were merged."""
    features = final
    for tokens_in, tokens_out, dest in zip(reversed(before), reversed(after), reversed(groups), strict=True):
        features = tokens_in + _take(features - tokens_out, dest)
    return features


def cover_weights(boxes: torch.Tensor, rows: int, cols: int, cell: float) -> torch.Tensor:
    """(B, rows * cols, N) share of each grid cell (row-major, ``cell`` pixels square) covered by each of
    the token boxes (B, N, 4) (x0, y0, x1, y1 crop pixels); rows sum to 1 where the boxes tile the crop."""
    cells = _box_table(rows, cols, cell).to(boxes)
    x0 = torch.maximum(cells[None, :, None, 0], boxes[:, None, :, 0])
    y0 = torch.maximum(cells[None, :, None, 1], boxes[:, None, :, 1])
    x1 = torch.minimum(cells[None, :, None, 2], boxes[:, None, :, 2])
    y1 = torch.minimum(cells[None, :, None, 3], boxes[:, None, :, 3])
    return (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0) / cell**2


def _take(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows`` (B, N, C) at ``index`` (B, k) -> (B, k, C)."""
    return rows.gather(1, index.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))


def _spread(rows: torch.Tensor, at: torch.Tensor | slice, batch: int, fill: float) -> torch.Tensor:
    """``rows`` (k, ...) of the crops ``at`` (k indices, or ``slice(None)``: all, returned as they are) laid
    into a batch of ``batch``, the other crops' rows ``fill``."""
    if isinstance(at, slice):
        return rows
    return rows.new_full((batch, *rows.shape[1:]), fill).index_put((at,), rows)


def _resized(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A (B, D, h, w) feature grid bilinearly resampled to rows x cols (as is when it already fits)."""
    if grid.shape[-2:] == (rows, cols):
        return grid
    return F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)


def _zero_fine_proj_where_absent(module: EMGPose, state: dict, prefix: str, *_args) -> None:
    """Load-time upgrade of conv-stem checkpoints from before the fine stage's single stem pass (2026-12-03),
    which have no stride-8 projection: it loads as zero, so their 3x3 cells come from the full crop's
    stride-16 map instead of a stem pass on the 1.5x crop (a warm start for the new layout)."""
    for name in ("weight", "bias"):
        state.setdefault(f"{prefix}fine_proj.{name}", torch.zeros_like(getattr(module.fine_proj, name)))


class EMGPose(nn.Module):
    def __init__(
        self,
        size: ViTSize,
        num_joints: int,
        img_hw: tuple[int, int] = DEFAULT_IMG_HW,
        patch: int = 16,
        r_h: float = 0.1,
        r_l: float = 0.4,
        r_head: float = 0.5,
        r_last: float = 0.1,
        merge_layers: tuple[int, ...] = (4, 7, 10),
        ema_beta: float = 0.98,
        ema_start: int = 4,
        head_hidden: int = 384,
        head: str = "grid",
        head_channels: int = 128,
        stem: str = "patch",
        eta: float = 0.5,
    ) -> None:
        """``eta``: the default threshold (a trained checkpoint stores the one ``calibrate`` chose for it)."""
        super().__init__()
        self.knob = Knob("eta", low=0.0, high=1.0, default=eta)
        dim = size.dim
        self.size, self.num_joints, self.patch = size, num_joints, patch
        self.r_h, self.r_l, self.r_head, self.r_last = r_h, r_l, r_head, r_last
        self.merge_layers, self.ema_beta, self.ema_start = tuple(merge_layers), ema_beta, ema_start
        if img_hw[0] % (2 * patch) or img_hw[1] % (2 * patch):
            raise ValueError(f"EMGPose needs a crop of multiples of {2 * patch} pixels, not {img_hw}")
        self.img_hw = img_hw
        self.input_size = (img_hw[1], img_hw[0])
        """(w, h) of the crops it takes."""
        self.grid = (img_hw[0] // (2 * patch), img_hw[1] // (2 * patch))
        self.patch_embed = make_stem(stem, dim, patch)
        self.pos_coarse = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        self.pos_fine = nn.Parameter(torch.zeros(1, dim, 2 * self.grid[0], 2 * self.grid[1]))
        self.keypoint_tokens = nn.Parameter(torch.zeros(1, num_joints, dim))
        self.quality_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, size.heads, size.mlp_ratio) for _ in range(size.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        if head not in ("grid", "tokens"):
            raise ValueError(f"EMGPose head must be 'grid' or 'tokens', not {head!r}")
        self.head_type = head
        self.head = (
            DeconvHead(dim, num_joints, head_channels)
            if head == "grid"
            else TokenHeatmapHead(dim, head_hidden, heatmap_hw(img_hw))
        )
        self.quality = Mlp(dim, dim, 1)
        self.reuse = Mlp(dim, dim)
        self.fine_proj: nn.Conv2d | None = None
        """Conv stem: the stride-8 map's projection into the 3x3 cells' tokens."""
        if isinstance(self.patch_embed, YoloStem):
            self.fine_proj = nn.Conv2d(FINER_OUTPUTS[stem][0][1], dim, kernel_size=1)
        for p in (self.pos_coarse, self.pos_fine, self.keypoint_tokens, self.quality_token):
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(init_weights)
        if self.fine_proj is not None:  # zero: the 3x3 cells start from the stride-16 map alone
            nn.init.zeros_(self.fine_proj.weight)
            nn.init.zeros_(self.fine_proj.bias)
            self.register_load_state_dict_pre_hook(_zero_fine_proj_where_absent)
        self.coarse_for_all = False
        """Draw the coarse heatmaps of every crop in eval mode too, not only of those that stop at the coarse
        stage (``eta_curve`` compares both stages' poses of every person)."""
        rows, cols = self.grid
        for s in SPLITS:
            boxes = _box_table(rows * s, cols * s, 2 * patch / s)
            self.register_buffer(f"children{s}", _child_table(rows, cols, s), persistent=False)
            self.register_buffer(f"boxes{s}", boxes, persistent=False)
            # Each token's share of every cell of the head's grid, (tokens of this scale, grid cells): the
            # fine stage gathers its tokens' rows instead of intersecting their boxes with the grid per call.
            cover = cover_weights(boxes[None], 2 * rows, 2 * cols, patch)[0].T.contiguous()
            self.register_buffer(f"cover{s}", cover, persistent=False)

    def split_counts(self) -> tuple[int, int, int]:
        """Coarse patches cut 3x3, 2x2 and kept whole."""
        n = self.grid[0] * self.grid[1]
        high, low = math.floor(n * self.r_h), math.floor(n * self.r_l)
        return high, n - high - low, low

    def fine_tokens(self) -> int:
        high, mid, low = self.split_counts()
        return 9 * high + 4 * mid + low

    def forward(self, x: torch.Tensor, eta: float | None = None, route: bool | None = None) -> PoseOutput:
        """``route`` None: each crop goes on to the fine stage when its predicted quality is at most ``eta``.
        True or False: every crop goes on, or none does, whatever its quality (a graph without
        data-dependent branches, which is what an ONNX export can hold)."""
        eta = self.knob.clamp(eta)
        b, j = x.shape[0], self.num_joints
        n = self.grid[0] * self.grid[1]
        embedded = self.patch_embed(F.avg_pool2d(x, 2))
        coarse = embedded + self.pos_coarse
        tokens = torch.cat(
            [self.keypoint_tokens.expand(b, -1, -1), coarse, self.quality_token.expand(b, -1, -1)], dim=1
        )
        gkis = torch.zeros(b, n, device=x.device)
        for layer, block in enumerate(self.blocks, start=1):
            track = layer >= self.ema_start
            tokens, weights = block(tokens, rows=j if track else 0)
            if track:
                gkis = self.ema_beta * gkis + (1 - self.ema_beta) * patch_importance(weights, j, n)
        tokens = self.norm(tokens)
        quality = self.quality(tokens[:, -1]).squeeze(-1).sigmoid()
        fine = quality <= eta if route is None else torch.full_like(quality, route, dtype=torch.bool)
        if route is None:
            ids = fine.nonzero().squeeze(1)  # which crops go on (one host sync)
            going = len(ids)
        else:
            ids, going = None, b if route else 0

        depth = len(self.blocks)
        counts = torch.zeros(b, 2 * depth, dtype=torch.long)
        counts[:, :depth] = tokens.shape[1]
        granularity = torch.zeros(b, *self.grid, dtype=torch.long, device=x.device)
        coarse_maps = None  # every crop's coarse heatmaps, where they are drawn (the record keeps them)
        if going == 0 or self.training or self.coarse_for_all:
            coarse_maps = self._coarse_heatmaps(tokens, j)
        if going == 0:
            return PoseOutput(
                coarse_maps, counts, eta, self.grid, granularity=granularity, fine_stage=fine,
                quality=quality, coarse_heatmaps=coarse_maps,
            )  # fmt: skip

        on = slice(None) if going == b else ids  # the whole batch goes on without gathers or scatters
        fine_maps, fine_counts, level, boxes, groups = self._fine_stage(
            x[on], embedded[on], tokens[on, j : j + n], gkis[on]
        )
        counts[on if going == b else ids.cpu(), depth:] = fine_counts
        granularity[on] = level.reshape(-1, *self.grid)
        if going == b:
            heatmaps = fine_maps
        else:
            stopped_maps = coarse_maps
            if stopped_maps is None:  # the coarse head only for the crops that stop at the coarse stage
                stopped = (~fine).nonzero().squeeze(1)
                stopped_maps = _spread(self._coarse_heatmaps(tokens[stopped], j), stopped, b, 0.0)
            heatmaps = stopped_maps.index_put((ids,), fine_maps)
        return PoseOutput(
            heatmaps, counts, eta, self.grid, granularity=granularity, token_boxes=_spread(boxes, on, b, 0.0),
            merge_groups=[_spread(g, on, b, -1) for g in groups], fine_stage=fine, quality=quality,
            coarse_heatmaps=coarse_maps,
        )  # fmt: skip

    def _fine_stage(
        self, x: torch.Tensor, embedded: torch.Tensor, coarse_features: torch.Tensor, gkis: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``embedded``: the coarse stage's patch tokens before position embedding, which are also the
        tokens of the cells kept whole."""
        b, j = x.shape[0], self.num_joints
        rows, cols = self.grid
        high, mid, low = self.split_counts()
        order = gkis.argsort(dim=1, descending=True)
        chosen = {3: order[:, :high], 2: order[:, high : high + mid], 1: order[:, high + mid :]}
        level = torch.empty_like(order)
        batch = torch.arange(b, device=x.device).unsqueeze(1)
        for s, cells in chosen.items():
            level[batch, cells] = s

        if isinstance(self.patch_embed, YoloStem):
            cells, images = self._stem_cells(x), None
        else:
            cells, images = None, {2: x, 3: F.interpolate(x, scale_factor=1.5, mode="bilinear")}
        reuse = self.reuse(coarse_features).transpose(1, 2).reshape(b, -1, rows, cols)
        pieces, boxes, indices = [], [], []
        for s in (3, 2, 1):
            index = getattr(self, f"children{s}")[chosen[s]].flatten(1)
            indices.append((s, index))
            grids = _resized(self.pos_fine, rows * s, cols * s) + _resized(reuse, rows * s, cols * s)
            extra = _take(grids.flatten(2).transpose(1, 2), index)
            if s == 1:
                own = _take(embedded, index)
            elif cells is not None:
                own = _take(cells[s], index)
            else:
                own = self._embed_patches(images[s], index)
            pieces.append(own + extra)
            boxes.append(getattr(self, f"boxes{s}")[index])
        tokens = torch.cat([self.keypoint_tokens.expand(b, -1, -1), *pieces], dim=1)

        counts, groups, before, after = [], [], [], []
        for layer, block in enumerate(self.blocks, start=1):
            merge = layer in self.merge_layers
            counts.append(tokens.shape[1])
            tokens, weights = block(tokens, rows=j if merge else 0)
            if merge:
                importance = patch_importance(weights, j, tokens.shape[1] - j)
                merged, dest = wbas_merge(tokens[:, j:], importance, self.r_head, self.r_last)
                before.append(tokens[:, j:])
                after.append(merged)
                tokens = torch.cat([tokens[:, :j], merged], dim=1)
                groups.append(dest)
        boxes = torch.cat(boxes, dim=1)
        if self.head_type == "tokens":
            heatmaps = self.head(self.norm(tokens)[:, :j])
        else:
            features = unmerge(tokens[:, j:], before, after, groups)
            cover = torch.cat(
                [_take(getattr(self, f"cover{s}").expand(b, -1, -1), index) for s, index in indices], 1
            )
            grid = cover.transpose(1, 2) @ self.norm(features)
            heatmaps = self.head(grid.transpose(1, 2).reshape(b, -1, 2 * rows, 2 * cols))
        return heatmaps, torch.tensor(counts), level, boxes, groups

    def _stem_cells(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Conv stem: the tokens (B, N_s, D) of every cell of the 2x2 (s = 2) and 3x3 (s = 3) grids, from one
        stem pass over the full crop."""
        rows, cols = self.grid
        stride16, stride8, _ = self.patch_embed.pyramid(x)
        full = self.patch_embed.proj(stride16)
        thirds = _resized(full, 3 * rows, 3 * cols) + self.fine_proj(_resized(stride8, 3 * rows, 3 * cols))
        return {2: full.flatten(2).transpose(1, 2), 3: thirds.flatten(2).transpose(1, 2)}

    def _embed_patches(self, image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Patch stem: tokens (B, k, D) of the patches ``index`` (B, k) of ``image``'s patch grid, cut out
        and projected."""
        p = self.patch
        pixels = F.unfold(image, kernel_size=p, stride=p).transpose(1, 2)
        return self.patch_embed.embed_patches(_take(pixels, index))

    def _coarse_heatmaps(self, tokens: torch.Tensor, j: int) -> torch.Tensor:
        """Heatmaps of the coarse stage from its normalised tokens [keypoints, patches, quality]."""
        if self.head_type == "tokens":
            return self.head(tokens[:, :j])
        rows, cols = self.grid
        grid = tokens[:, j : j + rows * cols].transpose(1, 2).reshape(tokens.shape[0], -1, rows, cols)
        return self.head(F.interpolate(grid, scale_factor=2, mode="nearest"))
