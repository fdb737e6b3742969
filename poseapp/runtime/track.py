"""Multi-person tracking by detection: a Kalman filter per box, Hungarian matching on IoU.

The detector need not run every frame. On a skipped frame the tracker only predicts; the pipeline then
corrects each track with the box of its pose (``Tracker.refine``), so a person the pose model still sees
confidently stays tracked between detector runs. ``Tracker.needs_detection`` tells the pipeline when the
scene has changed enough that the detector should run again soon.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from filterpy.kalman import KalmanFilter
from scipy.optimize import linear_sum_assignment

from ..geometry import iou_matrix, oks_matrix
from ..results import Detection


class BoxKalman:
    """Constant-velocity Kalman filter of one box: state [cx, cy, w, h, vcx, vcy, vw, vh], per frame.

    Width and height rather than SORT's area and aspect keep the model linear and the size velocities
    meaningful. Process and measurement noise are proportional to the box height (as in DeepSORT), so the
    filter behaves the same for a near and a far person.
    """

    def __init__(self, box: np.ndarray, pos_std: float = 1 / 20, vel_std: float = 1 / 160):
        self.pos_std = pos_std
        self.vel_std = vel_std
        z = _to_cxcywh(box)
        kf = KalmanFilter(dim_x=8, dim_z=4)
        kf.F = np.eye(8)
        kf.F[:4, 4:] = np.eye(4)
        kf.H = np.eye(4, 8)
        kf.x = np.concatenate([z, np.zeros(4)])[:, None]
        kf.P = np.diag(np.square(np.r_[[2 * pos_std * z[3]] * 4, [10 * vel_std * z[3]] * 4]))
        self._kf = kf

    def predict(self) -> np.ndarray:
        """Advance one frame; returns the predicted box."""
        h = self._kf.x[3, 0]
        q = np.diag(np.square(np.r_[[self.pos_std * h] * 4, [self.vel_std * h] * 4]))
        self._kf.predict(Q=q)
        # A shrinking box coasting for long must not turn inside out.
        for i in (2, 3):
            if self._kf.x[i, 0] < 1.0:
                self._kf.x[i, 0], self._kf.x[i + 4, 0] = 1.0, 0.0
        return self.box

    def update(self, box: np.ndarray, noise_scale: float = 1.0) -> np.ndarray:
        """Correct with a measured box (``noise_scale`` > 1 trusts it less); returns the corrected box."""
        z = _to_cxcywh(box)
        r = np.diag(np.full(4, (noise_scale * self.pos_std * z[3]) ** 2))
        self._kf.update(z[:, None], R=r)
        return self.box

    @property
    def box(self) -> np.ndarray:
        """(4,) x0, y0, x1, y1 of the current state."""
        cx, cy, w, h = self._kf.x[:4, 0]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _to_cxcywh(box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0), max(y1 - y0, 1.0)])


@dataclass
class Track:
    id: int
    box: np.ndarray
    """(4,) x0, y0, x1, y1: the filter's estimate for the current frame."""
    score: float
    """Score of the last detection matched to it."""
    hits: int = 1
    """Detections matched to it so far (its first included)."""
    age: int = 0
    """Frames since it was created."""
    misses: int = 0
    """Consecutive frames without a measurement (detection or pose refinement)."""
    undetected: int = 0
    """Frames since the detector last matched it (pose refinements do not count)."""
    confirmed: bool = False
    keypoints: np.ndarray | None = None
    """(J, 2) last pose given to ``Tracker.refine``: the OKS association cue."""
    keypoint_scores: np.ndarray | None = None


