"""Video in and out: frame sources (file, webcam, image folder), a capture thread and an H.264 MP4 writer.

Files are decoded with PyAV; a frame that fails to decode is skipped (and counted), never fatal. Frames
are turned upright as players show them (phones store portrait video as landscape frames plus a rotation
flag), so poses are found and drawn on the picture the user sees and the output needs no flag. Every
problem the user can cause (bad path, not a video, no frames, no camera, unwritable output) is a
``VideoError`` with a one-line message, raised when the source or writer is opened, before any work.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from poseapp.results import Frame
from poseapp.threads import lower_thread_priority

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_BAD_PACKETS_IN_A_ROW = 100
"""A file that fails this many times in a row is treated as ended (a truncated or garbage tail)."""
CODEC_THREADS = 1 if (os.cpu_count() or 1) <= 4 else 0
"""Threads of the decoder and of the H.264 encoder (0: the codec's own choice, about 1.5 per core). On a
small machine (4 cores or fewer) one each, so that decoding, the pose model and encoding run side by side
instead of all fighting for the same cores, which raises the frame rate and steadies the pose time
(``main.py bench --pipeline`` shows both for a clip)."""
UPRIGHT_ROTATIONS = {
    1: cv2.ROTATE_90_COUNTERCLOCKWISE,
    2: cv2.ROTATE_180,
    3: cv2.ROTATE_90_CLOCKWISE,
}
"""``cv2.rotate`` code for a display rotation of this many quarter turns counter-clockwise (0: none)."""
BROWSER_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "flac"})
"""Audio codecs browsers play from MP4: copied unchanged; any other is re-encoded to AAC."""


class VideoError(Exception):
    """A bad video input or output, in one line for the user."""


def _reason(exc: BaseException) -> str:
    """One line saying why ``exc`` happened, without the path that PyAV/OS errors repeat."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


@dataclass
class SourceInfo:
    width: int
    height: int
    fps: float
    frames: int | None
    """Frame count (estimated from the duration where the container lacks one); None for live sources."""
    has_audio: bool
    live: bool


class FrameSource:
    """Frames of one source, in order, for a single pass of iteration; ``close()`` when done."""

    info: SourceInfo
    corrupt: int = 0
    """Frames skipped because they could not be decoded or read."""

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the source (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR from a BGR, BGRA or grayscale uint8 image."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


@contextmanager
def _opencv_silenced() -> Iterator[None]:
    """Mute OpenCV's own log while the block runs, restoring the previous level after it.

    Opening a webcam that is not there makes every videoio backend in turn (V4L2, FFmpeg, Orbbec ...)
    print its WARN/ERROR lines to stderr (eight on Linux), before our one-line ``VideoError`` says the same.
    The level is process-wide, so only the open is muted, not the rest of the program.
    """
    previous = cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _open_input(path: str) -> av.container.InputContainer:
    if not os.path.isfile(path):
        raise VideoError(f"video file not found: {path}")
    try:
        return av.open(path)
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"not a readable video: {path} ({_reason(exc)})") from exc


class _FileSource(FrameSource):
    """A video file decoded by PyAV, its frames turned by the stream's display rotation.

    The rotation (``VideoFrame.rotation``: FFmpeg's decoder attaches the container's display matrix to
    every frame) is read from the first frame and rounded to quarter turns; a flip in the matrix (rare)
    is not applied. ``info`` has the upright size.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._container = _open_input(path)
        try:
            if not self._container.streams.video:
                raise VideoError(f"no video stream in {path}")
            self._stream = self._container.streams.video[0]
            if CODEC_THREADS:
                self._stream.thread_count = CODEC_THREADS
            else:
                self._stream.thread_type = "AUTO"
            self._decoded = self._decode()
            # Decode the first frame now, so that a file without a single good frame fails on open.
            self._first: av.VideoFrame | None = next(self._decoded, None)
            if self._first is None:
                raise VideoError(f"no decodable video frames in {path}")
        except BaseException:
            self._container.close()
            raise
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            log.warning("%s does not state its frame rate: assuming 30 fps", path)
        fps = float(rate or 30)
        frames = stream.frames or None
        if frames is None and self._container.duration:
            frames = round(self._container.duration / av.time_base * fps)
        has_audio = bool(self._container.streams.audio)
        self._rotate = UPRIGHT_ROTATIONS.get(round(self._first.rotation / 90) % 4)
        width, height = self._first.width, self._first.height
        if self._rotate in (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE):
            width, height = height, width
        self.info = SourceInfo(width, height, fps, frames, has_audio, False)

    def _skip(self, exc: BaseException) -> None:
        self.corrupt += 1
        log.warning("%s: skipped an undecodable frame (%s)", self.path, _reason(exc))

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames; a bad packet is skipped and a failed demux is retried from where it stopped."""
        packets = self._container.demux(self._stream)
        bad_in_a_row = 0
        while bad_in_a_row < MAX_BAD_PACKETS_IN_A_ROW:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                self._skip(exc)
                bad_in_a_row += 1
                packets = self._container.demux(self._stream)  # the failed generator is finished
                continue
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                self._skip(exc)
                bad_in_a_row += 1
                continue
            bad_in_a_row = 0
            yield from frames
        log.warning("%s: %d bad packets in a row, stopping there", self.path, MAX_BAD_PACKETS_IN_A_ROW)

    def __iter__(self) -> Iterator[Frame]:
        first, self._first = self._first, None
        frames = self._decoded if first is None else itertools.chain([first], self._decoded)
        start = self._stream.start_time or 0
        time_base = self._stream.time_base
        for index, vf in enumerate(frames):
            seconds = float((vf.pts - start) * time_base) if vf.pts is not None else index / self.info.fps
            image = vf.to_ndarray(format="bgr24")
            image = np.ascontiguousarray(image) if self._rotate is None else cv2.rotate(image, self._rotate)
            yield Frame(index, image, seconds)

    def close(self) -> None:
        self._container.close()


class _CameraSource(FrameSource):
    def __init__(self, index: int) -> None:
        with _opencv_silenced():
            self._capture = cv2.VideoCapture(index)
            ok, image = self._capture.read() if self._capture.isOpened() else (False, None)
        if not ok:
            self._capture.release()
            raise VideoError(f"cannot open webcam {index}")
        self.camera = index
        self._first = _as_bgr(image)
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        height, width = self._first.shape[:2]
        self.info = SourceInfo(width, height, fps if 0 < fps < 1000 else 30.0, None, False, True)

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        image, self._first = self._first, None
        for index in itertools.count():
            if image is None:
                ok, image = self._capture.read()
                if not ok:
                    log.warning("webcam %d stopped delivering frames", self.camera)
                    return
                image = _as_bgr(image)
            yield Frame(index, image, time.monotonic() - start)
            image = None

    def close(self) -> None:
        self._capture.release()


def _natural_key(path: Path) -> list[str | int]:
    """Sort key putting frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class _FolderSource(FrameSource):
    def __init__(self, folder: str, fps: float) -> None:
        self.paths = sorted(
            (p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=_natural_key,
        )
        if not self.paths:
            raise VideoError(f"no .jpg/.png images in folder {folder}")
        self._images = self._read()
        first = next(self._images, None)
        if first is None:
            raise VideoError(f"no readable images in folder {folder}")
        self._first: tuple[int, np.ndarray] | None = first
        height, width = first[1].shape[:2]
        self.info = SourceInfo(width, height, fps, len(self.paths), False, False)

    def _read(self) -> Iterator[tuple[int, np.ndarray]]:
        """(position in the folder, BGR image); every image resized to the first one's size."""
        size = None
        for position, path in enumerate(self.paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.corrupt += 1
                log.warning("skipped unreadable image %s", path)
                continue
            size = size or (image.shape[1], image.shape[0])
            if (image.shape[1], image.shape[0]) != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            yield position, image

    def __iter__(self) -> Iterator[Frame]:
        first, self._first = self._first, None
        images = self._images if first is None else itertools.chain([first], self._images)
        for index, (position, image) in enumerate(images):
            yield Frame(index, image, position / self.info.fps)


def open_source(spec: str, folder_fps: float = 30.0) -> FrameSource:
    """Open a webcam index ("0"), a folder of .jpg/.png images (played at ``folder_fps``) or a video file.

    Frames are numbered 0, 1, 2 ... in the order they are delivered; skipped corrupt frames leave no gap
    in the numbering (their absence shows in ``Frame.time`` and ``FrameSource.corrupt``).
    """
    if spec.isdigit() and not os.path.exists(spec):
        return _CameraSource(int(spec))
    if os.path.isdir(spec):
        return _FolderSource(spec, folder_fps)
    return _FileSource(spec)


def probe(path: str) -> SourceInfo:
    """SourceInfo of a video file; raises VideoError as ``open_source`` does."""
    with _FileSource(path) as source:
        return source.info


class CaptureThread(threading.Thread):
    """Reads a FrameSource on its own thread into a small buffer; owns the source and closes it.

    File mode (``live=False``) blocks while the buffer is full, so every frame arrives, in order. Live
    mode keeps only the newest frame: a frame the consumer has not taken when the next one arrives is
    dropped and counted in ``dropped``, so a slow consumer always works on the present.
    """

    def __init__(self, source: FrameSource, live: bool | None = None, maxsize: int = 4) -> None:
        super().__init__(name="poseapp-capture", daemon=True)
        self.source = source
        self.live = source.info.live if live is None else live
        self.maxsize = 1 if self.live else maxsize
        self.dropped = 0
        self._buffer: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._finished = False
        self._error: BaseException | None = None

    def run(self) -> None:
        lower_thread_priority()
        try:
            for frame in self.source:
                if not self._put(frame):
                    break
        except BaseException as exc:  # handed to the consumer by get()
            self._error = exc
        finally:
            self.source.close()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _put(self, frame: Frame) -> bool:
        """Buffer ``frame``; False once stopped."""
        with self._cond:
            if not self.live:
                self._cond.wait_for(lambda: self._stopping or len(self._buffer) < self.maxsize)
            if self._stopping:
                return False
            if self.live and self._buffer:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(frame)
            self._cond.notify_all()
            return True

    def peek(self) -> Frame | None:
        """The frame the next ``get`` returns when it is already read, else None; never waits or takes it.
        In live mode it may be dropped before that ``get``."""
        with self._cond:
            return self._buffer[0] if self._buffer else None

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None at the end of the source or after ``stop()``.

        Raises TimeoutError when no frame came within ``timeout`` seconds, and re-raises an error the
        reader hit (after the frames read before it).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._buffer or self._finished or self._stopping, timeout):
                raise TimeoutError(f"no frame from the source within {timeout} s")
            if self._buffer:
                frame = self._buffer.popleft()
                self._cond.notify_all()
                return frame
            if self._error is not None and not self._stopping:
                raise self._error
            return None

    def stop(self, timeout: float = 0.5) -> None:
        """End the thread: drop buffered frames, wait up to ``timeout`` s for it to close the source."""
        with self._cond:
            self._stopping = True
            self._buffer.clear()
            self._cond.notify_all()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        elif self.ident is None:  # never started: nobody else will close the source
            self.source.close()


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM Python handlers (KeyboardInterrupt) until the block is done.

    An interrupt between ``encode()`` returning and ``mux()`` would lose encoded packets and break the
    H.264 stream; deferred, it arrives between frames and ``close()`` then finishes a valid file. Only the
    main thread receives signals, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, object]] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, lambda num, frame: pending.append((num, frame)))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum, frame in pending[:1]:
            previous[signum](signum, frame)


