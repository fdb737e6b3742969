"""Every bad input to the video command: one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import numpy as np
import pytest

from poseapp.cli import main
from poseapp.io.video import VideoWriter
from poseapp.models import create_model, save_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "evitpose_t.safetensors"
    save_model(create_model("evitpose_t"), path)
    return path


def fails_cleanly(capsys, argv: list[str], words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert words in err, err


def test_bad_inputs(tmp_path, capsys, weights, yolo_pose_weights) -> None:
    out = str(tmp_path / "out.mp4")
    run = ["--weights", str(weights), "--quiet"]
    fails_cleanly(capsys, ["--video", str(tmp_path / "missing.mp4"), "--out", out, *run], "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    fails_cleanly(capsys, ["--video", str(text), "--out", out, *run], "notes.mp4")
    empty = tmp_path / "empty.mp4"
    VideoWriter(empty, 64, 48, 25).close()
    fails_cleanly(capsys, ["--video", str(empty), "--out", out, *run], "empty.mp4")
    fails_cleanly(capsys, ["--video", "99", "--show", *run], "99")
    folder = tmp_path / "no_images"
    folder.mkdir()
    fails_cleanly(capsys, ["--video", str(folder), "--out", out, *run], "no_images")

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 64, 48, 25) as writer:
        for _ in range(3):
            writer.write(np.zeros((48, 64, 3), np.uint8))
    good = ["--video", str(clip), "--quiet"]
    fails_cleanly(capsys, [*good, "--out", str(tmp_path / "nowhere" / "o.mp4"), *run], "nowhere")
    fails_cleanly(
        capsys, [*good, "--out", out, "--weights", str(tmp_path / "none.safetensors")], "none.safetensors"
    )
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x13garbage" * 100)
    fails_cleanly(capsys, [*good, "--out", out, "--weights", str(corrupt)], "corrupt.safetensors")
    fails_cleanly(
        capsys, [*good, "--out", out, "--weights", str(yolo_pose_weights)], "not a PoseApp checkpoint"
    )
    fails_cleanly(capsys, [*good, "--out", out, *run, "--eta", "0.5"], "no eta knob")
    fails_cleanly(capsys, [*good, *run], "needs somewhere to put the result")
    fails_cleanly(capsys, [*good, "--out", out, *run, "--detector", str(tmp_path / "d.pt")], "d.pt")
    fails_cleanly(capsys, [*good, "--out", out, *run, "--budget-ms", "-3"], "--budget-ms")
    assert not (tmp_path / "out.mp4").exists()


def test_video_command_writes_the_annotated_clip(tmp_path, capsys, weights, sample_video) -> None:
    import av

    clip = tmp_path / "clip.mp4"
    with av.open(str(sample_video)) as source, VideoWriter(clip, 640, 360, 30) as writer:
        for i, frame in enumerate(source.decode(video=0)):
            if i == 8:
                break
            image = frame.to_ndarray(format="bgr24")
            writer.write(
                np.ascontiguousarray(image[::2, ::2][:360, :640]) if image.shape[1] >= 1280 else image
            )
    out = tmp_path / "annotated.mp4"
    assert main(["--video", str(clip), "--out", str(out), "--weights", str(weights), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == 8
