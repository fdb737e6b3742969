"""Random training augmentation for top-down crops.

Geometry is only *chosen* here (``sample_window``): the dataset turns the window into one image->crop matrix
and sends both the pixels and the joints through it, so targets always match the pixels. Colour jitter and
occlusion act on the finished crop and never touch the targets. Every draw comes from an explicit
``np.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from poseapp.skeleton import FLIP_INDEX, INDEX, NUM_JOINTS
from poseapp.transforms import box_to_center_scale

_LOWER_NAMES = ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
LOWER_BODY: np.ndarray = np.isin(np.arange(NUM_JOINTS), [INDEX[n] for n in _LOWER_NAMES])
"""Mask of the unified joints that half-body augmentation counts as lower body."""
UPPER_BODY: np.ndarray = ~LOWER_BODY
"""Mask of the upper-body joints: face, head, neck, shoulders and arms."""

_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB luma weights


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings; a probability of 0 switches that augmentation off."""

    scale_range: tuple[float, float] = (0.75, 1.25)
    rotation_deg: float = 30.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    half_body_padding: float = 1.5
    colour_strength: float = 0.3
    """Brightness, contrast and saturation factors are drawn from ``1 ± colour_strength``."""
    colour_prob: float = 0.8
    occlusion_prob: float = 0.5
    occlusion_count: tuple[int, int] = (1, 3)
    occlusion_size: tuple[float, float] = (0.05, 0.25)
    """Each rectangle side as a fraction of the crop's side."""


class Window(NamedTuple):
    """A crop window in image coordinates and what to do with it."""

    center: np.ndarray
    size: np.ndarray
    rotation: float
    flip: bool


def sample_rng() -> np.random.Generator:
    """A generator for one sample, seeded from torch's RNG.

    A DataLoader seeds torch in each worker with its own seed (``torch.initial_seed()`` there is the loader's
    base seed + worker id, the base seed drawn from the main process's torch RNG), so workers differ, every
    call draws fresh augmentation (each epoch too, also with persistent workers or ``num_workers=0``), and
    a fixed ``torch.manual_seed`` reproduces a run.
    """
    return np.random.default_rng(int(torch.randint(2**62, (1,)).item()))


def _half_body(
    xy: np.ndarray, labelled: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, aspect: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """MMPose's half-body window: box the labelled upper (or lower) body joints, padded by ``cfg``.

    Upper body is picked with probability 0.5 when it has more than 2 labelled joints, else the lower body
    if it has more than 2, else the upper body. The window is centred on the joints' box (MMPose uses their
    mean), so every chosen joint lies inside it. None when the chosen joints span no area.
    """
    upper, lower = labelled & UPPER_BODY, labelled & LOWER_BODY
    want_upper = rng.random() < 0.5
    chosen = upper if (want_upper and upper.sum() > 2) or lower.sum() <= 2 else lower
    if chosen.sum() < 2:
        return None
    points = xy[chosen]
    low, high = points.min(axis=0), points.max(axis=0)
    if np.max(high - low) <= 1:
        return None
    return box_to_center_scale(np.concatenate([low, high - low]), aspect, cfg.half_body_padding)


def sample_window(
    center: np.ndarray,
    size: np.ndarray,
    xy: np.ndarray,
    vis: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
) -> Window:
    """Randomly re-choose a crop window ``(center, size)`` for joints ``xy``/``vis`` in image coordinates.

    In order: half-body (with ``cfg.half_body_min_joints`` or more labelled joints), scale, rotation (degrees,
    uniform in ``±cfg.rotation_deg``) and whether to flip. The window is in the unflipped image; the caller
    mirrors it with the image. A half-body window keeps the aspect of the window given.
    """
    center = np.asarray(center, dtype=np.float64)
    size = np.asarray(size, dtype=np.float64)
    labelled = np.asarray(vis) > 0
    if np.count_nonzero(labelled) >= cfg.half_body_min_joints and rng.random() < cfg.half_body_prob:
        half = _half_body(np.asarray(xy, dtype=np.float64), labelled, cfg, rng, size[0] / size[1])
        if half is not None:
            center, size = half
    size = size * rng.uniform(*cfg.scale_range)
    rotation = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg) if rng.random() < cfg.rotation_prob else 0.0
    flip = rng.random() < cfg.flip_prob
    return Window(center, size, float(rotation), bool(flip))


def flip_joints(xy: np.ndarray, vis: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Joints of the mirrored image ``width`` pixels wide: x -> width - 1 - x, left/right swapped."""
    xy = np.asarray(xy, dtype=np.float64)
    mirrored = np.column_stack([width - 1 - xy[:, 0], xy[:, 1]])
    return mirrored[FLIP_INDEX], np.asarray(vis)[FLIP_INDEX]


def jitter_colour(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """With probability ``cfg.colour_prob``, random brightness, contrast and saturation (RGB uint8).

    Each is a blend, as in torchvision: with black, with the mean grey level, with the pixel's grey.
    """
    if rng.random() >= cfg.colour_prob:
        return img
    brightness, contrast, saturation = rng.uniform(1 - cfg.colour_strength, 1 + cfg.colour_strength, size=3)
    out = np.clip(img.astype(np.float32) * brightness, 0, 255)
    mean = float((out @ _GREY).mean())
    out = np.clip((out - mean) * contrast + mean, 0, 255)
    grey = (out @ _GREY)[..., None]
    out = np.clip((out - grey) * saturation + grey, 0, 255)
    return np.rint(out).astype(np.uint8)


def occlude(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """With probability ``cfg.occlusion_prob``, cover the crop with random rectangles of colour or noise.

    Mimics occluders so the model learns to infer hidden joints; returns a new array (the input is kept).
    """
    if rng.random() >= cfg.occlusion_prob:
        return img
    out = img.copy()
    height, width = img.shape[:2]
    for _ in range(rng.integers(cfg.occlusion_count[0], cfg.occlusion_count[1], endpoint=True)):
        rect_w = max(1, round(width * rng.uniform(*cfg.occlusion_size)))
        rect_h = max(1, round(height * rng.uniform(*cfg.occlusion_size)))
        x0 = rng.integers(0, width - rect_w, endpoint=True)
        y0 = rng.integers(0, height - rect_h, endpoint=True)
        patch = out[y0 : y0 + rect_h, x0 : x0 + rect_w]
        fill_shape = patch.shape if rng.random() < 0.5 else patch.shape[2:]
        patch[...] = rng.integers(0, 256, size=fill_shape, dtype=np.uint8)
    return out