class _AudioCopy:
    """Carries the first audio stream of an input file into the output, fed up to the video's time.

    Codecs browsers play from MP4 are remuxed packet for packet; others are re-encoded to AAC (mono or
    stereo: more channels are downmixed). An error in the audio stops the audio, with a warning, never
    the video. Audio keeps its own timestamps: a source whose video starts late is not re-aligned.
    """

    def __init__(self, source: av.container.InputContainer, output: av.container.OutputContainer) -> None:
        self._input = source
        self._output = output
        template = source.streams.audio[0]
        name = template.codec_context.name
        if name in BROWSER_AUDIO_CODECS:
            self.stream = output.add_stream_from_template(template)
            self._reencode = False
        else:
            log.warning("re-encoding %s audio to AAC (browsers do not play %s in MP4)", name, name)
            self.stream = output.add_stream("aac", rate=template.rate)
            self.stream.layout = "mono" if template.channels == 1 else "stereo"  # AAC takes both, always
            self._reencode = True
        self._packets = source.demux(template)
        self._next: av.Packet | None = None

    def mux_until(self, seconds: float) -> None:
        """Mux the input's audio packets that start before ``seconds``."""
        try:
            while True:
                packet = self._next if self._next is not None else next(self._packets, None)
                if packet is None:
                    return
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    self._next = None
                    continue
                self._next = packet
                if (packet.pts if packet.pts is not None else packet.dts) * packet.time_base >= seconds:
                    return
                self._next = None
                if self._reencode:
                    for frame in packet.decode():
                        self._output.mux(self.stream.encode(frame))
                else:
                    packet.stream = self.stream
                    self._output.mux(packet)
        except av.FFmpegError as exc:
            log.warning("audio copy stopped: %s", _reason(exc))
            self._packets = iter(())
            self._next = None

    def close(self) -> None:
        try:
            if self._reencode:
                self._output.mux(self.stream.encode(None))
        finally:
            self._input.close()


