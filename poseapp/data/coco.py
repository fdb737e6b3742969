"""COCO-style keypoint annotations as people on the unified skeleton, and the top-down training dataset."""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from poseapp.data.augment import (
    AugmentConfig,
    blank_beyond,
    degrade,
    flip_joints,
    jitter_colour,
    occlude,
    paste_person,
    sample_rng,
    sample_window,
    truncate,
)
from poseapp.geometry import transform_points
from poseapp.runtime.transforms import (
    CROP_PADDING,
    INPUT_SIZE,
    TRAIN_PADDING,
    box_to_center_scale,
    crop_image,
    crop_matrix,
    encode_heatmaps,
    heatmap_size,
)
from poseapp.skeleton import FLIP_INDEX, NUM_JOINTS, joint_mapping, to_unified

_JOINT_BOX_PAD = 0.1  # a box made from joints reaches this fraction of their extent beyond each side
_MIN_BOX_SIDE = 2.0  # ... and is at least this many pixels on each side (a single joint still gets a crop)


@dataclass(frozen=True, eq=False)
class Person:
    """One annotated person on the unified skeleton, in image pixels. Arrays are read-only float64 copies."""

    image_path: str
    image_id: int
    box_xywh: np.ndarray
    xy: np.ndarray
    visibility: np.ndarray
    ann_id: int
    confidence: np.ndarray | None = None
    """Per-joint label confidence (NUM_JOINTS,) for teacher pseudo-labels; None for human labels (all 1)."""

    def __post_init__(self) -> None:
        joint = (NUM_JOINTS,)
        shapes = {"box_xywh": (4,), "xy": (NUM_JOINTS, 2), "visibility": joint, "confidence": joint}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if value is None:
                continue
            array = np.array(value, dtype=np.float64)
            if array.shape != shape:
                raise ValueError(f"Person.{name} must have shape {shape}, got {array.shape}")
            array.flags.writeable = False
            object.__setattr__(self, name, array)


