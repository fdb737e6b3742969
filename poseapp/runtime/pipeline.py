"""One frame through the whole chain: detect (every k-th frame) -> track -> batched pose -> smoothing.

``PosePipeline.step`` runs on the caller's thread; given the frame after this one it runs that frame's
detection, when due, on a detector thread while this frame's people are posed (``step``'s ``upcoming``),
with results identical to detecting in turn. The threads around it (capture, writer, GUI worker) live in
``io/video.py``, ``runtime/video_job.py`` and ``app/``. The knob for each frame comes from the budget
controller (fixed when the user pins it; under a budget also for a model without a dial, whose people it
then poses in turn), so a new model plugs in without new pipeline code.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..geometry import box_from_keypoints, box_motion, invert_matrix, xyxy_to_xywh
from ..models import PoseOutput, load_model, prepare_for_inference
from ..paths import CHECKOUT, default_weights
from ..results import Detection, Frame, FrameResult, Person, PoseRecord
from ..threads import lower_thread_priority
from .budget import BudgetController, LatencyModel
from .flops import count_macs
from .inference import pose_logits
from .latency_cache import cached_latency, default_cache_dir, latency_key
from .precision import autocast
from .predictor import TopDownPredictor
from .smoothing import KeypointSmoother
from .track import Track, Tracker

REPO = CHECKOUT
"""The folder holding the package (``tools/batch.py`` puts it on its Ray workers' ``PYTHONPATH``)."""
DEFAULT_WEIGHTS = default_weights()
"""Resolved once, at import (``paths.py``: ``$POSEAPP_HOME``, the checkout, or the installed share folder)."""


@dataclass
class PipelineConfig:
    weights: str | Path = DEFAULT_WEIGHTS
    device: str = "cpu"
    precision: str = "auto"
    """``auto``: bf16 autocast where the device has it natively (``precision.py``), else fp32."""
    detect_every: int = 5
    """Longest gap between detector runs; shorter while tracks are lost or the scene is empty."""
    budget_ms: float | None = None
    """Pose milliseconds per frame to stay under (the knob adapts); None = fixed knob."""
    knob: float | None = None
    """Fixed knob value (keep ratio / eta); None = the model's default."""
    smoothing: bool = True
    min_cutoff: float = 1.0
    beta: float = 0.05
    max_people: int = 32
    min_joint_score: float = 0.3
    flip: bool = False
    """Flip test (``inference.pose_logits``): each crop also runs mirrored, at twice the cost."""
    latency_cache: Path | None = field(default_factory=default_cache_dir)
    """Folder of start-up latency calibrations (``latency_cache.py``); None = calibrate every time."""


def detector_interval(detect_every: int, calm: bool) -> int:
    """Frames between detector runs: ``detect_every`` in a calm scene (people tracked, none just lost or
    new, none coasting), half of it (at least 1) while the scene is empty or changing. Halved, not every
    frame: a person entering or a flickering detection would otherwise keep the detector on every frame
    for the whole time the scene keeps changing."""
    return detect_every if calm else max(1, detect_every // 2)


def carried(person: Person, box: np.ndarray) -> Person:
    """``person``'s pose moved with its track from ``person.box`` to ``box`` (a frame it was not posed)."""
    motion = box_motion(person.box, box)
    keypoints = person.keypoints @ motion[:, :2].T + motion[:, 2]
    inverse = np.vstack([invert_matrix(motion), [0.0, 0.0, 1.0]])
    crop = person.crop_matrix @ inverse
    return Person(person.track_id, np.asarray(box, np.float64), keypoints, person.scores, crop, person.record)


def pose_order(tracks: list[Track], last_posed: dict[int, int]) -> list[int]:
    """Positions in ``tracks`` by who should be posed first: never posed, then longest since posed,
    then larger box."""

    def key(i: int) -> tuple[float, float]:
        box = tracks[i].box
        return (last_posed.get(tracks[i].id, -np.inf), -(box[2] - box[0]) * (box[3] - box[1]))

    return sorted(range(len(tracks)), key=key)


def person_records(model: nn.Module, out: PoseOutput) -> list[PoseRecord]:
    """Split a batch's run record into one ``PoseRecord`` per person (numpy, for the overlays)."""
    patch = model.patch if out.granularity is None else 2 * model.patch
    records = []
    for i in range(out.heatmaps.shape[0]):
        record = PoseRecord(grid=out.grid, patch=patch)
        record.kept_patches = [k[i].cpu().numpy() for k in out.kept_patches]
        record.window_boxes = [boxes[i].cpu().numpy() for boxes in out.window_boxes]
        record.joint_attention = [seen[i].float().cpu().numpy() for seen in out.joint_attention]
        if out.granularity is not None:
            record.granularity = out.granularity[i].cpu().numpy()
            if out.fine_stage[i]:
                record.token_boxes = out.token_boxes[i].cpu().numpy()
                record.merge_groups = [g[i].cpu().numpy() for g in out.merge_groups]
        records.append(record)
    return records


class PosePipeline:
    """Detector + tracker + pose model + smoother, one frame at a time."""

    def __init__(
        self,
        cfg: PipelineConfig,
        detector,
        model: nn.Module | None = None,
        latency: LatencyModel | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        model = prepare_for_inference(model if model is not None else load_model(cfg.weights))
        self.predictor = TopDownPredictor(model, self.device, cfg.precision)
        self.model, self.precision = self.predictor.model, self.predictor.precision
        self.detector = detector
        self.controller = self._controller(latency)
        self._detector_thread: ThreadPoolExecutor | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every person: a new source starts with no tracks and no smoothing history."""
        self.tracker = Tracker()
        self.smoother = KeypointSmoother(self.cfg.min_cutoff, self.cfg.beta, enabled=self.cfg.smoothing)
        self._last_detection = -(10**9)
        self._tracked = 0
        self._early: tuple[int, Future[list[Detection]]] | None = None
        """(frame index, its detections computing on the detector thread), from ``step``'s ``upcoming``."""
        self._poses: dict[int, tuple[int, Person]] = {}
        """Track id -> (frame index, the person as last posed), for people a budget could not pose."""

    def _controller(self, latency: LatencyModel | None) -> BudgetController:
        knob = self.model.knob
        if self.cfg.budget_ms is None:
            return BudgetController.fixed(knob, knob.clamp(self.cfg.knob))
        # A model without a dial (an ONNX graph) still gets a budget: its one value, and as many people a
        # frame as fit, the others in turn (``BudgetController.capacity``).
        if latency is None:
            latency = cached_latency(
                latency_key(self.model, self.device, self.precision, self.cfg.flip),
                lambda: LatencyModel.calibrate(self.measure_ms, knob),
                self.cfg.latency_cache,
            )
        return BudgetController(knob, latency, self.cfg.budget_ms)

    @torch.inference_mode()
    def measure_ms(self, knob: float, n: int, runs: int = 2) -> float:
        """Median milliseconds of one pose call on ``n`` crops at ``knob`` (for calibration)."""
        w, h = self.model.input_size
        x = torch.rand(n, 3, h, w, device=self.device).contiguous(
            memory_format=torch.channels_last
        )  # as crops
        with autocast(self.precision, self.device):
            pose_logits(self.model, x, knob, self.cfg.flip)  # each knob and batch size is a new shape: slower
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                pose_logits(self.model, x, knob, self.cfg.flip)
                times.append(1000 * (time.perf_counter() - start))
        return float(np.median(times))

    def set_budget(self, budget_ms: float | None) -> None:
        """Switch to (or retune) the latency budget at run time; None pins the current knob.

        The latency model is calibrated once per pipeline and kept across switches."""
        self.cfg.budget_ms = budget_ms
        latency = self.controller.model
        if budget_ms is None:
            self.controller = BudgetController.fixed(self.model.knob, self.controller.choose(0), latency)
        elif self.controller.is_fixed:
            self.controller = self._controller(latency)
        else:
            self.controller.budget_ms = budget_ms

    def set_flip(self, on: bool) -> None:
        """Switch the flip test on or off from the next frame; a latency budget re-calibrates for it."""
        if on == self.cfg.flip:
            return
        self.cfg.flip = on
        if not self.controller.is_fixed:
            self.controller = self._controller(None)

    def set_knob(self, value: float) -> None:
        """Pin the knob (keep ratio / eta) from the next frame on."""
        self.cfg.knob, self.cfg.budget_ms = value, None
        knob = self.model.knob
        self.controller = BudgetController.fixed(knob, knob.clamp(value), self.controller.model)

    def _detection_due(self, index: int) -> bool:
        calm = self._tracked > 0 and not self.tracker.needs_detection(index)
        return index - self._last_detection >= detector_interval(self.cfg.detect_every, calm)

    def _detect(self, frame: Frame) -> list[Detection] | None:
        early, self._early = self._early, None
        if not self._detection_due(frame.index):
            return None  # an early detection of this frame, started on a guess, is not used
        self._last_detection = frame.index
        if early is not None and early[0] == frame.index:
            return early[1].result()
        return self.detector(frame.image)

    def _detect_early(self, upcoming: Frame) -> None:
        """Start ``upcoming``'s detection on the detector thread if it looks due now. Whether it is due is
        decided again when ``upcoming`` is stepped, after this frame's poses have refined the tracks; the
        two differ rarely (a pose refinement ending a long coast), and then the detection runs in turn or
        its early result goes unused, so the results never depend on it."""
        if not self._detection_due(upcoming.index):
            return
        if self._detector_thread is None:
            self._detector_thread = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="poseapp-detect", initializer=lower_thread_priority
            )
        self._early = (upcoming.index, self._detector_thread.submit(self.detector, upcoming.image))

    @torch.inference_mode()
    def step(self, frame: Frame, upcoming: Frame | None = None) -> FrameResult:
        """Detect (when due), track and pose ``frame``. ``upcoming``: the frame the next call will get, when
        known (a file); its detection, when due, then runs beside this frame's poses."""
        detections = self._detect(frame)
        tracks = self.tracker.update(detections, frame.index)[: self.cfg.max_people]
        self._tracked = len(tracks)
        if upcoming is not None:
            self._detect_early(upcoming)
        live = {t.id for t in tracks}
        self._poses = {tid: pose for tid, pose in self._poses.items() if tid in live}
        self.smoother.forget(live)
        if not tracks:
            return FrameResult(frame, [], self.controller.choose(0), 0.0, 0.0, detections is not None)
        beside = self._early is not None  # the next frame's detection runs during these poses
        count = self.controller.capacity(len(tracks), beside)
        chosen = sorted(pose_order(tracks, {tid: f for tid, (f, _) in self._poses.items()})[:count])
        posed = [tracks[i] for i in chosen]
        knob = self.controller.choose(len(posed), beside)
        boxes = xyxy_to_xywh(np.stack([t.box for t in posed]))
        topdown = self.predictor(frame.image, boxes, knob, self.cfg.flip)
        out = topdown.output
        self.controller.record(knob, len(posed), topdown.pose_ms, beside)
        records = person_records(self.model, out)[: len(posed)]
        for track, kp, sc, m, record in zip(
            posed, topdown.keypoints, topdown.scores, topdown.matrices, records, strict=True
        ):
            kp = self.smoother.smooth(track.id, kp, frame.time)
            refined = box_from_keypoints(kp, sc, self.cfg.min_joint_score)
            if refined is not None:
                self.tracker.refine(track.id, refined, kp, sc)
            self._poses[track.id] = (frame.index, Person(track.id, track.box, kp, sc, m, record))
        people = []
        for track in tracks:
            if track.id in self._poses:  # a track the budget has not reached yet is shown from its first pose
                f, person = self._poses[track.id]
                people.append(person if f == frame.index else carried(person, track.box))
        gflops = float(count_macs(self.model, out).sum()) / 1e9  # both passes under the flip test
        result = FrameResult(frame, people, out.knob, topdown.pose_ms, gflops, detections is not None)
        if len(posed) < len(tracks):
            result.posed = len(posed)
        return result
