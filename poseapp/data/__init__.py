"""Training data: COCO-style keypoint files on the unified skeleton, augmentation and the crop dataset."""

from poseapp.data.augment import (
    LOWER_BODY,
    UPPER_BODY,
    AugmentConfig,
    Window,
    flip_joints,
    jitter_colour,
    occlude,
    paste_person,
    person_mask,
    sample_rng,
    sample_window,
)
from poseapp.data.coco import Person, PoseDataset, Sample, load_people, read_bgr, split_people

__all__ = [
    "read_bgr",
    "LOWER_BODY",
    "UPPER_BODY",
    "AugmentConfig",
    "Person",
    "PoseDataset",
    "Sample",
    "Window",
    "flip_joints",
    "jitter_colour",
    "load_people",
    "occlude",
    "paste_person",
    "person_mask",
    "sample_rng",
    "sample_window",
    "split_people",
]