def _box_from_joints(xy: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    points = xy[visibility > 0]
    low, high = points.min(axis=0), points.max(axis=0)
    size = np.maximum((high - low) * (1 + 2 * _JOINT_BOX_PAD), _MIN_BOX_SIDE)
    return np.concatenate([(low + high - size) / 2, size])


def _scores_to_unified(scores: list[float] | None, names: list[str], where: str) -> np.ndarray | None:
    """Per-joint teacher confidences (``keypoint_scores``, pseudo-labels) on the unified skeleton."""
    if scores is None:
        return None
    if len(scores) != len(names):
        raise ValueError(f"{where} has {len(scores)} keypoint_scores, expected {len(names)}")
    mapping = joint_mapping(names)
    known = mapping >= 0
    confidence = np.zeros(NUM_JOINTS)
    confidence[mapping[known]] = np.asarray(scores, dtype=np.float64)[known]
    return confidence


def load_people(
    ann_file: str | PathLike[str], image_dir: str | PathLike[str], min_joints: int = 1
) -> list[Person]:
    """The people of a COCO keypoint file, mapped onto the unified skeleton by joint name.

    Skips crowd annotations and people with fewer than ``min_joints`` (and always those with no) labelled
    joints of the unified skeleton. A person without a usable bbox (w or h <= 1) gets the box of its labelled
    joints, padded a little. Sorted by ``(image_id, ann_id)``.
    """
    with open(ann_file, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise ValueError(f"{ann_file}: not a COCO annotation file (needs 'images' and 'annotations')")
    category = (data.get("categories") or [{}])[0]
    names = category.get("keypoints")
    if not names:
        raise ValueError(f"{ann_file}: categories[0]['keypoints'] (the joint names) is missing or empty")
    files = {image["id"]: image["file_name"] for image in data["images"]}

    people = []
    for position, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", position)
        if ann.get("iscrowd") or ann.get("category_id", category.get("id")) != category.get("id"):
            continue
        if ann.get("image_id") not in files:
            raise ValueError(f"{ann_file}: annotation {ann_id} refers to unknown image {ann.get('image_id')}")
        keypoints = np.asarray(ann.get("keypoints", ()), dtype=np.float64)
        if keypoints.size != 3 * len(names):
            raise ValueError(
                f"{ann_file}: annotation {ann_id} has {keypoints.size} keypoint values, "
                f"expected 3 x {len(names)} joints"
            )
        xy, visibility = to_unified(keypoints, names)
        labelled = np.count_nonzero(visibility)
        if labelled == 0 or labelled < min_joints:
            continue
        box = np.asarray(ann.get("bbox") or (0, 0, 0, 0), dtype=np.float64)
        if box[2] <= 1 or box[3] <= 1:
            box = _box_from_joints(xy, visibility)
        image_path = str(Path(image_dir) / files[ann["image_id"]])
        confidence = _scores_to_unified(ann.get("keypoint_scores"), names, f"{ann_file}: annotation {ann_id}")
        people.append(Person(image_path, int(ann["image_id"]), box, xy, visibility, int(ann_id), confidence))
    return sorted(people, key=lambda p: (p.image_id, p.ann_id))


def split_people(people: list[Person], holdout: int) -> tuple[list[Person], list[Person]]:
    """``(train, val)``: the last ``holdout`` people in ``(image_id, ann_id)`` order are validation."""
    if not 0 <= holdout <= len(people):
        raise ValueError(f"holdout must be in [0, {len(people)}], got {holdout}")
    ordered = sorted(people, key=lambda p: (p.image_id, p.ann_id))
    cut = len(ordered) - holdout
    return ordered[:cut], ordered[cut:]


class Sample(NamedTuple):
    """One training example; the default collate batches each field."""

    image: torch.Tensor
    """(3, H, W) float32 RGB in [0, 1]."""
    target: torch.Tensor
    """(J, h, w) float32 Gaussian heatmaps."""
    weight: torch.Tensor
    """(J,) float32: labelled and inside the crop, times the label confidence."""
    matrix: torch.Tensor
    """(2, 3) float64 image->crop matrix (of the original, unflipped image)."""
    joints: torch.Tensor
    """(J, 3) float32 crop-pixel x, y and visibility, channels swapped left/right if the crop was flipped."""
    index: int


def read_bgr(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 BGR; OSError naming the file when it cannot be read."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read image {path}")
    return image


def _mirror(width: int) -> np.ndarray:
    """3x3 matrix of a horizontal flip of an image ``width`` pixels wide (x -> width - 1 - x)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


class PoseDataset(Dataset[Sample]):
    """Top-down crops of people with heatmap targets; reads each image from disk when asked for it.

    ``train=True`` pads the person box by ``TRAIN_PADDING`` and applies ``augment`` (default
    ``AugmentConfig()``) with a fresh generator per sample (see ``sample_rng``); otherwise the crop is the
    person box padded by ``CROP_PADDING``, as at inference. ``confidence`` (per
    joint ``(NUM_JOINTS,)`` or per person and joint ``(len(people), NUM_JOINTS)``) multiplies the weights,
    on top of each person's own ``confidence``.
    """

    def __init__(
        self,
        people: list[Person],
        train: bool,
        augment: AugmentConfig | None = None,
        sigma: float = 2.0,
        confidence: np.ndarray | None = None,
        input_size: tuple[int, int] = INPUT_SIZE,
    ) -> None:
        self.people = list(people)
        self.input_size = tuple(input_size)
        """(w, h) of the crops (the model's input)."""
        self.train = train
        self.augment = augment or AugmentConfig()
        self.sigma = sigma
        self.confidence = (
            None
            if confidence is None
            else np.broadcast_to(np.asarray(confidence, dtype=np.float64), (len(self.people), NUM_JOINTS))
        )

    def __len__(self) -> int:
        return len(self.people)

    def _confidence(self, index: int) -> np.ndarray:
        own = self.people[index].confidence
        confidence = np.ones(NUM_JOINTS) if own is None else own
        return confidence if self.confidence is None else confidence * self.confidence[index]

    def _paste_other(
        self,
        crop: np.ndarray,
        index: int,
        front: tuple[np.ndarray, np.ndarray, float],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """``paste_person`` with a random other person of this dataset as the donor, behind ``front``."""
        other = int(rng.integers(len(self.people) - 1))
        donor = self.people[other + (other >= index)]
        image = cv2.cvtColor(read_bgr(donor.image_path), cv2.COLOR_BGR2RGB)
        return paste_person(crop, image, donor.box_xywh, donor.xy, donor.visibility, self.augment, rng, front)

    def __getitem__(self, index: int) -> Sample:
        person = self.people[index]
        image = cv2.cvtColor(read_bgr(person.image_path), cv2.COLOR_BGR2RGB)
        width = image.shape[1]
        w, h = self.input_size
        padding = TRAIN_PADDING if self.train else CROP_PADDING
        box, xy, visibility, confidence = (
            person.box_xywh,
            person.xy,
            person.visibility,
            self._confidence(index),
        )
        rotation, flip = 0.0, False
        if self.train:
            rng = sample_rng()
            cut = truncate(box, self.augment, rng)
            if cut is not None:
                box, edge = cut
                image = blank_beyond(image, edge)
                visibility = np.where(edge.outside(xy), 0.0, visibility)
        center, size = box_to_center_scale(box, aspect=w / h, padding=padding)
        if self.train:
            center, size, rotation, flip = sample_window(center, size, xy, visibility, self.augment, rng)
        if flip:
            xy, visibility = flip_joints(xy, visibility, width)
            confidence = confidence[FLIP_INDEX]
            center = np.array([width - 1 - center[0], center[1]])
        matrix = crop_matrix(center, size, rotation, out_size=self.input_size)
        joints = transform_points(xy, matrix)
        if flip:  # the pixels take the same path: mirror, then the window's matrix, as one warp
            matrix = matrix @ _mirror(width)
        crop = crop_image(image, matrix, self.input_size)
        if self.train:
            paste = self.augment.paste_prob
            if paste > 0 and len(self.people) > 1 and rng.random() < paste:
                box_height = person.box_xywh[3] * np.sqrt(abs(np.linalg.det(matrix[:, :2])))
                crop = self._paste_other(crop, index, (joints, visibility, box_height), rng)
            crop = occlude(
                degrade(jitter_colour(crop, self.augment, rng), self.augment, rng), self.augment, rng
            )

        target, inside = encode_heatmaps(
            joints, visibility, self.sigma, heatmap_size(self.input_size), self.input_size
        )
        return Sample(
            image=torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float().div_(255),
            target=torch.from_numpy(target),
            weight=torch.from_numpy((inside * confidence).astype(np.float32)),
            matrix=torch.from_numpy(matrix),
            joints=torch.from_numpy(np.column_stack([joints, visibility]).astype(np.float32)),
            index=index,
        )
