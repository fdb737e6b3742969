"""Overlay rendering on synthetic frames: each toggle draws, where it should, without touching the input."""

from dataclasses import fields, replace

import numpy as np
import pytest

from poseapp import skeleton
from poseapp.geometry import invert_matrix, transform_points
from poseapp.results import Frame, FrameResult, Person, PoseRecord
from poseapp.runtime.render import Overlays, draw_result, final_groups
from poseapp.runtime.transforms import box_to_center_scale, crop_matrix

# A standing figure as fractions (x, y) of its box, per joint of skeleton.JOINTS.
_FIGURE = {
    "nose": (0.5, 0.1), "left_eye": (0.55, 0.08), "right_eye": (0.45, 0.08), "left_ear": (0.6, 0.1),
    "right_ear": (0.4, 0.1), "left_shoulder": (0.75, 0.25), "right_shoulder": (0.25, 0.25),
    "left_elbow": (0.85, 0.42), "right_elbow": (0.15, 0.42), "left_wrist": (0.9, 0.56),
    "right_wrist": (0.1, 0.56), "left_hip": (0.65, 0.55), "right_hip": (0.35, 0.55),
    "left_knee": (0.65, 0.76), "right_knee": (0.35, 0.76), "left_ankle": (0.65, 0.97),
    "right_ankle": (0.35, 0.97), "neck": (0.5, 0.22), "head_top": (0.5, 0.01),
}  # fmt: skip
_LEVELS = np.array(
    [[1, 1, 2, 2, 1, 1], [1, 2, 3, 3, 2, 1]] + [[1, 2, 2, 2, 2, 1]] * 4 + [[1, 1, 2, 2, 1, 1]] * 2
)


def _tokens(granularity: np.ndarray, cell: float = 32.0) -> np.ndarray:
    """Crop boxes of the fine-stage tokens: an s x s split of every level-s coarse cell."""
    boxes = []
    for (r, c), s in np.ndenumerate(granularity):
        step = cell / s
        for i in range(s):
            for j in range(s):
                x, y = c * cell + j * step, r * cell + i * step
                boxes.append([x, y, x + step, y + step])
    return np.array(boxes)


