"""Phone footage: clips flagged with a display rotation are read, posed and written upright.

A phone held upright records landscape frames and flags the track to be turned a quarter turn clockwise
when shown. The clips here carry a red block in the top-left corner of the stored frame, so where it lands
shows which way the frames were turned.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from poseapp.io.video import open_source, probe
from poseapp.models import EViTPose
from poseapp.models.vit import ViTSize
from poseapp.results import Detection
from poseapp.runtime.pipeline import PipelineConfig, PosePipeline
from poseapp.runtime.video_job import annotate_video, open_writer

W, H = 96, 64
"""Stored (coded) frame size: landscape, as the phone's sensor records it."""
UPRIGHT = {
    -90: (H, W, "top-right"),
    90: (H, W, "bottom-left"),
    180: (W, H, "bottom-right"),
    0: (W, H, "top-left"),
}
"""Display rotation (degrees counter-clockwise) -> (width, height, corner of the red block) as shown."""


def phone_clip(path, rotation: int, frames: int = 3) -> None:
    """H.264 MP4 of W x H frames with a red block top-left, flagged to be shown turned by ``rotation``."""
    container = av.open(str(path), "w", format="mp4")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    stream.set_display_rotation(rotation)
    image = np.zeros((H, W, 3), np.uint8)
    image[: H // 4, : W // 4] = (0, 0, 255)
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()


def red_corner(image: np.ndarray) -> str:
    """The corner ("top-left" ...) of a BGR image whose square patch (a quarter of the short side) is
    reddest: where the block ended up. Thin overlay lines do not outweigh the block."""
    side = min(image.shape[:2]) // 4
    redness = image[:, :, 2].astype(int) - image[:, :, :2].max(axis=2)
    patches = {
        "top-left": redness[:side, :side],
        "top-right": redness[:side, -side:],
        "bottom-left": redness[-side:, :side],
        "bottom-right": redness[-side:, -side:],
    }
    return max(patches, key=lambda corner: patches[corner].mean())


@pytest.mark.parametrize("rotation", UPRIGHT)
def test_frames_are_read_upright_as_players_show_them(tmp_path, rotation):
    path = tmp_path / "phone.mp4"
    phone_clip(path, rotation)
    width, height, corner = UPRIGHT[rotation]

    # OpenCV turns file frames by the flag as players do (CAP_PROP_ORIENTATION_AUTO): the clip is flagged.
    capture = cv2.VideoCapture(str(path))
    ok, shown = capture.read()
    capture.release()
    assert ok and shown.shape[:2] == (height, width) and red_corner(shown) == corner

    info = probe(str(path))
    assert (info.width, info.height) == (width, height)
    with open_source(str(path)) as source:
        frames = list(source)
    assert len(frames) == 3
    assert all(f.image.shape == (height, width, 3) and f.image.flags.c_contiguous for f in frames)
    assert [red_corner(f.image) for f in frames] == [corner] * 3


def test_phone_clip_is_posed_and_written_upright_without_a_flag(tmp_path):
    clip, out = tmp_path / "phone.mp4", tmp_path / "out.mp4"
    phone_clip(clip, -90, frames=4)
    seen: list[tuple[int, ...]] = []

    def detector(image: np.ndarray) -> list[Detection]:
        """One person in the lower half of the upright (H wide, W tall) frame, away from the block."""
        seen.append(image.shape)
        return [Detection(np.array([8.0, 50.0, 56.0, 94.0]), 0.9)]

    pipeline = PosePipeline(PipelineConfig(detect_every=1), detector, model=EViTPose(ViTSize(48, 12, 3), 19))
    frames = open_source(str(clip))
    summary = annotate_video(frames, pipeline, open_writer(frames, str(clip), out), progress=False)

    assert summary.frames == 4 and summary.people == [1] * 4
    assert seen == [(W, H, 3)] * 4  # the detector and pose model got the upright frames
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (H, W)
        written = list(container.decode(stream))
    assert all(f.rotation == 0 for f in written)  # no flag left for a player to turn it again
    assert [red_corner(f.to_ndarray(format="bgr24")) for f in written] == ["top-right"] * 4