class VideoWriter:
    """H.264 MP4 (libx264, yuv420p, ``+faststart`` so browsers play it while loading) of BGR frames.

    yuv420p needs an even width and height: an odd size is padded with one black column on the right
    and/or row at the bottom (``frame_size`` is the encoded size), never scaled. The MP4 index is written
    by ``close()``: call it (or use ``with``) also on errors and Ctrl+C, and the frames written so far form
    a valid file; a hard kill leaves an unplayable one. ``write`` and ``close`` may be called from
    different threads. ``copy_audio_from``: a file whose first audio track is carried over, cut at the
    video's end. ``preset``: x264's speed / size trade; the default ``superfast`` gives up file size for
    encoding time, which the video job's frame rate needs on a small machine (measured in ``docs/speed.md``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float | Fraction,
        *,
        crf: int = 23,
        preset: str = "superfast",
        copy_audio_from: str | None = None,
    ) -> None:
        if fps <= 0 or width <= 0 or height <= 0:
            raise ValueError(f"bad video size/rate {width}x{height} at {fps} fps")
        self.path = os.fspath(path)
        self.width, self.height = width, height
        self.frames = 0
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self._canvas = np.zeros((height + height % 2, width + width % 2, 3), np.uint8)
        self._lock = threading.Lock()
        self._closed = False

        audio_in = None
        if copy_audio_from is not None:
            audio_in = _open_input(copy_audio_from)
            if os.path.exists(self.path) and os.path.samefile(copy_audio_from, self.path):
                audio_in.close()
                raise VideoError(f"output would overwrite its input: {self.path}")
        try:
            # PyAV opens the file only when the first packet is written: check it can be written now.
            with open(self.path, "wb"):
                pass
        except OSError as exc:
            if audio_in is not None:
                audio_in.close()
            raise VideoError(f"cannot write {self.path}: {_reason(exc)}") from exc

        self._container = av.open(self.path, "w", format="mp4", options={"movflags": "+faststart"})
        self._video = self._container.add_stream(
            "libx264",
            rate=self.fps,
            options={"crf": str(crf), "preset": preset, "threads": str(CODEC_THREADS)},
        )
        self._video.height, self._video.width = self._canvas.shape[:2]
        self._video.pix_fmt = "yuv420p"
        self._audio = None
        if audio_in is not None:
            if audio_in.streams.audio:
                self._audio = _AudioCopy(audio_in, self._container)
            else:
                audio_in.close()

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the encoded video: the input size rounded up to even."""
        return self._canvas.shape[1], self._canvas.shape[0]

    def write(self, image: np.ndarray) -> None:
        """Append one frame: uint8 BGR (or grayscale / BGRA) of the size given at construction."""
        image = _as_bgr(image)
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]}, writer is {self.width}x{self.height}"
            )
        with _signals_deferred(), self._lock:
            if self._closed:
                raise ValueError(f"write() on closed VideoWriter {self.path}")
            self._canvas[: self.height, : self.width] = image
            # OpenCV's BGR -> I420 (BT.601, limited range, as FFmpeg's default) is 6x faster than swscale's
            yuv = cv2.cvtColor(self._canvas, cv2.COLOR_BGR2YUV_I420)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = self.frames
            self._container.mux(self._video.encode(frame))
            self.frames += 1
            if self._audio is not None:
                self._audio.mux_until(float(self.frames / self.fps))

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        with _signals_deferred(), self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._container.mux(self._video.encode(None))
                if self._audio is not None:
                    self._audio.mux_until(float(self.frames / self.fps))
                    self._audio.close()
            finally:
                self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ScaledSource(FrameSource):
    """Another source's frames resized to ``width`` pixels wide (aspect kept; area interpolation)."""

    def __init__(self, source: FrameSource, width: int) -> None:
        self.source = source
        info = source.info
        self.scale = width / info.width
        height = max(2, round(info.height * self.scale))
        self.info = SourceInfo(width, height, info.fps, info.frames, info.has_audio, info.live)

    @property
    def corrupt(self) -> int:
        return self.source.corrupt

    def __iter__(self) -> Iterator[Frame]:
        size = (self.info.width, self.info.height)
        for frame in self.source:
            yield Frame(frame.index, cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA), frame.time)

    def close(self) -> None:
        self.source.close()
