"""Video sources, the capture thread and the H.264 writer, on small clips made here.

Frames carry their index as 6 bright/dark blocks (one bit each), which survives H.264 compression, so a
dropped, duplicated or reordered frame shows up when the clip is read back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from poseapp.io.video import (
    CaptureThread,
    FrameSource,
    SourceInfo,
    VideoError,
    VideoWriter,
    _signals_deferred,
    open_source,
    probe,
)
from poseapp.results import Frame

BITS = 6
N = 30


def coded(index: int, width: int = 96, height: int = 48) -> np.ndarray:
    """BGR frame whose index is written as BITS vertical blocks, most significant bit first."""
    image = np.zeros((height, width, 3), np.uint8)
    block = width // BITS
    for bit in range(BITS):
        if index >> (BITS - 1 - bit) & 1:
            image[:, bit * block : (bit + 1) * block] = 255
    return image


def decoded_index(image: np.ndarray, width: int = 96) -> int:
    block = width // BITS
    gray = image.mean(axis=2)
    bits = [gray[:, b * block + 2 : (b + 1) * block - 2].mean() > 127 for b in range(BITS)]
    return sum(bit << (BITS - 1 - b) for b, bit in enumerate(bits))


def write_clip(path, n: int = N, width: int = 96, height: int = 48, fps: float = 25) -> None:
    with VideoWriter(path, width, height, fps) as writer:
        for i in range(n):
            writer.write(coded(i, width, height))


def png_clip(path, n: int, pix_fmt: str, corrupt: tuple[int, ...] = ()) -> None:
    """MOV of PNG frames (grey level 8 * index) in ``pix_fmt``; frames in ``corrupt`` get a broken header."""
    container = av.open(str(path), "w", format="mov")
    stream = container.add_stream("png", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="bgr24")
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data)) if data.startswith(b"\x89PNG\r\n\x1a\n", i)]
    assert len(starts) == n
    for i in corrupt:
        data[starts[i] + 16 : starts[i] + 20] = bytes(4)  # IHDR width 0
    path.write_bytes(bytes(data))


def av_clip_with_audio(path, codec: str, seconds: float, fmt: str | None = None) -> None:
    """1 s of black 64x48 video at 30 fps plus ``seconds`` of a 440 Hz mono tone in ``codec``."""
    container = av.open(str(path), "w", format=fmt)
    video = container.add_stream("libx264", rate=30)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    audio = container.add_stream(codec, rate=16000)
    audio.layout = "mono"
    for i in range(30):
        frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="bgr24")
        frame.pts = i
        container.mux(video.encode(frame))
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * seconds)) / 16000)
    samples = tone.astype(np.float32) if audio.format.name == "fltp" else (tone * 32767).astype(np.int16)
    for start in range(0, len(samples), 1000):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1000], audio.format.name, "mono")
        frame.sample_rate, frame.pts = 16000, start
        container.mux(audio.encode(frame))
    container.mux(audio.encode(None))
    container.mux(video.encode(None))
    container.close()


def read_all(path) -> list[Frame]:
    with open_source(str(path)) as source:
        return list(source)


def next_peek(capture: CaptureThread, timeout: float = 5.0):
    """``capture.peek()`` once the reader has read the next frame (however busy the machine)."""
    deadline = time.monotonic() + timeout
    while (frame := capture.peek()) is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return frame


def test_file_round_trip_keeps_every_frame_in_order_with_a_slow_consumer(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path)

    info = probe(str(path))
    assert (info.width, info.height, info.fps, info.frames) == (96, 48, 25.0, N)
    assert not info.live and not info.has_audio
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"

    capture = CaptureThread(open_source(str(path)), live=False, maxsize=2)
    capture.start()
    frames, peeked = [], []
    while (frame := capture.get(timeout=5)) is not None:
        time.sleep(0.005)  # slower than the reader: it must wait, not drop
        frames.append(frame)
        if len(frames) < N:
            peeked.append(next_peek(capture))  # the next frame once read, without taking it
    assert len(peeked) == N - 1 and all(p is f for p, f in zip(peeked, frames[1:], strict=True))
    capture.join(1)
    assert not capture.is_alive() and capture.peek() is None
    assert [decoded_index(f.image) for f in frames] == list(range(N))
    assert [f.index for f in frames] == list(range(N))
    assert [f.time for f in frames] == pytest.approx([i / 25 for i in range(N)])
    assert all(f.image.shape == (48, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    assert capture.dropped == 0
    assert capture.get(timeout=0) is None


def test_writer_keeps_ntsc_rate_as_a_fraction(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write_clip(path, n=5, fps=30000 / 1001)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)


class GatedSource(FrameSource):
    """A live source that delivers frames only as the test releases them."""

    def __init__(self, n: int) -> None:
        self.info = SourceInfo(8, 8, 30.0, None, False, True)
        self.n = n
        self.permits = threading.Semaphore(0)
        self.idle = threading.Event()
        """Set when every released frame has been handed over and the source waits for more."""
        self.closed = False

    def release(self, count: int) -> None:
        assert self.idle.wait(2)
        self.idle.clear()
        for _ in range(count):
            self.permits.release()
        assert self.idle.wait(2) or count >= self.n

    def __iter__(self):
        for i in range(self.n):
            if not self.permits.acquire(blocking=False):
                self.idle.set()
                self.permits.acquire()
            yield Frame(i, np.zeros((8, 8, 3), np.uint8), i / 30)
        self.idle.set()

    def close(self) -> None:
        self.closed = True


def test_live_mode_keeps_only_the_newest_frame_and_counts_the_dropped():
    source = GatedSource(10)
    capture = CaptureThread(source)  # live, from the source's info
    capture.start()
    source.release(5)
    assert capture.dropped == 4
    assert capture.get(timeout=1).index == 4
    source.release(3)
    assert capture.dropped == 6
    assert capture.get(timeout=1).index == 7
    source.release(2)
    assert capture.get(timeout=1).index == 9  # the last frame is delivered, not dropped
    assert capture.get(timeout=1) is None
    assert capture.dropped == 7
    capture.join(1)
    assert source.closed


def test_live_mode_on_a_file_with_a_slow_consumer(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path)
    capture = CaptureThread(open_source(str(path)), live=True)
    capture.start()
    received = [capture.get(timeout=5)]
    time.sleep(0.3)  # the reader gets through the other 29 tiny frames meanwhile
    while (frame := capture.get(timeout=5)) is not None:
        received.append(frame)
    indices = [decoded_index(f.image) for f in received]
    assert indices == [f.index for f in received]
    assert indices == sorted(set(indices)) and indices[-1] == N - 1
    assert capture.dropped > 0
    assert len(received) + capture.dropped == N


def test_stop_ends_a_blocked_reader_quickly(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path)
    source = open_source(str(path))
    capture = CaptureThread(source, live=False, maxsize=2)
    capture.start()
    time.sleep(0.05)  # let it fill the buffer and block
    started = time.monotonic()
    capture.stop()
    assert not capture.is_alive()
    assert time.monotonic() - started < 0.5
    assert capture.get(timeout=0) is None


def test_reader_errors_reach_the_consumer_after_the_frames_before_them():
    class Failing(FrameSource):
        info = SourceInfo(8, 8, 30.0, 5, False, False)

        def __iter__(self):
            for i in range(2):
                yield Frame(i, np.zeros((8, 8, 3), np.uint8), i / 30)
            raise RuntimeError("disk on fire")

    capture = CaptureThread(Failing())
    capture.start()
    assert [capture.get(timeout=1).index for _ in range(2)] == [0, 1]
    with pytest.raises(RuntimeError, match="disk on fire"):
        capture.get(timeout=1)


def test_odd_size_grayscale_frames_are_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, 63, 47, 25) as writer:
        assert writer.frame_size == (64, 48)
        for i in range(10):
            writer.write(cv2.cvtColor(coded(i, 63, 47), cv2.COLOR_BGR2GRAY))
    info = probe(str(path))
    assert (info.width, info.height, info.frames) == (64, 48, 10)
    frames = read_all(path)
    assert [decoded_index(f.image[:47, :63], 63) for f in frames] == list(range(10))
    # the padding is black (the source's own right columns 60..62 are black too)
    assert frames[-1].image[:, 60:].max() < 40


@pytest.mark.parametrize("pix_fmt", ["gray", "rgba", "rgb24"])
def test_any_pixel_format_reads_as_bgr_and_corrupt_frames_are_skipped(tmp_path, caplog, pix_fmt):
    path = tmp_path / f"{pix_fmt}.mov"
    png_clip(path, 10, pix_fmt, corrupt=(3,))
    with open_source(str(path)) as source:
        frames = list(source)
        assert source.corrupt == 1
    assert "skipped an undecodable frame" in caplog.text
    assert [f.index for f in frames] == list(range(9))
    assert [int(f.image[0, 0, 0]) // 8 for f in frames] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert [f.time for f in frames] == pytest.approx([0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)


def test_image_folder_in_natural_order_skipping_unreadable_files(tmp_path):
    for i, name in enumerate(["f1.png", "f2.jpg", "f10.png"]):
        cv2.imwrite(str(tmp_path / name), np.full((48, 64), 100 * i, np.uint8))  # grayscale files
    (tmp_path / "f5.png").write_text("not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(str(tmp_path)) as source:
        assert (source.info.width, source.info.height, source.info.fps, source.info.frames) == (64, 48, 30, 4)
        frames = list(source)
        assert source.corrupt == 1
    assert [round(f.image.mean() / 100) for f in frames] == [0, 1, 2]
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.time for f in frames] == pytest.approx([0, 1 / 30, 3 / 30])
    assert all(f.image.shape == (48, 64, 3) for f in frames)


def test_aac_audio_is_copied_unchanged_and_cut_at_the_video_end(tmp_path):
    source = tmp_path / "with_audio.mp4"
    av_clip_with_audio(source, "aac", seconds=1.0)
    assert probe(str(source)).has_audio
    with av.open(str(source)) as container:
        first_in = bytes(next(p for p in container.demux(audio=0) if p.size))

    out = tmp_path / "out.mp4"
    with VideoWriter(out, 96, 48, 30, copy_audio_from=str(source)) as writer:
        for i in range(15):  # 0.5 s of video
            writer.write(coded(i))
    assert probe(str(out)).has_audio
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        packets = [p for p in container.demux(audio) if p.size]
    assert bytes(packets[0]) == first_in
    seconds = sum(p.duration * p.time_base for p in packets)
    assert 0.45 < seconds < 0.65
    assert [decoded_index(f.image) for f in read_all(out)] == list(range(15))


def test_audio_browsers_cannot_play_from_mp4_is_reencoded_to_aac(tmp_path):
    source = tmp_path / "pcm.mkv"
    av_clip_with_audio(source, "pcm_s16le", seconds=1.0, fmt="matroska")
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 64, 48, 30, copy_audio_from=str(source)) as writer:
        for _ in range(30):
            writer.write(np.zeros((48, 64, 3), np.uint8))
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        seconds = sum(f.samples for f in container.decode(audio=0)) / 16000
    assert 0.9 < seconds < 1.15


def test_interrupted_writing_leaves_a_playable_file(tmp_path):
    path = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt), VideoWriter(path, 96, 48, 25) as writer:
        for i in range(10):
            writer.write(coded(i))
        raise KeyboardInterrupt
    assert [decoded_index(f.image) for f in read_all(path)] == list(range(10))
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.write(coded(0))


def test_ctrl_c_during_a_write_arrives_after_it():
    # Python's own Ctrl-C, whatever an earlier test's libraries (Ray's driver) left installed or blocked
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        with pytest.raises(KeyboardInterrupt), _signals_deferred():
            signal.raise_signal(signal.SIGINT)
            reached = True  # not interrupted inside the block
        assert reached
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGINT, previous)


def _check_one_line_error(make, *names):
    with pytest.raises(VideoError) as caught:
        make()
    message = str(caught.value)
    assert "\n" not in message
    assert all(name in message for name in names), message


def test_bad_inputs_fail_on_open_with_one_line_messages(tmp_path):
    missing = tmp_path / "missing.mp4"
    _check_one_line_error(lambda: open_source(str(missing)), str(missing))

    text = tmp_path / "notes.mp4"
    text.write_text("these are not frames\n" * 10)
    _check_one_line_error(lambda: open_source(str(text)), str(text), "not a readable video")

    no_frames = tmp_path / "no_frames.mov"
    png_clip(no_frames, 3, "rgb24", corrupt=(0, 1, 2))
    _check_one_line_error(lambda: open_source(str(no_frames)), str(no_frames), "no decodable")
    _check_one_line_error(lambda: probe(str(no_frames)), str(no_frames))

    empty = tmp_path / "empty"
    empty.mkdir()
    _check_one_line_error(lambda: open_source(str(empty)), str(empty))


def test_a_missing_webcam_is_one_line_on_stderr_and_a_failed_run(tmp_path):
    """``main.py --video 99`` on a machine without that camera: OpenCV's own warnings from each backend
    it tried stay silent, leaving the project's one line (and a non-zero exit)."""
    main = Path(__file__).resolve().parent.parent / "main.py"
    run = subprocess.run(
        [sys.executable, str(main), "--video", "99", "--out", str(tmp_path / "x.mp4")],
        cwd=tmp_path,  # no file named "99" here: the spec means a webcam
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot open webcam 99" in lines[0], run.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_unwritable_outputs_fail_before_any_frame(tmp_path):
    no_dir = tmp_path / "no" / "such" / "dir.mp4"
    _check_one_line_error(lambda: VideoWriter(no_dir, 64, 48, 25), str(no_dir))
    _check_one_line_error(lambda: VideoWriter(tmp_path, 64, 48, 25), str(tmp_path))
    gone = tmp_path / "gone.mp4"
    _check_one_line_error(
        lambda: VideoWriter(tmp_path / "o.mp4", 64, 48, 25, copy_audio_from=str(gone)), str(gone)
    )
    clip = tmp_path / "clip.mp4"
    write_clip(clip, n=3)
    _check_one_line_error(lambda: VideoWriter(clip, 96, 48, 25, copy_audio_from=str(clip)), str(clip))
    assert probe(str(clip)).frames == 3  # the input survived
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        _check_one_line_error(lambda: VideoWriter(locked / "o.mp4", 64, 48, 25), str(locked))
