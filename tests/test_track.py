"""Tracker: the Kalman box filter, stable ids through gaps and crossings, track death, refinement and the
detection signal."""

from __future__ import annotations

import numpy as np
import pytest

from poseapp.geometry import iou_matrix
from poseapp.results import Detection
from poseapp.runtime.track import BoxKalman, Tracker
from poseapp.skeleton import NUM_JOINTS


def box_at(cx: float, cy: float, w: float = 60.0, h: float = 160.0) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def dets(*boxes: np.ndarray) -> list[Detection]:
    return [Detection(b, 0.9) for b in boxes]


def test_box_kalman_learns_velocity():
    kf = BoxKalman(box_at(100, 200))
    for i in range(1, 15):
        kf.predict()
        kf.update(box_at(100 + 8 * i, 200))
    for _ in range(15, 20):
        kf.predict()
    np.testing.assert_allclose(kf.box, box_at(100 + 8 * 19, 200), atol=8)


@pytest.mark.parametrize("gap", ["none", "empty"])
def test_same_id_through_detection_gap(gap):
    tracker = Tracker()
    ids = set()
    for f in range(25):
        box = box_at(100 + 10 * f, 200)
        if 10 <= f < 15:
            tracks = tracker.update(None if gap == "none" else [], f)
            assert len(tracks) == 1 and iou_matrix(tracks[0].box, box)[0, 0] > 0.7  # coasting keeps up
        else:
            tracks = tracker.update(dets(box), f)
        ids.update(t.id for t in tracks)
    assert ids == {1}


def test_dropped_frames_are_predicted_through():
    tracker = Tracker()
    for f in range(10):
        tracker.update(dets(box_at(100 + 10 * f, 200)), f)
    (track,) = tracker.update(None, 14)  # frames 10..13 never reached the tracker
    assert track.misses == 5
    np.testing.assert_allclose(track.box, box_at(240, 200), atol=6)


def test_crossing_people_keep_ids():
    tracker = Tracker()
    rng = np.random.default_rng(1)
    history: dict[int, list[float]] = {}
    for f in range(40):
        a, b = box_at(100 + 8 * f, 200), box_at(420 - 8 * f, 215)  # cross at f = 20
        boxes = [a, b] if rng.random() < 0.5 else [b, a]
        for t in tracker.update(dets(*boxes), f):
            history.setdefault(t.id, []).append((t.box[0] + t.box[2]) / 2)
    assert sorted(history) == [1, 2]
    for xs in history.values():
        assert len(xs) == 40
        steps = np.sign(np.diff(xs))
        assert np.all(steps == steps[0])  # each id keeps moving one way: no swap at the crossing


def test_new_person_gets_new_id_and_ids_never_reused():
    tracker = Tracker(max_misses=3)
    (first,) = tracker.update(dets(box_at(100, 200)), 0)
    tracks = tracker.update(dets(box_at(100, 200), box_at(500, 200)), 1)
    assert [t.id for t in tracks] == [first.id, first.id + 1]
    for f in range(2, 7):  # both leave
        tracker.update([], f)
    assert tracker.update([], 7) == []
    (back,) = tracker.update(dets(box_at(100, 200)), 8)  # same place, but a new track
    assert back.id == first.id + 2


def test_track_dies_after_max_misses():
    tracker = Tracker(max_misses=5)
    tracker.update(dets(box_at(100, 200)), 0)
    for f in range(1, 6):
        assert len(tracker.update(None, f)) == 1, f  # survives max_misses unseen frames
    assert tracker.update(None, 6) == []
    assert tracker.lost_recently


def test_min_hits_and_unconfirmed_drop():
    tracker = Tracker(min_hits=2)
    assert tracker.update(dets(box_at(100, 200)), 0) == []
    assert [t.id for t in tracker.update(dets(box_at(102, 200)), 1)] == [1]
    tracker.update(dets(box_at(104, 200), box_at(600, 200)), 2)  # id 2 tentative
    tracker.update(dets(box_at(106, 200)), 3)  # ... and missed once: dropped
    assert [t.id for t in tracker.update(dets(box_at(108, 200), box_at(600, 200)), 4)] == [1]


