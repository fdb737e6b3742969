"""Random training augmentation for top-down crops.

Geometry is only *chosen* here (``sample_window``): the dataset turns the window into one image->crop matrix
and sends both the pixels and the joints through it, so targets always match the pixels. Colour jitter and
occlusion act on the finished crop and never touch the targets. Every draw comes from an explicit
``np.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch

from poseapp.runtime.transforms import box_to_center_scale
from poseapp.skeleton import FLIP_INDEX, INDEX, LIMB_INDEX, NUM_JOINTS

_LOWER_NAMES = ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
LOWER_BODY: np.ndarray = np.isin(np.arange(NUM_JOINTS), [INDEX[n] for n in _LOWER_NAMES])
"""Mask of the unified joints that half-body augmentation counts as lower body."""
UPPER_BODY: np.ndarray = ~LOWER_BODY
"""Mask of the upper-body joints: face, head, neck, shoulders and arms."""

_HEAD = np.array([INDEX[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "head_top")])
_TORSO = np.array([INDEX[n] for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")])
_LIMB_WIDTH = 0.07  # a pasted person's limbs are drawn this fraction of their box height wide
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
    paste_prob: float = 0.0
    """Probability of pasting another training person over the crop as a distractor (``paste_person``)."""
    paste_height: tuple[float, float] = (0.6, 1.1)
    """The pasted person's box height as a fraction of the crop's height."""
    paste_offset: float = 0.5
    """The pasted person's centre is shifted from the crop's by up to this fraction of each side."""
    truncate_prob: float = 0.25
    """Probability that the photo's frame cuts the person off (``truncate``): legs, arms or head outside."""
    truncate_fraction: tuple[float, float] = (0.15, 0.6)
    """The share of the person's box the frame cuts away."""
    aspect_jitter: float = 1.2
    """The window's width is scaled by a factor in ``[1 / aspect_jitter, aspect_jitter]`` (stretched
    photos)."""
    blur_prob: float = 0.15
    blur_sigma: tuple[float, float] = (0.6, 2.0)
    """Gaussian blur of the crop, its sigma in pixels (defocus, small people upscaled)."""
    dark_prob: float = 0.15
    dark_gain: tuple[float, float] = (0.15, 0.6)
    """Low light: the crop is scaled by this gain, gamma-lifted a little and given sensor noise."""


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
    size[0] *= np.exp(rng.uniform(-np.log(cfg.aspect_jitter), np.log(cfg.aspect_jitter)))
    rotation = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg) if rng.random() < cfg.rotation_prob else 0.0
    flip = rng.random() < cfg.flip_prob
    return Window(center, size, float(rotation), bool(flip))


class Cut(NamedTuple):
    """A frame edge through a person: everything beyond ``position`` along ``axis`` (0: x, 1: y) on the
    ``after`` side (True: larger coordinates) is outside the photo."""

    axis: int
    position: float
    after: bool

    def outside(self, xy: np.ndarray) -> np.ndarray:
        """Which points lie beyond the edge."""
        coordinate = np.asarray(xy, dtype=np.float64)[:, self.axis]
        return coordinate > self.position if self.after else coordinate < self.position


def truncate(
    box_xywh: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, Cut] | None:
    """With probability ``cfg.truncate_prob``, a frame edge through the person (``Cut``) and the box of
    what stays in the photo. The bottom edge is the most common in ordinary photos (legs cut off), then
    the sides (an arm or half the body), then the top. The caller blanks the pixels beyond the edge and
    unlabels the joints there, as the edge of a real photo would."""
    if rng.random() >= cfg.truncate_prob:
        return None
    x, y, w, h = (float(v) for v in box_xywh)
    side = rng.choice(4, p=[0.5, 0.2, 0.2, 0.1])  # bottom, left, right, top
    share = rng.uniform(*cfg.truncate_fraction)
    if side == 0:
        return np.array([x, y, w, h * (1 - share)]), Cut(1, y + h * (1 - share), True)
    if side == 3:
        return np.array([x, y + h * share, w, h * (1 - share)]), Cut(1, y + h * share, False)
    if side == 1:
        return np.array([x + w * share, y, w * (1 - share), h]), Cut(0, x + w * share, False)
    return np.array([x, y, w * (1 - share), h]), Cut(0, x + w * (1 - share), True)


