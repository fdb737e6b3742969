"""The video job end to end on clips made here, with a fake detector and tiny random models."""

from __future__ import annotations

import json
import threading

import av
import numpy as np
import pytest

from poseapp.io.video import VideoWriter, open_source
from poseapp.models import EMGPose, EViTPose
from poseapp.models.vit import ViTSize
from poseapp.results import Detection, Frame, Person
from poseapp.runtime.budget import BudgetController, LatencyModel
from poseapp.runtime.pipeline import PipelineConfig, PosePipeline, carried
from poseapp.runtime.render import Overlays
from poseapp.runtime.video_job import annotate_video, open_writer

TINY = ViTSize(48, 12, 3)
W, H = 320, 240


class FakeDetector:
    """People at fixed places; counts its calls."""

    def __init__(self, count: int = 2) -> None:
        self.count = count
        self.calls = 0

    def __call__(self, image: np.ndarray) -> list[Detection]:
        self.calls += 1
        return [
            Detection(np.array([10.0 + 50 * i, 20.0, 50.0 + 50 * i, 200.0]), 0.9) for i in range(self.count)
        ]


def make_clip(path, frames: int = 12) -> None:
    """Frames whose index is written as the grey level of the bottom-right corner."""
    with VideoWriter(path, W, H, 25) as writer:
        for i in range(frames):
            image = np.full((H, W, 3), 40, np.uint8)
            image[-40:, -40:] = 10 + 18 * i
            writer.write(image)


def frame_indices(path) -> list[int]:
    with av.open(str(path)) as container:
        return [
            round((float(f.to_ndarray(format="gray")[-20, -20]) - 10) / 18) for f in container.decode(video=0)
        ]


def test_video_keeps_every_frame_in_order_and_writes_h264_json_csv(tmp_path) -> None:
    clip, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(clip)
    detector = FakeDetector()
    pipeline = PosePipeline(PipelineConfig(knob=0.5), detector, model=EViTPose(TINY, 19))
    frames = open_source(str(clip))
    writer = open_writer(frames, str(clip), out)
    summary = annotate_video(
        frames,
        pipeline,
        writer,
        Overlays(patches=True),
        tmp_path / "r.json",
        tmp_path / "r.csv",
        progress=False,
    )
    assert summary.frames == 12 and not summary.interrupted
    assert frame_indices(out) == list(range(12))
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (W, H)
        assert stream.average_rate == 25
    assert detector.calls < 12  # the tracker carries boxes between detector runs
    results = json.loads((tmp_path / "r.json").read_text())
    assert len(results) == 24 and {r["image_id"] for r in results} == set(range(12))
    assert {r["track_id"] for r in results} == {1, 2}
    assert all(len(r["keypoints"]) == 51 for r in results)
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 24
    assert summary.knobs == [0.5] * 12


def test_a_clip_with_nobody_and_an_interrupted_run(tmp_path) -> None:
    clip, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(clip, frames=6)
    pipeline = PosePipeline(PipelineConfig(), FakeDetector(count=0), model=EMGPose(TINY, 19))
    frames = open_source(str(clip))
    summary = annotate_video(frames, pipeline, open_writer(frames, str(clip), out), progress=False)
    assert summary.frames == 6 and max(summary.people) == 0
    assert frame_indices(out) == list(range(6))

    class Interrupting(FakeDetector):
        def __call__(self, image: np.ndarray) -> list[Detection]:
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().__call__(image)

    pipeline = PosePipeline(PipelineConfig(detect_every=1), Interrupting(), model=EViTPose(TINY, 19))
    frames = open_source(str(clip))
    summary = annotate_video(frames, pipeline, open_writer(frames, str(clip), out), progress=False)
    assert summary.interrupted and summary.frames == 2
    assert frame_indices(out) == [0, 1]  # a playable file of the frames done so far


