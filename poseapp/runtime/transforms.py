"""Top-down crop conventions and the heatmap codec, shared by inference, training and evaluation.

The runtime crops and decodes with these functions; the training data (``poseapp.data``) makes its crops
and targets with the same ones, so a model sees at inference the crops and heatmaps it learned on.

Conventions
-----------
* Points are continuous pixel coordinates ``(x, y)`` as in ``poseapp.geometry``; an image ``W`` pixels wide
  spans ``x`` in ``[-0.5, W - 0.5]``. Affine matrices are 2x3 and map source points to destination points
  (``geometry.transform_points``).
* Sizes are ``(w, h)``. The default model input is ``INPUT_SIZE``; a model's heatmaps are its input at
  ``HEATMAP_STRIDE`` (``heatmap_size``), ``HEATMAP_SIZE`` for the default input.
* Heatmap coordinate of an input point: ``u = (x + 0.5) / stride - 0.5`` (same for ``y``), i.e. cell ``u``
  covers input ``x`` in ``[u * stride - 0.5, (u + 1) * stride - 0.5]``. Both edges of the input map onto both
  edges of the heatmap, so mirroring a heatmap's columns mirrors ``x`` to ``input_w - 1 - x`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ..geometry import invert_matrix

INPUT_SIZE: tuple[int, int] = (192, 256)
HEATMAP_STRIDE = 4


def heatmap_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) of the heatmaps a model with crops of ``input_size`` (w, h) predicts."""
    return input_size[0] // HEATMAP_STRIDE, input_size[1] // HEATMAP_STRIDE


HEATMAP_SIZE: tuple[int, int] = heatmap_size(INPUT_SIZE)

# Decoding: the coarse peak is the argmax of a lightly blurred map (robust to single-cell spikes), then a
# Gaussian is fitted around it: a weighted least-squares quadratic fit to the log of the raw map over a
# (2r+1)^2 window. Unlike DARK's blur-then-Taylor, this is exact for a Gaussian peak anywhere, including at
# the map border (blurring a border-truncated Gaussian shifts its peak by several input pixels).
_COARSE_SIGMA = 1.0
_FIT_RADIUS = 3
_LOG_FLOOR = 1e-10
_RIDGE = 1e-6
_NEGLIGIBLE = 1e-30
"""Map values and fit weights below this are zero for decoding. Far from the peak a softmax map and the
blur's tails reach float32's subnormal range, where x86 arithmetic runs about 100 times slower (it made
decoding several times slower, ``docs/speed.md``); nothing this small moves the argmax or the fit."""


TRAIN_PADDING = 1.25
"""A training crop is the person box enlarged by this (then scaled by 0.75-1.25 by augmentation)."""
CROP_PADDING = 1.0
"""A top-down inference crop (models, teachers, validation) is the person box itself at the crop's aspect.
Tighter than the median training crop, so the person gets more of a small crop's pixels; still inside the
range the models train on (``TRAIN_PADDING`` times augmentation's 0.75-1.25 reaches down to 0.94)."""


