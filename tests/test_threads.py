"""Helper threads (capture, detector, output) run at a lower priority than the pose thread."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from poseapp.io.video import CaptureThread
from poseapp.runtime.video_job import EncodeThread
from poseapp.threads import HELPER_NICENESS, lower_thread_priority
from tests.test_video import GatedSource

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread niceness is Linux's")


def niceness(native_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, native_id)


def expected_niceness() -> int:
    return min(19, niceness(threading.get_native_id()) + HELPER_NICENESS)


def test_a_thread_lowers_its_own_priority_and_no_other() -> None:
    seen, mine = [], niceness(threading.get_native_id())

    def helper() -> None:
        lower_thread_priority()
        seen.append(niceness(threading.get_native_id()))

    thread = threading.Thread(target=helper)
    thread.start()
    thread.join()
    assert seen == [expected_niceness()]
    assert niceness(threading.get_native_id()) == mine


def test_capture_and_output_threads_run_below_the_caller() -> None:
    source = GatedSource(3)
    capture = CaptureThread(source, live=False)
    capture.start()
    source.idle.wait(5)  # the reader is waiting for its first frame: alive
    assert niceness(capture.native_id) == expected_niceness()
    capture.stop()

    drawing, gate = threading.Event(), threading.Event()

    def draw(item: int) -> np.ndarray:
        drawing.set()
        gate.wait(5)
        return np.zeros((2, 2, 3), np.uint8)

    output = EncodeThread(None, draw)
    output.start()
    output.put(0)
    assert drawing.wait(5)
    assert niceness(output.native_id) == expected_niceness()
    gate.set()
    output.finish()


def test_the_early_detection_runs_below_the_caller() -> None:
    from poseapp.models import EViTPose
    from poseapp.results import Frame
    from poseapp.runtime.pipeline import PipelineConfig, PosePipeline
    from tests.test_pipeline import TINY, FakeDetector

    class Recording(FakeDetector):
        def __call__(self, image: np.ndarray):
            seen.append(niceness(threading.get_native_id()))
            return super().__call__(image)

    seen: list[int] = []
    pipeline = PosePipeline(PipelineConfig(detect_every=1, knob=1.0), Recording(), model=EViTPose(TINY, 19))
    frames = [Frame(i, np.full((240, 320, 3), 40, np.uint8), i / 25) for i in range(3)]
    for frame, upcoming in zip(frames, frames[1:] + [None], strict=True):
        pipeline.step(frame, upcoming)
    assert seen[0] == niceness(threading.get_native_id())  # in turn, on the caller's thread
    assert seen[1:] == [expected_niceness()] * 2  # early, on the detector thread
