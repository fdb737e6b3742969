"""The headless video job: source -> pipeline -> annotated H.264 (+ JSON / CSV), with three threads.

The capture thread decodes, the calling thread runs the pose pipeline, and an output thread renders and
encodes, so decoding and encoding overlap the model. Ctrl-C, SIGTERM or a closed preview window stop the
run early and still finalise a playable file of the frames done so far.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from tqdm import tqdm

from ..io.keypoint_files import ResultsExporter
from ..io.video import CaptureThread, FrameSource, VideoWriter
from ..results import FrameResult
from ..threads import lower_thread_priority
from .pipeline import PosePipeline
from .render import Overlays, draw_result

T = TypeVar("T")


@dataclass
class RunSummary:
    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    dropped: int = 0
    corrupt: int = 0
    pose_ms: list[float] = field(default_factory=list)
    gflops: list[float] = field(default_factory=list)
    knobs: list[float] = field(default_factory=list)
    people: list[int] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        if not self.frames:
            return "no frames processed"
        ms = np.asarray(self.pose_ms)
        return (
            f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} FPS); pose ms/frame median "
            f"{np.median(ms):.1f}, p95 {np.percentile(ms, 95):.1f}; "
            f"mean GFLOPs/frame {np.mean(self.gflops):.2f}; up to {max(self.people)} people; "
            f"corrupt frames skipped: {self.corrupt}; dropped: {self.dropped}"
        )


def pose_threads() -> int:
    """Torch threads for the pose thread while decoding and encoding run beside it: all cores but one.

    The core left over is the codec threads' (``io.video.CODEC_THREADS``): a pose thread on it would compete
    with them, and a parallel region waits for its slowest thread, so on a small machine fewer pose threads
    run faster than one per core (``main.py bench --pipeline --threads N`` compares)."""
    return max(1, (os.cpu_count() or 1) - 1)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so a killed run still finalises its output (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class EncodeThread(threading.Thread, Generic[T]):
    """Draws each item handed to ``put`` into a BGR image and H.264-encodes it, off the calling thread, so
    that drawing and encoding overlap the model. ``writer`` None: draw only (the newest image is ``latest``,
    for a preview). An error on this thread is raised on the caller's next ``put`` or in ``finish``."""

    def __init__(self, writer: VideoWriter | None, draw: Callable[[T], np.ndarray]) -> None:
        super().__init__(name="poseapp-output", daemon=True)
        self.writer, self.draw = writer, draw
        self.latest: np.ndarray | None = None
        self.error: BaseException | None = None
        self._queue: queue.Queue[T | None] = queue.Queue(maxsize=8)

    def put(self, item: T) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def run(self) -> None:
        lower_thread_priority()
        try:
            while (item := self._queue.get()) is not None:
                image = self.draw(item)
                self.latest = image
                if self.writer is not None:
                    self.writer.write(image)
        except BaseException as exc:  # reported to the producer by put() / finish()
            self.error = exc

    def finish(self) -> None:
        """Write out everything queued, then stop."""
        self._queue.put(None)
        self.join()
        if self.error is not None:
            raise self.error


class OutputThread(EncodeThread[FrameResult]):
    """Renders results, encodes them and collects the export rows, off the pose thread."""

    def __init__(self, writer: VideoWriter | None, exporter: ResultsExporter, overlays: Overlays) -> None:
        super().__init__(writer, self._render)
        self.exporter, self.overlays = exporter, overlays

    def _render(self, result: FrameResult) -> np.ndarray:
        image = draw_result(result.frame.image, result, self.overlays)
        self.exporter.add(result)
        return image


def open_writer(frames: FrameSource, source: str, out: str | Path) -> VideoWriter:
    """An H.264 writer with the source's size and rate, carrying its audio over when it has any."""
    info = frames.info
    audio = source if info.has_audio and not info.live and Path(source).is_file() else None
    return VideoWriter(out, info.width, info.height, info.fps, copy_audio_from=audio)


def annotate_video(
    frames: FrameSource,
    pipeline: PosePipeline,
    writer: VideoWriter | None,
    overlays: Overlays | None = None,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    show: bool = False,
    progress: bool = True,
    live: bool | None = None,
) -> RunSummary:
    """Run ``pipeline`` over every frame of ``frames`` (file mode: all frames, in order), writing the
    annotated video to ``writer``; both are closed at the end, also on errors and interruptions."""
    info = frames.info
    exporter = ResultsExporter()
    output = OutputThread(writer, exporter, overlays or Overlays())
    capture = CaptureThread(frames, live=live)
    summary = RunSummary()
    bar = tqdm(total=info.frames, unit="frame", disable=not progress, mininterval=1.0)
    preview = Preview() if show else None
    started = time.perf_counter()
    try:
        with sigterm_as_interrupt():
            capture.start()
            output.start()
            while (frame := capture.get()) is not None:
                # a file's next frame, when already decoded: its detection runs beside this frame's poses
                result = pipeline.step(frame, None if capture.live else capture.peek())
                result.dropped = capture.dropped
                summary.frames += 1
                result.fps = summary.frames / (time.perf_counter() - started)
                output.put(result)
                summary.pose_ms.append(result.pose_ms)
                summary.gflops.append(result.gflops)
                summary.knobs.append(result.knob)
                summary.people.append(len(result.people))
                bar.update()
                if preview is not None and not preview.show(output.latest):
                    summary.interrupted = True
                    break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.seconds = time.perf_counter() - started
        bar.close()
        capture.stop()
        summary.dropped = capture.dropped
        summary.corrupt = getattr(frames, "corrupt", 0)
        try:
            if output.is_alive():
                output.finish()
        finally:
            if writer is not None:
                writer.close()
            if preview is not None:
                preview.close()
    if json_path:
        exporter.to_coco_json(json_path)
    if csv_path:
        exporter.to_csv(csv_path)
    return summary


class Preview:
    """A plain OpenCV window with the newest rendered frame (``--show``)."""

    NAME = "PoseApp preview (q to stop)"

    def __init__(self) -> None:
        self.opened = False

    def show(self, image: np.ndarray | None) -> bool:
        """Show ``image`` (None: nothing rendered yet); False once the user closed the window or pressed q."""
        import cv2

        if self.opened and cv2.getWindowProperty(self.NAME, cv2.WND_PROP_VISIBLE) < 1:
            return False
        if image is not None:
            cv2.imshow(self.NAME, image)
            self.opened = True
        return not self.opened or cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        if self.opened:
            import cv2

            cv2.destroyWindow(self.NAME)