def blank_beyond(image: np.ndarray, cut: Cut) -> np.ndarray:
    """A copy of ``image`` black beyond ``cut`` (what a crop past the photo's edge holds)."""
    out = image.copy()
    edge = int(
        np.clip(
            np.ceil(cut.position) if cut.after else np.floor(cut.position) + 1, 0, image.shape[1 - cut.axis]
        )
    )
    index = [slice(None), slice(None)]
    index[1 - cut.axis] = slice(edge, None) if cut.after else slice(0, edge)
    out[tuple(index)] = 0
    return out


def degrade(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Blur (probability ``cfg.blur_prob``) and low light (``cfg.dark_prob``): darker, noisier crops, as
    ordinary photos indoors or at night are; the targets are untouched."""
    out = img
    if rng.random() < cfg.blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.dark_prob:
        light = (out.astype(np.float32) / 255) ** rng.uniform(0.8, 1.0) * rng.uniform(*cfg.dark_gain)
        noise = rng.normal(0.0, rng.uniform(0.005, 0.03), size=light.shape).astype(np.float32)
        out = np.rint(np.clip(light + noise, 0, 1) * 255).astype(np.uint8)
    return out


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


def person_mask(xy: np.ndarray, visibility: np.ndarray, shape: tuple[int, int], height: float) -> np.ndarray:
    """A soft (H, W) float32 mask in [0, 1] of a person's body from their joints alone.

    Limbs between labelled joints are thick lines, the torso (both shoulders and hips labelled) is filled and
    the head is a disc around the labelled face and head-top points; sizes scale with the person's box
    ``height`` in pixels, and the edges are blurred. No segmentation is needed, so any keypoint set serves.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    labelled = np.asarray(visibility) > 0
    points = np.rint(np.nan_to_num(np.asarray(xy, dtype=np.float64))).astype(np.int32)
    width = max(1, round(_LIMB_WIDTH * height))
    for a, b in LIMB_INDEX:
        if labelled[a] and labelled[b]:
            cv2.line(mask, tuple(map(int, points[a])), tuple(map(int, points[b])), 1, width, cv2.LINE_AA)
    if labelled[_TORSO].all():
        cv2.fillConvexPoly(mask, points[_TORSO], 1, cv2.LINE_AA)
    head = _HEAD[labelled[_HEAD]]
    if len(head):
        centre = tuple(map(int, np.rint(np.asarray(xy)[head].mean(axis=0))))
        cv2.circle(mask, centre, max(1, round(1.4 * width)), 1, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(0.5, width / 4))


def paste_person(
    crop: np.ndarray,
    donor: np.ndarray,
    box_xywh: np.ndarray,
    xy: np.ndarray,
    visibility: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    front: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> np.ndarray:
    """Paste the person of ``donor`` (an RGB image; their box and joints in its pixels) into ``crop``.

    A neighbour in a crowd is what top-down crops of real scenes hold, and a rectangle does not teach the
    model to tell a second person's limbs from its own. The donor is scaled to a random height
    (``cfg.paste_height`` of the crop) and shifted by up to ``cfg.paste_offset``; only the pixels of its body
    (``person_mask``) are blended in. ``front`` (the crop person's joints, visibility and box height in crop
    pixels) puts the donor behind that person: their body's pixels stay. The crop's targets stay as they are.
    Returns a new array; a donor with fewer than 4 labelled joints or an empty box leaves ``crop`` as it is.
    """
    height, width = crop.shape[:2]
    box_h = float(box_xywh[3])
    if np.count_nonzero(np.asarray(visibility) > 0) < 4 or box_h <= 1 or float(box_xywh[2]) <= 1:
        return crop
    scale = rng.uniform(*cfg.paste_height) * height / box_h
    source = np.asarray(box_xywh[:2], dtype=np.float64) + np.asarray(box_xywh[2:], dtype=np.float64) / 2
    target = np.array([width, height]) * (0.5 + rng.uniform(-cfg.paste_offset, cfg.paste_offset, size=2))
    shift = target - scale * source
    matrix = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])
    warped = cv2.warpAffine(donor, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = person_mask(np.asarray(xy) * scale + shift, visibility, (height, width), scale * box_h)
    if front is not None:
        front_xy, front_visibility, front_height = front
        alpha = alpha * (1 - person_mask(front_xy, front_visibility, (height, width), front_height))
    alpha = alpha[..., None]
    return np.rint(crop * (1 - alpha) + warped * alpha).astype(np.uint8)