def _person(box, track_id: int = 1, score: float = 0.9) -> Person:
    box = np.asarray(box, dtype=np.float64)
    wh = box[2:] - box[:2]
    keypoints = box[:2] + np.array([_FIGURE[name] for name in skeleton.JOINTS]) * wh
    center, size = box_to_center_scale(np.concatenate([box[:2], wh]))
    tokens = _tokens(_LEVELS)
    n = len(tokens)
    groups = [np.arange(n) // 2, np.arange((n + 1) // 2) // 2, np.arange((n + 3) // 4) // 3]
    record = PoseRecord(
        kept_patches=[np.arange(150), np.arange(100)],
        granularity=_LEVELS.copy(),
        token_boxes=tokens,
        merge_groups=groups,
    )
    return Person(track_id, box, keypoints, np.full(len(keypoints), score), crop_matrix(center, size), record)


def _result(people: list[Person], shape=(240, 320)) -> FrameResult:
    frame = Frame(0, np.zeros((*shape, 3), np.uint8), 0.0)
    return FrameResult(frame, people, knob=0.7, pose_ms=12.3, gflops=4.56, dropped=2, fps=29.9)


_BOX = (130.0, 40.0, 190.0, 220.0)
_NONE = Overlays(**{f.name: False for f in fields(Overlays) if f.name != "min_score"})


def _crop_window(person: Person, margin: float = 4.0) -> tuple[float, float, float, float]:
    corners = np.array([[-0.5, -0.5], [191.5, -0.5], [191.5, 255.5], [-0.5, 255.5]])
    pts = transform_points(corners, invert_matrix(person.crop_matrix))
    return (*(pts.min(axis=0) - margin), *(pts.max(axis=0) + margin))


@pytest.mark.parametrize(
    "name", ["skeleton", "boxes", "ids", "confidence", "patches", "granularity", "merges", "hud"]
)
def test_each_overlay_draws_near_its_person(name):
    person = _person(_BOX)
    result = _result([person])
    image = np.full((240, 320, 3), 40, np.uint8)
    # The confidence toggle only changes how the skeleton is drawn.
    base = replace(_NONE, skeleton=True) if name == "confidence" else _NONE
    changed = np.abs(
        draw_result(image, result, replace(base, **{name: True})).astype(int)
        - draw_result(image, result, base).astype(int)
    ).sum(axis=2)
    ys, xs = np.nonzero(changed)
    assert len(xs) > 0
    if name == "hud":
        assert xs.max() < 160 and ys.max() < 120
    else:
        x0, y0, x1, y1 = _crop_window(person)
        assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1


def test_low_score_joints_are_not_drawn():
    overlays = replace(_NONE, skeleton=True)
    image = np.zeros((240, 320, 3), np.uint8)
    assert not draw_result(image, _result([_person(_BOX, score=0.1)]), overlays).any()

    # One faint joint: where it lies must not matter.
    wrist = skeleton.INDEX["left_wrist"]
    person = _person(_BOX)
    person.scores[wrist] = 0.1
    moved = replace(person, keypoints=person.keypoints.copy())
    moved.keypoints[wrist] = (300.0, 20.0)
    drawn = draw_result(image, _result([person]), overlays)
    assert np.array_equal(drawn, draw_result(image, _result([moved]), overlays))
    assert drawn.any()


def test_patch_shading_follows_the_pruning_layer():
    person = _person(_BOX)
    image = np.full((240, 320, 3), 128, np.uint8)
    out = draw_result(image, _result([person]), replace(_NONE, patches=True))
    inverse = invert_matrix(person.crop_matrix)

    def centre_value(patch: int) -> int:
        r, c = divmod(patch, 12)
        x, y = np.round(transform_points(np.array([c * 16 + 7.5, r * 16 + 7.5]), inverse)).astype(int)
        return int(out[y, x].mean())

    kept, second, first = centre_value(50), centre_value(120), centre_value(170)
    assert kept == 128 and first < second < kept


def test_granularity_marks_a_coarse_only_person():
    person = _person(_BOX)
    person.record.granularity = np.zeros_like(_LEVELS)
    image = np.zeros((240, 320, 3), np.uint8)
    assert draw_result(image, _result([person]), replace(_NONE, granularity=True)).any()


def test_final_groups_compose_merge_maps_in_order():
    groups = [np.array([0, 0, 1, 1, 2, 2]), np.array([1, 0, 1]), np.array([0, 0])]
    assert final_groups(6, groups).tolist() == [0, 0, 0, 0, 0, 0]
    assert final_groups(6, groups[:2]).tolist() == [1, 1, 0, 0, 1, 1]
    assert final_groups(3, [np.array([-1, 0, 1]), np.array([4, 5])]).tolist() == [-1, 4, 5]


def test_input_is_not_modified():
    result = _result([_person(_BOX)])
    image = np.full((240, 320, 3), 90, np.uint8)
    before = image.copy()
    everything = Overlays(patches=True, granularity=True, merges=True)
    out = draw_result(image, result, everything)
    assert np.array_equal(image, before) and not np.array_equal(out, before)


def test_hud_writes_text_top_left():
    out = draw_result(np.zeros((240, 320, 3), np.uint8), _result([]), replace(_NONE, hud=True))
    assert (out[:100, :140] > 200).any()
    assert not out[120:, 160:].any()


def test_twenty_people_at_720p():
    rng = np.random.default_rng(0)
    corners = rng.uniform([0, 0], [1180, 520], size=(20, 2))
    people = [_person((*xy, *(xy + rng.uniform([40, 120], [100, 200]))), i) for i, xy in enumerate(corners)]
    image = np.full((720, 1280, 3), 60, np.uint8)
    out = draw_result(
        image, _result(people, (720, 1280)), Overlays(patches=True, granularity=True, merges=True)
    )
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)


def test_empty_result_draws_only_the_hud():
    image = np.zeros((240, 320, 3), np.uint8)
    everything = Overlays(patches=True, granularity=True, merges=True)
    out = draw_result(image, _result([]), everything)
    ys, xs = np.nonzero(out.any(axis=2))
    assert len(xs) and xs.max() < 160 and ys.max() < 120
    assert not draw_result(image, _result([]), replace(everything, hud=False)).any()