def box_to_center_scale(
    box_xywh: Sequence[float] | np.ndarray, aspect: float = 192 / 256, padding: float = TRAIN_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Crop window for a box ``(x, y, w, h)`` ((x, y) = top-left corner): its centre and size ``(w, h)``.

    The box is enlarged by ``padding``, then the short side (relative to ``aspect`` = w / h) is extended so
    that w / h == aspect; neither side is ever shrunk. Accepts a batch ``(..., 4)`` too.
    """
    box = np.asarray(box_xywh, dtype=np.float64)
    center = box[..., :2] + box[..., 2:] / 2
    w, h = box[..., 2] * padding, box[..., 3] * padding
    size = np.stack([np.maximum(w, h * aspect), np.maximum(h, w / aspect)], axis=-1)
    return center, size


def crop_matrix(
    center: Sequence[float] | np.ndarray,
    size: Sequence[float] | np.ndarray,
    rotation_deg: float = 0.0,
    out_size: tuple[int, int] = INPUT_SIZE,
) -> np.ndarray:
    """Affine 2x3 matrix mapping image coordinates to crop coordinates.

    The window of ``size`` (w, h) centred at ``center`` fills the ``out_size`` (w, h) crop exactly: its
    edges land on the crop's outer pixel edges (-0.5 and out - 0.5). A positive ``rotation_deg`` turns the
    window counter-clockwise as seen on screen in the image (y pointing down), so the content appears turned
    clockwise in the crop (the opposite sign to ``cv2.getRotationMatrix2D``, which turns the content).
    """
    center = np.asarray(center, dtype=np.float64)
    size = np.asarray(size, dtype=np.float64)
    out = np.asarray(out_size, dtype=np.float64)
    theta = np.deg2rad(rotation_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    # Rows: the window's x and y axes in image coordinates, (cos, -sin) and (sin, cos).
    rotation = np.array([[cos, -sin], [sin, cos]])
    linear = (out / size)[:, None] * rotation
    shift = out / 2 - 0.5 - linear @ center
    return np.concatenate([linear, shift[:, None]], axis=1)


def crop_image(image: np.ndarray, m: np.ndarray, out_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Warp ``image`` (H, W, 3) with the image->crop matrix ``m``; outside the image is black."""
    return cv2.warpAffine(
        image, np.asarray(m, dtype=np.float64), (int(out_size[0]), int(out_size[1])), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )  # fmt: skip


def _strides(heatmap_size: Sequence[int], input_size: Sequence[int]) -> np.ndarray:
    return np.asarray(input_size, dtype=np.float64) / np.asarray(heatmap_size, dtype=np.float64)


def encode_heatmaps(
    xy: np.ndarray,
    visibility: np.ndarray,
    sigma: float = 2.0,
    heatmap_size: tuple[int, int] = HEATMAP_SIZE,
    input_size: tuple[int, int] = INPUT_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian targets (J, H, W) float32 and weights (J,) float32 for joints ``xy`` (J, 2) in crop pixels.

    Each target is an unnormalised Gaussian (peak 1 at the sub-pixel location, ``sigma`` in heatmap cells).
    A joint gets weight 1 only if ``visibility > 0`` and it lies on the heatmap (input x in
    [-0.5, input_w - 0.5], same for y); otherwise its weight is 0 and its target all zeros.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    hm_w, hm_h = heatmap_size
    mu = (xy + 0.5) / _strides(heatmap_size, input_size) - 0.5
    inside = np.all((mu >= -0.5) & (mu <= np.array([hm_w, hm_h]) - 0.5), axis=1)
    weights = (np.asarray(visibility).reshape(-1) > 0) & inside
    mu = np.where(weights[:, None], mu, 0.0)  # keeps NaN coordinates of unlabelled joints out of the maths
    gx = np.exp(-((np.arange(hm_w) - mu[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((np.arange(hm_h) - mu[:, 1:]) ** 2) / (2 * sigma**2))
    targets = gy[:, :, None] * gx[:, None, :] * weights[:, None, None]
    return targets.astype(np.float32), weights.astype(np.float32)


def _flush(values: torch.Tensor) -> torch.Tensor:
    """``values`` with those of magnitude below ``_NEGLIGIBLE`` set to 0."""
    return values.masked_fill(values.abs() < _NEGLIGIBLE, 0)


def _blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps with zero padding (as two banded matmuls: fast on CPU),
    the kernel cut at 4 sigma."""

    def band(n: int) -> torch.Tensor:
        taps = torch.arange(n, dtype=maps.dtype, device=maps.device)
        distance = (taps[:, None] - taps[None, :]).abs()
        return torch.exp(-(distance**2) / (2 * sigma**2)).masked_fill(distance > 4 * sigma, 0)

    return band(maps.shape[-2]) @ _flush(maps) @ band(maps.shape[-1])


def _decode(heatmaps: torch.Tensor, input_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    *lead, h, w = heatmaps.shape
    dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
    maps = heatmaps.reshape(-1, h, w).to(dtype)
    flat = maps.flatten(1)
    scores = flat.amax(dim=1)

    coarse = _blur(maps, _COARSE_SIGMA).flatten(1).argmax(dim=1)
    coarse = torch.stack([coarse % w, coarse // w], dim=1)  # (B, 2) as (x, y)
    r = _FIT_RADIUS
    centre = torch.stack([coarse[:, 0].clamp(r, w - 1 - r), coarse[:, 1].clamp(r, h - 1 - r)], dim=1)

    # Gather the (2r+1)^2 window around `centre` at once for every map.
    taps = torch.arange(-r, r + 1, device=maps.device)
    oy, ox = (grid.reshape(-1) for grid in torch.meshgrid(taps, taps, indexing="ij"))
    index = (centre[:, 1:] + oy) * w + (centre[:, :1] + ox)
    values = flat.gather(1, index)

    # Fit log v ~ c0 + c1 x + c2 y + c3 x^2 + c4 x y + c5 y^2, weighting by v^2 (the log's noise scales as
    # 1/v, and cells at or below zero, e.g. on logit maps, drop out).
    fx, fy = ox.to(dtype), oy.to(dtype)
    design = torch.stack([torch.ones_like(fx), fx, fy, fx * fx, fx * fy, fy * fy], dim=1)  # (K, 6)
    weight = _flush((values.clamp_min(0) / values.amax(dim=1, keepdim=True).clamp_min(_LOG_FLOOR)) ** 2)
    ridge = _RIDGE * torch.eye(6, dtype=dtype, device=maps.device)
    normal = torch.einsum("bk,ki,kj->bij", weight, design, design) + ridge
    rhs = torch.einsum("bk,ki->bi", weight * values.clamp_min(_LOG_FLOOR).log(), design)
    coef, info = torch.linalg.solve_ex(normal, rhs)

    # Peak of the quadratic: solve [[2 c3, c4], [c4, 2 c5]] d = -(c1, c2); it must be a maximum.
    a, b, c = 2 * coef[:, 3], coef[:, 4], 2 * coef[:, 5]
    det = a * c - b * b
    dx = -(c * coef[:, 1] - b * coef[:, 2]) / det
    dy = -(a * coef[:, 2] - b * coef[:, 1]) / det
    offset = torch.stack([dx, dy], dim=1)
    ok = (info == 0) & (a < 0) & (det > 0) & torch.isfinite(offset).all(dim=1)
    offset = torch.where(ok[:, None], offset, (coarse - centre).to(dtype)).clamp(-r - 0.5, r + 0.5)

    stride = torch.as_tensor(_strides((w, h), input_size), dtype=dtype, device=maps.device)
    coords = (centre + offset + 0.5) * stride - 0.5
    return coords.reshape(*lead, 2), scores.reshape(lead)


def decode_heatmaps(
    heatmaps: np.ndarray | torch.Tensor, input_size: tuple[int, int] = INPUT_SIZE
) -> tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel joint locations in crop pixels (N, J, 2) and scores (N, J) from heatmaps (N, J, H, W).

    Returns the input's library type (numpy or torch, on the input's device), float32 unless the input is
    float64. The score is each map's maximum; the location is the peak of a Gaussian fitted around the
    argmax (see ``_FIT_RADIUS``), which works on MSE targets, softmax maps and logit maps alike.
    """
    if isinstance(heatmaps, torch.Tensor):
        with torch.autocast(heatmaps.device.type, enabled=False):  # a least-squares fit: never in bf16
            return _decode(heatmaps, input_size)
    coords, scores = _decode(torch.from_numpy(np.ascontiguousarray(heatmaps)), input_size)
    return coords.numpy(), scores.numpy()


def heatmaps_to_image(coords: np.ndarray | torch.Tensor, matrices: np.ndarray) -> np.ndarray | torch.Tensor:
    """Map crop-pixel coordinates (N, J, 2) back to the image with the inverses of ``matrices`` (N, 2, 3).

    ``matrices`` are the image->crop matrices used to make each crop. Torch coordinates give a torch result.
    """
    inverse = invert_matrix(matrices)
    if isinstance(coords, torch.Tensor):
        inverse = torch.as_tensor(inverse, dtype=coords.dtype, device=coords.device)
    return coords @ inverse[:, :, :2].swapaxes(1, 2) + inverse[:, None, :, 2]


def flip_heatmaps(
    heatmaps: np.ndarray | torch.Tensor, flip_index: Sequence[int] | np.ndarray
) -> np.ndarray | torch.Tensor:
    """Mirror heatmaps (..., J, H, W) horizontally and swap left/right channels (``flip_index[j]`` = partner).

    Under this module's heatmap convention, reversing the columns maps crop x to input_w - 1 - x exactly,
    so no half-cell shift is needed.
    """
    if isinstance(heatmaps, torch.Tensor):
        index = torch.as_tensor(np.asarray(flip_index), dtype=torch.long, device=heatmaps.device)
        return heatmaps.index_select(-3, index).flip(-1)
    return np.ascontiguousarray(np.take(heatmaps, np.asarray(flip_index), axis=-3)[..., ::-1])