def test_budget_lowers_the_knob_as_people_arrive() -> None:
    model = EViTPose(TINY, 19)
    knob = model.knob
    grid = knob.grid(5)
    # Fake latency: 1 ms + 4 ms per crop at full keep ratio, proportional to the keep ratio.
    cfg = PipelineConfig(budget_ms=12.0)
    image = np.zeros((H, W, 3), np.uint8)
    chosen = {}
    for people in (1, 3, 8):
        latency = LatencyModel(grid, np.ones(5), 4.0 * grid)
        pipeline = PosePipeline(cfg, FakeDetector(people), model=model, latency=latency)
        assert isinstance(pipeline.controller, BudgetController) and not pipeline.controller.is_fixed
        chosen[people] = pipeline.step(Frame(0, image, 0.0)).knob
    assert chosen[1] == pytest.approx(1.0)
    assert chosen[1] > chosen[3] > chosen[8]


def test_record_reaches_the_people(tmp_path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    evit = PosePipeline(PipelineConfig(knob=0.5), FakeDetector(1), model=EViTPose(TINY, 19))
    person = evit.step(Frame(0, image, 0.0)).people[0]
    assert [len(k) for k in person.record.kept_patches] == [96, 48, 24]
    assert person.keypoints.shape == (19, 2) and person.scores.shape == (19,)
    emg = PosePipeline(PipelineConfig(knob=1.0), FakeDetector(1), model=EMGPose(TINY, 19))
    result = emg.step(Frame(0, image, 0.0))
    record = result.people[0].record
    assert record.granularity.shape == (8, 6) and set(np.unique(record.granularity)) == {1, 2, 3}
    assert len(record.merge_groups) == 3 and record.token_boxes.shape[0] == len(record.merge_groups[0])
    assert result.gflops > 0


def test_flip_test_in_the_pipeline_costs_twice_and_keeps_one_record_per_person() -> None:
    image = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    model = EViTPose(TINY, 19)
    plain = PosePipeline(PipelineConfig(knob=0.5), FakeDetector(2), model=model)
    flipped = PosePipeline(PipelineConfig(knob=0.5, flip=True), FakeDetector(2), model=model)
    one, two = plain.step(Frame(0, image, 0.0)), flipped.step(Frame(0, image, 0.0))
    assert len(two.people) == 2 and two.gflops == pytest.approx(2 * one.gflops)
    assert [len(k) for k in two.people[0].record.kept_patches] == [96, 48, 24]
    assert not np.allclose(one.people[0].keypoints, two.people[0].keypoints)


def test_switching_the_flip_test_on_recalibrates_a_budget_and_keeps_a_pinned_knob() -> None:
    model = EViTPose(ViTSize(48, 2, 3), 19, prune_layers=(1,))
    budget = PosePipeline(PipelineConfig(budget_ms=20, latency_cache=None), FakeDetector(2), model=model)
    before = budget.controller
    budget.set_flip(True)
    assert budget.cfg.flip and budget.controller is not before and not budget.controller.is_fixed
    again = budget.controller
    budget.set_flip(True)
    assert budget.controller is again
    pinned = PosePipeline(PipelineConfig(knob=0.7), FakeDetector(2), model=model)
    fixed = pinned.controller
    pinned.set_flip(True)
    assert pinned.controller is fixed and pinned.cfg.flip


@pytest.mark.parametrize(("width", "height", "people"), [(3840, 2160, 3), (241, 427, 2), (640, 360, 20)])
def test_4k_portrait_odd_and_crowded_clips(tmp_path, width: int, height: int, people: int) -> None:
    clip, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(clip, width, height, 30) as writer:
        for _ in range(3):
            writer.write(rng.integers(0, 255, (height, width), dtype=np.uint8))  # grayscale frames

    class Crowd(FakeDetector):
        def __call__(self, image: np.ndarray) -> list[Detection]:
            h, w = image.shape[:2]
            step = w / (self.count + 1)
            return [
                Detection(np.array([i * step, 0.1 * h, (i + 1) * step, 0.9 * h]), 0.9)
                for i in range(self.count)
            ]

    pipeline = PosePipeline(PipelineConfig(knob=0.5), Crowd(people), model=EViTPose(TINY, 19))
    frames = open_source(str(clip))
    summary = annotate_video(
        frames, pipeline, open_writer(frames, str(clip), out), Overlays(patches=True), progress=False
    )
    assert summary.frames == 3 and max(summary.people) == people
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (width + width % 2, height + height % 2)
        assert sum(1 for _ in container.decode(video=0)) == 3


class Arriving(FakeDetector):
    """One more person from frame ``at`` on; records the frames it ran on."""

    def __init__(self, at: int) -> None:
        super().__init__(count=1)
        self.at, self.ran_on, self.frame = at, [], 0

    def __call__(self, image: np.ndarray) -> list[Detection]:
        self.ran_on.append(self.frame)
        self.count = 1 if self.frame < self.at else 2
        return super().__call__(image)


def test_detector_runs_every_k_frames_when_calm_and_every_other_while_people_arrive() -> None:
    detector = Arriving(at=12)
    pipeline = PosePipeline(PipelineConfig(detect_every=6, knob=1.0), detector, model=EViTPose(TINY, 19))
    image = np.full((H, W, 3), 40, np.uint8)
    for i in range(40):
        detector.frame = i
        pipeline.step(Frame(i, image, i / 25))
    gaps = np.diff(detector.ran_on)
    # first person: frame 0 (empty scene), then every other frame while the track is new, then calm
    assert detector.ran_on[:2] == [0, 3] and gaps.max() == 6
    arrived = next(f for f in detector.ran_on if f >= 12)  # the run that sees the second person
    after = [f for f in detector.ran_on if arrived <= f <= arrived + 10]
    assert np.all(np.diff(after) == 3)  # changing scene: half the interval, never every frame
    assert gaps.min() >= 3


class ArrivingByImage(FakeDetector):
    """One more person from frame ``at`` on, the frame read from the image's first pixel; records the frame
    and thread of each call."""

    def __init__(self, at: int) -> None:
        super().__init__(count=1)
        self.at, self.ran_on, self.threads = at, [], set()

    def __call__(self, image: np.ndarray) -> list[Detection]:
        frame = int(image[0, 0, 0])
        self.ran_on.append(frame)
        self.threads.add(threading.current_thread().name)
        self.count = 1 if frame < self.at else 2
        return super().__call__(image)


def test_detecting_the_upcoming_frame_early_changes_nothing_but_the_thread() -> None:
    frames = []
    for i in range(40):
        image = np.full((H, W, 3), 40, np.uint8)
        image[0, 0, 0] = i
        frames.append(Frame(i, image, i / 25))
    model = EViTPose(TINY, 19)
    runs = {}
    for early in (False, True):
        detector = ArrivingByImage(at=12)
        pipeline = PosePipeline(PipelineConfig(detect_every=6, knob=1.0), detector, model=model)
        results = [
            pipeline.step(frame, frames[i + 1] if early and i + 1 < len(frames) else None)
            for i, frame in enumerate(frames)
        ]
        runs[early] = detector, results
    (in_turn, plain), (ahead, overlapped) = runs[False], runs[True]
    assert ahead.ran_on == in_turn.ran_on and len(in_turn.ran_on) > 5
    assert in_turn.threads == {threading.main_thread().name}
    assert any(name.startswith("poseapp-detect") for name in ahead.threads)
    for a, b in zip(plain, overlapped, strict=True):
        assert a.detector_ran == b.detector_ran
        assert [p.track_id for p in a.people] == [p.track_id for p in b.people]
        for pa, pb in zip(a.people, b.people, strict=True):
            np.testing.assert_array_equal(pa.keypoints, pb.keypoints)


class Walking(FakeDetector):
    """``count`` people side by side, all walking right 4 px a call."""

    def __call__(self, image: np.ndarray) -> list[Detection]:
        shift = 4.0 * self.calls
        return [Detection(d.box + [shift, 0, shift, 0], d.score) for d in super().__call__(image)]


def test_a_budget_too_small_for_everyone_poses_the_longest_waiting_and_carries_the_others() -> None:
    model = EViTPose(TINY, 19)
    grid = model.knob.grid(5)
    latency = LatencyModel(grid, np.zeros(5), np.full(5, 10.0), rate=0.0)  # 10 ms a crop at any knob
    cfg = PipelineConfig(budget_ms=25.0, detect_every=1)  # 2 crops fit 0.9 x 25 ms, 3 do not
    pipeline = PosePipeline(cfg, Walking(5), model=model, latency=latency)
    image = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    results = [pipeline.step(Frame(i, image, i / 25)) for i in range(7)]
    assert [r.posed for r in results] == [2] * 7
    assert [len(r.people) for r in results] == [2, 4, 5, 5, 5, 5, 5]  # shown from their first pose
    last_fresh, fresh_frames = {}, {}
    for i, result in enumerate(results):
        fresh = {p.track_id for p in result.people if p.track_id not in last_fresh or
                 p.record is not last_fresh[p.track_id].record}  # fmt: skip
        assert len(fresh) == 2
        for person in result.people:
            if person.track_id in fresh:
                last_fresh[person.track_id] = person
                fresh_frames.setdefault(person.track_id, []).append(i)
                continue
            moved = carried(last_fresh[person.track_id], person.box)  # the last pose, moved with the track
            np.testing.assert_allclose(person.keypoints, moved.keypoints)
            np.testing.assert_allclose(person.crop_matrix, moved.crop_matrix)
    # round robin: nobody waits more than 3 frames for a fresh pose
    assert all(np.diff(frames).max() <= 3 for frames in fresh_frames.values())
    assert sorted(fresh_frames) == [1, 2, 3, 4, 5]


def test_carried_pose_follows_the_box_and_keeps_the_crop_consistent() -> None:
    keypoints = np.array([[10.0, 20.0], [30.0, 60.0]])
    matrix = np.array([[2.0, 0.0, -10.0], [0.0, 2.0, -20.0]])
    person = Person(1, np.array([0.0, 0.0, 40.0, 80.0]), keypoints, np.ones(2), matrix)
    moved = carried(person, np.array([100.0, 50.0, 120.0, 90.0]))  # shifted, half the width and height
    np.testing.assert_allclose(moved.keypoints, [[105.0, 60.0], [115.0, 80.0]])
    # a joint maps to the same crop pixel before and after the move
    crop_before = matrix[:, :2] @ keypoints[0] + matrix[:, 2]
    crop_after = moved.crop_matrix[:, :2] @ moved.keypoints[0] + moved.crop_matrix[:, 2]
    np.testing.assert_allclose(crop_after, crop_before)


def test_a_model_built_for_smaller_crops_poses_every_person() -> None:
    model = EViTPose(ViTSize(48, 4, 3), 19, img_hw=(192, 144), prune_layers=(2,))
    pipeline = PosePipeline(PipelineConfig(knob=0.5), FakeDetector(2), model=model)
    result = pipeline.step(Frame(0, np.full((H, W, 3), 90, np.uint8), 0.0))
    assert len(result.people) == 2
    for person in result.people:
        assert person.record.grid == (12, 9) and np.isfinite(person.keypoints).all()
        x0, y0, x1, y1 = person.box
        crop_corner = person.crop_matrix @ np.array([x1, y1, 1.0])  # the box fits inside the 144x192 crop
        assert (crop_corner > 0).all() and (crop_corner < [144, 192]).all()
    assert pipeline.measure_ms(0.5, 2, runs=1) > 0
