"""The viewer's processing thread: capture -> pose pipeline -> overlays, steered by the window.

The window never touches the pipeline. It posts commands (open a source, load a model, set the knob or
budget, record) that the worker runs between frames, and it flips plain flags (pause, step, overlays)
under the same lock. A failing command or frame is reported through ``error`` and the worker carries on,
waiting for the next command.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from PyQt6.QtCore import QObject, QThread, pyqtSignal

from poseapp.io.video import CaptureThread, SourceInfo, VideoError, VideoWriter, open_source
from poseapp.models import Knob
from poseapp.results import Frame
from poseapp.runtime.pipeline import PosePipeline
from poseapp.runtime.render import Overlays, draw_result

PipelineFactory = Callable[[str], PosePipeline]
"""Checkpoint path -> a fresh pipeline (a new model, tracker and smoother; a detector may be shared):
``poseapp.runtime.build.PipelineBuilder``, or a stand-in in tests."""

_IDLE_POLL_S = 0.1
"""Longest wait for a frame or a command before the loop looks at its flags again."""


@dataclass(frozen=True)
class ModelInfo:
    """What the window shows of a freshly built pipeline."""

    weights: str
    arch: str
    knob: Knob
    pinned: float | None
    """The manual knob value; None while a latency budget drives the knob."""
    device: str
    precision: str
    detect_every: int

    @classmethod
    def of(cls, weights: str, pipeline: PosePipeline) -> ModelInfo:
        model = pipeline.model
        arch = getattr(model, "arch", type(model).__name__)
        return cls(
            weights,
            arch,
            model.knob,
            pipeline.controller.pinned,
            pipeline.cfg.device,
            pipeline.precision,
            pipeline.cfg.detect_every,
        )


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Worker(QThread):
    """Owns the CaptureThread, the PosePipeline and the recording; emits every annotated frame.

    Files play at their own frame rate (every frame, in order); webcams run live (newest frame, the rest
    dropped and counted). Commands posted before ``start()`` run first, in order.
    """

    frame_ready = pyqtSignal(object, object)
    """(annotated BGR image, FrameResult) of each processed frame."""
    error = pyqtSignal(str)
    model_loaded = pyqtSignal(object)
    """ModelInfo of the pipeline now in use (also re-sent when loading another one failed)."""
    source_opened = pyqtSignal(str, object)
    """(spec, SourceInfo) of a source that opened and plays from now on."""
    source_ended = pyqtSignal(str)
    recording_finished = pyqtSignal(str)
    """Path of a finalised recording; "" when a recording could not start."""
    waiting = pyqtSignal()
    """The worker went idle (paused, stepped, end of source, or nothing to run): every frame it produced
    before has been emitted."""

    def __init__(self, pipeline_factory: PipelineFactory, overlays: Overlays, parent: QObject | None = None):
        super().__init__(parent)
        self._factory = pipeline_factory
        self._cond = threading.Condition()
        # Shared with the GUI thread, under _cond:
        self._commands: deque[Callable[[], None]] = deque()
        self._overlays = replace(overlays)
        self._paused = False
        self._steps = 0
        self._stopping = False
        # The worker thread's own state:
        self.pipeline: PosePipeline | None = None
        self.capture: CaptureThread | None = None
        self._weights: str | None = None
        self._budget_ms: float | None = None
        self._knob: float | None = None
        self._flip = False
        self._info: SourceInfo | None = None
        self._spec = ""
        self._writer: VideoWriter | None = None
        self._clock: float | None = None
        """Monotonic time at which a file's frame time 0 is due; None = re-anchor on the next frame."""
        self._ticks: deque[float] = deque(maxlen=30)
        self._idle = False

    # ---- called from the GUI thread -------------------------------------------------------------------

    def load_model(self, weights: str, knob: float | None = None) -> None:
        """Switch to another checkpoint, pinned at ``knob`` (None: the model's default) unless a latency
        budget is set, which carries over."""
        self._post(lambda: self._load(weights, knob))

    def open_source(self, spec: str) -> None:
        """Play a video file, image folder or webcam index ("0") instead of the current source."""
        self._post(lambda: self._open(spec))

    def set_budget(self, budget_ms: float) -> None:
        self._post(lambda: self._set_budget(budget_ms))

    def set_knob(self, value: float) -> None:
        self._post(lambda: self._set_knob(value))

    def set_flip(self, on: bool) -> None:
        """Flip test on or off (twice the pose cost); kept across model switches."""
        self._post(lambda: self._set_flip(on))

    def start_recording(self, path: str) -> None:
        self._post(lambda: self._start_recording(path))

    def stop_recording(self) -> None:
        self._post(self._stop_recording)

    def set_overlays(self, overlays: Overlays) -> None:
        with self._cond:
            self._overlays = replace(overlays)

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused, self._steps = paused, 0
            self._cond.notify_all()

    def step(self) -> None:
        """Pause (if playing) and process exactly one more frame."""
        with self._cond:
            self._paused = True
            self._steps += 1
            self._cond.notify_all()

    def stop(self, timeout_ms: int = 1000) -> bool:
        """Ask the thread to end (closing the source and finalising the recording); True once it has, within
        ``timeout_ms``. It ends between frames: a model load or latency calibration finishes first."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        return self.wait(timeout_ms)

    def _post(self, command: Callable[[], None]) -> None:
        with self._cond:
            self._commands.append(command)
            self._cond.notify_all()

    # ---- the worker thread ----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while self._run_commands():
                try:
                    frame = self._next_frame()
                    if frame is not None:
                        self._process(frame)
                except Exception as exc:  # a broken source or model: report it, keep taking commands
                    self._close_source()
                    self.error.emit(_message(exc))
        finally:
            self._close_source()

    def _run_commands(self) -> bool:
        """Run the commands posted since the last frame; False once stopping."""
        with self._cond:
            commands, self._commands = self._commands, deque()
            stopping = self._stopping
        for command in commands if not stopping else ():
            try:
                command()
            except Exception as exc:  # e.g. no webcam, a bad file or checkpoint: the rest still runs
                self.error.emit(_message(exc))
        return not stopping

    def _next_frame(self) -> Frame | None:
        with self._cond:
            stepping = self._steps > 0
            idle = self.capture is None or self.pipeline is None or (self._paused and not stepping)
            if idle:
                self._clock = None
                announce, self._idle = not self._idle, True
                if not announce:
                    self._cond.wait(_IDLE_POLL_S)
        if idle:
            if announce:
                self.waiting.emit()
            return None
        try:
            frame = self.capture.get(timeout=_IDLE_POLL_S)
        except TimeoutError:
            return None
        if frame is None:
            self._end_of_source()
            return None
        if stepping:
            with self._cond:
                self._steps = max(self._steps - 1, 0)
        if not stepping and not self._info.live:
            self._pace(frame.time)
        return frame

    def _pace(self, frame_time: float) -> None:
        """Wait until ``frame_time`` is due; a frame more than one frame late re-anchors the clock."""
        now = time.monotonic()
        if self._clock is None or now - (self._clock + frame_time) > 1 / self._info.fps:
            self._clock = now - frame_time
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, self._clock + frame_time - now)

    def _process(self, frame: Frame) -> None:
        result = self.pipeline.step(frame, None if self._info.live else self.capture.peek())
        self._ticks.append(time.monotonic())
        if len(self._ticks) > 1:
            result.fps = (len(self._ticks) - 1) / max(self._ticks[-1] - self._ticks[0], 1e-9)
        result.dropped = self.capture.dropped
        with self._cond:
            overlays = self._overlays
            self._idle = False
        image = draw_result(frame.image, result, overlays)
        if self._writer is not None:
            self._writer.write(image)
        self.frame_ready.emit(image, result)

    def _end_of_source(self) -> None:
        live = self._info.live
        self._close_source()
        if live:
            self.error.emit(f"webcam {self._spec} stopped delivering frames (unplugged?)")
        else:
            self.source_ended.emit(f"end of {self._spec}")

    def _close_source(self) -> None:
        self._stop_recording()
        if self.capture is not None:
            self.capture.stop()
            self.capture, self._info = None, None

    # ---- commands (worker thread) ---------------------------------------------------------------------

    def _load(self, weights: str, knob: float | None) -> None:
        previous = self.pipeline
        try:
            self._build(weights, knob)
        except Exception:
            if previous is not None:  # keep running the model in use and let the window show it again
                self.model_loaded.emit(ModelInfo.of(self._weights, previous))
            raise

    def _build(self, weights: str, knob: float | None) -> None:
        """A new pipeline under the current budget, or pinned at ``knob`` (None: the model's default)."""
        pipeline = self._factory(weights)
        pipeline.set_flip(self._flip)
        if self._budget_ms is not None:
            pipeline.set_budget(self._budget_ms)
        elif knob is not None:
            pipeline.set_knob(knob)
        self.pipeline, self._weights, self._knob = pipeline, weights, knob
        self.model_loaded.emit(ModelInfo.of(weights, pipeline))

    def _open(self, spec: str) -> None:
        self._close_source()
        source = open_source(spec)
        if self.pipeline is not None:
            self.pipeline.reset()  # a new source starts with no tracks, no smoothing history and frame 0
        self.capture = CaptureThread(source)
        self.capture.start()
        self._info, self._spec = source.info, spec
        self._ticks.clear()
        with self._cond:
            self._paused, self._steps = False, 0
        self.source_opened.emit(spec, source.info)

    def _set_budget(self, budget_ms: float) -> None:
        self._budget_ms = budget_ms
        if self.pipeline is not None:
            self.pipeline.set_budget(budget_ms)

    def _set_knob(self, value: float) -> None:
        self._budget_ms, self._knob = None, value
        if self.pipeline is not None:
            self.pipeline.set_knob(value)

    def _set_flip(self, on: bool) -> None:
        self._flip = on
        if self.pipeline is not None:
            self.pipeline.set_flip(on)

    def _start_recording(self, path: str) -> None:
        self._stop_recording()
        try:
            if self._info is None:
                raise VideoError("open a video or webcam before recording")
            self._writer = VideoWriter(path, self._info.width, self._info.height, self._info.fps)
        except BaseException:
            self.recording_finished.emit("")
            raise

    def _stop_recording(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            self.recording_finished.emit(writer.path)
