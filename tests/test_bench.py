"""``bench --pipeline --compare-yolo``: the peer raced at every torch thread count, and the ratios printed.

Nothing here asserts a timing: only which configurations ran, with which threads, and the arithmetic."""

from __future__ import annotations

import math
import os
import re

import av
import cv2
import pytest
import torch

from poseapp.cli import main
from poseapp.io.video import VideoWriter
from poseapp.models import create_model, save_model
from poseapp.tools import bench

W, H = 160, 90


@pytest.fixture(scope="module")
def clip(tmp_path_factory, sample_video):
    """The sample clip's first 4 frames, small."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(sample_video)) as source, VideoWriter(path, W, H, 30) as writer:
        for i, frame in enumerate(source.decode(video=0)):
            if i == 4:
                break
            writer.write(cv2.resize(frame.to_ndarray(format="bgr24"), (W, H), interpolation=cv2.INTER_AREA))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "evitpose_t.safetensors"
    save_model(create_model("evitpose_t"), path)
    return path


def row(name: str, fps: float, inference_only: bool = False) -> bench.PipelineBench:
    """A bench row of 10 frames at ``fps``."""
    return bench.PipelineBench(name, 10, 10 / fps, 1.0, 2.0, math.nan, 1, 1, inference_only)


def test_the_peer_runs_at_every_thread_count_and_the_ratios_are_printed(
    clip, weights, yolo_pose_weights, capsys, monkeypatch, one_torch_thread
) -> None:
    monkeypatch.setattr(bench, "peer_thread_counts", lambda: [2, 1])
    raced: list[bench.PipelineBench] = []
    race = bench.race_peer

    def recorded(*args, **kwargs):
        for result in race(*args, **kwargs):
            raced.append(result)
            yield result

    monkeypatch.setattr(bench, "race_peer", recorded)
    argv = ["bench", "--pipeline", str(clip), "--width", str(W), "--compare-yolo", "--threads", "1"]
    assert main([*argv, "--weights", str(weights), "--detector", str(yolo_pose_weights)]) == 0
    out = capsys.readouterr().out

    kinds = ["yolo11n-pose inference only", "yolo11n-pose video job (decode/encode threads)"]
    names = [f"{kind}, {n} thread{'s' * (n > 1)}" for n in (2, 1) for kind in kinds]
    assert [r.name for r in raced] == names
    for result in raced:  # the count read inside Ultralytics' predict is the one the row names
        assert result.name.endswith(f", {result.threads} thread" + "s" * (result.threads > 1))
        assert result.frames == 4 and result.inference_only == ("inference only" in result.name)
    for name in names:
        assert f"| {name} | 4 |" in out
    assert re.search(r"^\| evitpose_t, default knob \| 4 \|", out, re.M)
    assert re.search(r"^- \d+\.\d\dx the fastest full video job: yolo11n-pose video job", out, re.M)
    assert re.search(r"^- \d+\.\d\dx the inference-only bound .*: yolo11n-pose inference only", out, re.M)
    assert torch.get_num_threads() == 1  # ours again, after the race


def test_ratios_are_against_the_fastest_job_and_the_fastest_inference() -> None:
    ours = row("ours", 30.0)
    peers = [
        row("peer job, 1 thread", 12.0),
        row("peer inference, 1 thread", 16.0, inference_only=True),
        row("peer job, 2 threads", 15.0),
        row("peer inference, 2 threads", 20.0, inference_only=True),
    ]
    ratio, fastest = bench.fps_ratio(ours, peers)
    assert fastest.name == "peer inference, 2 threads" and ratio == pytest.approx(1.5)
    ratio, fastest = bench.fps_ratio(ours, peers[::2])
    assert fastest.name == "peer job, 2 threads" and ratio == pytest.approx(2.0)
    lines = bench.format_ratios(ours, peers).splitlines()
    assert lines[0] == "ours, 30.0 FPS end to end, against the peer at its best:"
    assert lines[1] == "- 2.00x the fastest full video job: peer job, 2 threads, 15.0 FPS"
    assert lines[2].startswith("- 1.50x the inference-only bound")
    assert lines[2].endswith(": peer inference, 2 threads, 20.0 FPS")


def test_a_thread_count_changed_inside_predict_is_refused() -> None:
    peer = bench.Peer.__new__(bench.Peer)  # no model: only the check
    peer.name, peer.threads_seen = "yolo11n-pose", [2, 2]
    assert peer.threads_in_force() == 2 and peer.threads_seen == []
    peer.threads_seen = [2, 1]
    with pytest.raises(RuntimeError, match=r"threads \[1, 2\]"):
        peer.threads_in_force()


def test_the_peer_is_raced_at_every_count_up_to_the_cores() -> None:
    assert bench.peer_thread_counts() == list(range(1, (os.cpu_count() or 1) + 1))


def test_a_row_without_flops_shows_a_dash() -> None:
    assert row("peer", 10.0).row() == "| peer | 10 | 10.0 | 1.0 | 2.0 | - | 1 |"


def test_bench_times_the_model_a_checkpoint_holds(tmp_path, capsys) -> None:
    path = tmp_path / "vitpose.safetensors"
    save_model(create_model("vitpose_t", img_hw=[64, 48]), path)
    assert main(["bench", "--weights", str(path), "--batch", "1", "--runs", "1", "--warmup", "0"]) == 0
    assert capsys.readouterr().out.startswith("vitpose_t on cpu")
    assert main(["bench", "--weights", str(path), "--model", "evitpose_t", "--runs", "1"]) != 0
    assert "holds a vitpose_t model, not evitpose_t" in capsys.readouterr().err