def test_refine_moves_box_and_resets_misses():
    tracker = Tracker(max_misses=3)
    (track,) = tracker.update(dets(box_at(100, 200)), 0)
    for f in range(1, 10):  # pose keeps seeing the person although the detector does not run
        (track,) = tracker.update(None, f)
        assert track.misses == 1
        track = tracker.refine(track.id, box_at(100 + 5 * f, 200))
    assert track.misses == 0 and track.hits == 1
    assert 120 < (track.box[0] + track.box[2]) / 2 <= 145
    with pytest.raises(KeyError):
        tracker.refine(99, box_at(0, 0))


def test_pose_alone_keeps_a_track_only_max_undetected_frames():
    tracker = Tracker(max_misses=3, max_undetected=12)
    (track,) = tracker.update(dets(box_at(100, 200)), 0)
    for f in range(1, 13):  # the detector never confirms it again; the pose model keeps "seeing" it
        (track,) = tracker.update(None if f % 5 else [], f)
        tracker.refine(track.id, box_at(100, 200))
    assert tracker.update(None, 13) == []


def test_a_duplicate_track_goes_at_the_next_detection():
    tracker = Tracker()
    tracker.update(dets(box_at(100, 200)), 0)
    tracker.update(dets(box_at(100, 200), box_at(160, 200)), 1)  # a second, shifted box: a second track
    for f in range(2, 12):  # ... that the pose pulls onto the first person between detector runs
        assert len(tracker.update(None, f)) == 2
        tracker.refine(1, box_at(100, 200))
        tracker.refine(2, box_at(101, 200))
    kept = tracker.update(dets(box_at(100, 200)), 12)
    assert [t.id for t in kept] == [1]
    assert not tracker.lost_recently  # a duplicate is not a person who left


def test_oks_cue_overrides_ambiguous_boxes():
    rng = np.random.default_rng(2)
    pose_a, pose_b = rng.uniform(0, 60, (2, NUM_JOINTS, 2)) + [100, 120]
    for weight, follows_pose in ((0.0, False), (0.8, True)):
        tracker = Tracker(oks_weight=weight)
        tracker.update(dets(box_at(130, 200), box_at(150, 200)), 0)
        tracker.refine(1, box_at(130, 200), pose_a)
        tracker.refine(2, box_at(150, 200), pose_b)
        # The overlapping boxes say nobody moved; the poses say the two swapped places.
        swapped = np.stack([pose_a, pose_b])
        tracks = tracker.update(dets(box_at(150, 200), box_at(130, 200)), 1, keypoints=swapped)
        centre_1 = (tracks[0].box[0] + tracks[0].box[2]) / 2
        assert (centre_1 > 140) == follows_pose, weight


def test_needs_detection_signal():
    tracker = Tracker(recent_frames=3, max_coast=5, max_misses=30)
    tracker.update(dets(box_at(100, 200)), 0)
    assert tracker.needs_detection(1)  # a new person just appeared
    for f in range(1, 8):
        (track,) = tracker.update(None, f)
        tracker.refine(track.id, box_at(100, 200))
    assert not tracker.needs_detection(8)  # stable scene, pose keeps the track measured
    for f in range(8, 13):
        tracker.update(None, f)
    assert tracker.needs_detection(13)  # coasted max_coast frames without a measurement
    tracker.update(dets(box_at(100, 200)), 13)
    assert not tracker.needs_detection(14)


def test_a_collapsing_coasting_box_is_dropped_before_max_misses():
    tracker = Tracker(max_misses=30, min_side=4.0)
    for f, height in enumerate((200, 150, 100)):  # a person walking away: the box shrinks fast
        tracker.update(dets(np.array([100.0, 100.0, 100.0 + height / 2, 100.0 + height])), f)
    lost_at = next(f for f in range(3, 30) if not tracker.update(None, f))
    assert lost_at < 10  # the box hit the floor of min_side long before 30 unseen frames
    assert tracker.lost_recently