class Tracker:
    """SORT-style tracker with stable ids that are never reused.

    A track survives ``max_misses`` consecutive frames without a measurement and is dropped on the next;
    pose refinements count as measurements, but they keep a track alive at most ``max_undetected`` frames
    past its last detection, so a pose model that answers on background cannot keep a ghost alive. A
    coasting box that shrinks to under ``min_side`` pixels wide or high has lost its person and is dropped
    at once (otherwise a person walking out of view leaves a dwindling box that is posed for a second). At a
    detector run, a confirmed track left unmatched whose box overlaps a matched one by IoU >=
    ``duplicate_iou`` is a duplicate of that person (two tracks refined onto one body) and is dropped.
    A track is reported once confirmed (``min_hits`` matched detections); an unconfirmed one is dropped as
    soon as a detector run misses it. Matching requires IoU >= ``iou_threshold``; among the allowed pairs
    the cost is 1 - similarity, where similarity is the IoU, or, with ``oks_weight`` > 0 and poses on both
    sides, ``(1 - oks_weight) * IoU + oks_weight * OKS``.
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_misses: int = 15,
        max_undetected: int = 30,
        duplicate_iou: float = 0.75,
        min_hits: int = 1,
        max_coast: int = 10,
        recent_frames: int = 10,
        oks_weight: float = 0.0,
        refine_noise: float = 2.0,
        min_side: float = 4.0,
    ):
        self.iou_threshold = iou_threshold
        self.max_misses = max_misses
        self.max_undetected = max_undetected
        self.duplicate_iou = duplicate_iou
        self.min_hits = min_hits
        self.max_coast = max_coast
        """``needs_detection`` once a track has gone this many frames without a measurement."""
        self.recent_frames = recent_frames
        """How long a lost track or a new person keeps ``needs_detection`` true."""
        self.oks_weight = oks_weight
        self.refine_noise = refine_noise
        self.min_side = min_side
        """Measurement noise of a pose box relative to a detector box (the pose box is less exact)."""
        self._tracks: dict[int, Track] = {}
        self._filters: dict[int, BoxKalman] = {}
        self._next_id = 1
        self._frame = -1
        self._last_lost: int | None = None
        self._last_born: int | None = None

    def update(
        self,
        detections: list[Detection] | None,
        frame_index: int,
        keypoints: np.ndarray | None = None,
        keypoint_scores: np.ndarray | None = None,
    ) -> list[Track]:
        """Advance to ``frame_index`` and return the confirmed tracks (snapshots, by id).

        ``detections`` None means the detector did not run on this frame: tracks are only predicted.
        ``keypoints`` (N, J, 2) / ``keypoint_scores`` (N, J), optional, are the detections' poses when the
        detector provides them (the OKS cue). Frames skipped since the last call (live mode drops frames)
        are predicted through and count as misses.
        """
        steps = 1 if self._frame < 0 else max(1, frame_index - self._frame)
        self._frame = frame_index
        for tid, track in self._tracks.items():
            for _ in range(steps):
                track.box = self._filters[tid].predict()
            track.age += steps
            track.misses += steps
            track.undetected += steps
        if detections is not None:
            self._associate(detections, keypoints, keypoint_scores)
        expired = [
            t.id
            for t in self._tracks.values()
            if t.misses > self.max_misses
            or t.undetected > self.max_undetected
            or min(t.box[2] - t.box[0], t.box[3] - t.box[1]) < self.min_side
        ]
        for tid in expired:
            self._drop(tid, lost=self._tracks[tid].confirmed)
        return [
            dataclasses.replace(t, box=t.box.copy())
            for t in sorted(self._tracks.values(), key=lambda t: t.id)
            if t.confirmed
        ]

    def _associate(
        self, detections: list[Detection], keypoints: np.ndarray | None, keypoint_scores: np.ndarray | None
    ) -> None:
        tracks = list(self._tracks.values())
        det_boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        iou = iou_matrix(np.array([t.box for t in tracks]).reshape(-1, 4), det_boxes)
        sim = self._blend_oks(iou, tracks, keypoints, keypoint_scores)
        rows, cols = linear_sum_assignment(1.0 - np.where(iou >= self.iou_threshold, sim, -1.0))
        matched_tracks, matched_dets = set(), set()
        for r, c in zip(rows, cols, strict=True):
            if iou[r, c] < self.iou_threshold:
                continue
            track = tracks[r]
            track.box = self._filters[track.id].update(det_boxes[c])
            track.score = float(detections[c].score)
            track.hits += 1
            track.misses = track.undetected = 0
            track.confirmed = track.confirmed or track.hits >= self.min_hits
            matched_tracks.add(r)
            matched_dets.add(c)
        matched_boxes = np.array([tracks[r].box for r in matched_tracks]).reshape(-1, 4)
        for r, track in enumerate(tracks):
            if r in matched_tracks:
                continue
            duplicate = (
                track.confirmed
                and iou_matrix(track.box, matched_boxes).max(initial=0.0) >= self.duplicate_iou
            )
            if not track.confirmed or duplicate:
                self._drop(track.id, lost=False)
        for c, det in enumerate(detections):
            if c not in matched_dets:
                self._start(det_boxes[c], float(det.score))

    def _blend_oks(
        self,
        iou: np.ndarray,
        tracks: list[Track],
        keypoints: np.ndarray | None,
        keypoint_scores: np.ndarray | None,
    ) -> np.ndarray:
        if self.oks_weight <= 0 or keypoints is None:
            return iou
        sim = iou.copy()
        for r, track in enumerate(tracks):
            if track.keypoints is None:
                continue
            scores_a = None if track.keypoint_scores is None else track.keypoint_scores[None]
            oks = oks_matrix(track.keypoints[None], keypoints, scores_a, keypoint_scores)[0]
            sim[r] = (1 - self.oks_weight) * iou[r] + self.oks_weight * oks
        return sim

    def _start(self, box: np.ndarray, score: float) -> None:
        tid = self._next_id
        self._next_id += 1
        self._filters[tid] = BoxKalman(box)
        self._tracks[tid] = Track(tid, self._filters[tid].box, score, confirmed=self.min_hits <= 1)
        self._last_born = self._frame

    def _drop(self, tid: int, lost: bool) -> None:
        del self._tracks[tid], self._filters[tid]
        if lost:
            self._last_lost = self._frame

    def refine(
        self,
        track_id: int,
        box: np.ndarray,
        keypoints: np.ndarray | None = None,
        keypoint_scores: np.ndarray | None = None,
    ) -> Track:
        """Correct a live track with the box of its confident pose keypoints; returns its new snapshot.

        A measurement like a detection (noise ``refine_noise`` times larger) that also resets ``misses``,
        but not a hit: only the detector confirms a track.
        """
        track = self._tracks[track_id]
        track.box = self._filters[track_id].update(box, noise_scale=self.refine_noise)
        track.misses = 0
        if keypoints is not None:
            track.keypoints = np.asarray(keypoints, dtype=np.float64)
            track.keypoint_scores = None if keypoint_scores is None else np.asarray(keypoint_scores)
        return dataclasses.replace(track, box=track.box.copy())

    @property
    def lost_recently(self) -> bool:
        """A confirmed track died within the last ``recent_frames`` frames."""
        return self._last_lost is not None and self._frame - self._last_lost <= self.recent_frames

    def needs_detection(self, frame_index: int) -> bool:
        """Whether the detector should run on ``frame_index``.

        True within ``recent_frames`` of a lost track or of a new person (the scene is changing), or when
        a confirmed track has gone ``max_coast`` frames without any measurement.
        """
        recent = [f for f in (self._last_lost, self._last_born) if f is not None]
        if any(frame_index - f <= self.recent_frames for f in recent):
            return True
        return any(t.confirmed and t.misses >= self.max_coast for t in self._tracks.values())
