"""``main.py batch`` on an embedded Ray with 2 workers: the video command's outputs, resume, a bad video.

Ray starts once for the module (a few seconds); each batch starts its workers (a few more) on 6-frame clips.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket

import av
import numpy as np
import pytest
import torch

from poseapp.cli import main
from poseapp.io.video import VideoWriter
from poseapp.tools import batch
from tests.test_cli import fails_cleanly

FRAMES = 6
CLIPS = {"walk": 0, "crowd": 120}
"""Name -> first frame in the sample clip (one person, then several)."""


def cut(sample, path, start: int) -> None:
    """FRAMES frames of the sample clip from ``start``, halved to 640x360 (as test_cli's clip)."""
    with av.open(str(sample)) as source, VideoWriter(path, 640, 360, 30) as writer:
        for i, frame in enumerate(source.decode(video=0)):
            if i >= start + FRAMES:
                break
            if i >= start:
                writer.write(np.ascontiguousarray(frame.to_ndarray(format="bgr24")[::2, ::2][:360, :640]))


def run(argv: list[str]) -> tuple[int, str]:
    """main(argv)'s exit code and what it printed on stdout."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    return code, printed.getvalue()


def batch_argv(videos, out, workers: int = 2) -> list[str]:
    return ["batch", "--videos", str(videos), "--out", str(out), "--json", "--csv", "--workers", str(workers),
            "--threads-per-worker", "1", "--quiet"]  # fmt: skip


def timing(path) -> tuple[int, int, float, list[int]]:
    """Width, height, rate and every frame's timestamp of a video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts for frame in container.decode(stream)]
        return stream.width, stream.height, float(stream.average_rate), pts


@pytest.fixture(scope="module")
def ray_local():
    """Embedded Ray for this module; the signal handlers its driver installs are put back afterwards, so
    later tests see Python's own Ctrl-C."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    batch.init_ray(None, cpus=2)
    import ray

    yield
    ray.shutdown()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, sample_video):
    folder = tmp_path_factory.mktemp("videos")
    for name, start in CLIPS.items():
        cut(sample_video, folder / f"{name}.mp4", start)
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    return folder


@pytest.fixture(scope="module")
def references(videos, tmp_path_factory):
    """Each clip through ``main.py --video`` with the workers' one torch thread."""
    folder = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    for name in CLIPS:
        clip, result = videos / f"{name}.mp4", folder / name
        argv = ["--video", str(clip), "--out", f"{result}.mp4", "--json", f"{result}.json",
                "--csv", f"{result}.csv", "--threads", "1", "--quiet"]  # fmt: skip
        assert run(argv)[0] == 0
    torch.set_num_threads(threads)
    return folder


@pytest.fixture(scope="module")
def first_run(ray_local, videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    code, printed = run(batch_argv(videos, out))
    return code, printed, out


def test_every_video_as_the_video_command_writes_it(first_run, references) -> None:
    _, _, out = first_run
    for name in CLIPS:
        assert json.loads((out / f"{name}.json").read_text()) == json.loads(
            (references / f"{name}.json").read_text()
        )
        assert (out / f"{name}.csv").read_text() == (references / f"{name}.csv").read_text()
        size_rate_pts = timing(out / f"{name}.mp4")
        assert size_rate_pts == timing(references / f"{name}.mp4")
        assert len(size_rate_pts[3]) == FRAMES
    assert json.loads((out / "crowd.json").read_text()), "the clip has people to compare"


def test_a_bad_video_fails_alone_and_the_summary_says_what_happened(first_run, videos) -> None:
    code, printed, out = first_run
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{name}.{kind}" for name in CLIPS for kind in ("mp4", "json", "csv")] + ["summary.json"]
    )
    lines = printed.splitlines()
    assert lines[0] == "3 videos, 0 already done; 3 to annotate on 2 Ray workers, 1 torch threads each"
    assert any(line.startswith("FAILED broken: not a readable video") for line in lines)
    assert any(line.startswith(f"ok     walk: {FRAMES} frames") for line in lines)
    assert lines[-1].startswith("2 of 3 videos ok, 1 failed")

    summary = json.loads((out / "summary.json").read_text())
    entries = {entry["name"]: entry for entry in summary["videos"]}
    broken = entries["broken"]
    assert (broken["status"], broken["frames"], broken["outputs"]) == ("failed", 0, {})
    assert str(videos / "broken.mp4") in broken["error"] and "\n" not in broken["error"]
    for name in CLIPS:
        entry = entries[name]
        assert (entry["status"], entry["frames"], entry["error"]) == ("ok", FRAMES, None)
        assert entry["video"] == str(videos / f"{name}.mp4") and entry["fps"] > 0 and entry["people"] >= 1
        for kind, output in entry["outputs"].items():
            assert output == {"file": f"{name}.{kind}", "bytes": (out / f"{name}.{kind}").stat().st_size}
        assert entry["options"]["weights"].endswith(".safetensors") and entry["options"]["flip"] is False
    assert entries["crowd"]["people"] > entries["walk"]["people"]
    assert summary["last_run"] | {"seconds": 0, "fps": 0} == {
        "videos": 3, "already_done": 0, "annotated": 3, "ok": 2, "failed": 1, "workers": 2,
        "threads_per_worker": 1, "address": None, "frames": 2 * FRAMES, "seconds": 0, "fps": 0,
    }  # fmt: skip


def test_a_rerun_skips_finished_videos_and_redoes_a_truncated_one(first_run, videos) -> None:
    _, _, out = first_run
    walk, crowd = out / "walk.mp4", out / "crowd.mp4"
    with open(walk, "r+b") as file:
        file.truncate(walk.stat().st_size // 2)
    crowd_written = crowd.stat().st_mtime_ns

    code, printed = run(batch_argv(videos, out, workers=1))
    assert code == 1  # the broken video is tried again, and fails again
    assert printed.splitlines()[0].startswith("3 videos, 1 already done; 2 to annotate on 1 Ray workers")
    assert crowd.stat().st_mtime_ns == crowd_written
    assert len(timing(walk)[3]) == FRAMES
    entry = next(e for e in json.loads((out / "summary.json").read_text())["videos"] if e["name"] == "walk")
    assert entry["outputs"]["mp4"]["bytes"] == walk.stat().st_size

    code, printed = run(batch_argv(videos / "[wc]*.mp4", out))
    assert (code, printed.splitlines()[0]) == (0, "2 videos, 2 already done; 0 to annotate")


def test_a_finished_video_needs_its_entry_and_complete_outputs(tmp_path) -> None:
    video = tmp_path / "in" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(b"the source")
    out = batch.prepare_out(str(tmp_path / "out" / "new"))
    (job,) = batch.plan_jobs(batch.find_videos([str(video.parent)]), out, ["mp4"])
    mp4, options = job.outputs["mp4"], {"flip": False}
    with VideoWriter(batch.part(mp4), 64, 48, 25) as writer:
        for _ in range(3):
            writer.write(np.zeros((48, 64, 3), np.uint8))
    summary = batch.Summary(out)
    assert not summary.finished(job, options), "only a .part file"
    batch.part(mp4).replace(mp4)
    assert not summary.finished(job, options), "an output with no entry"
    outputs = {"mp4": {"file": mp4.name, "bytes": mp4.stat().st_size}}
    summary.record(job, batch.VideoResult(str(video), "ok", frames=3, outputs=outputs), options)
    summary.write()
    summary = batch.Summary(out)
    assert summary.finished(job, options)
    assert not summary.finished(job, {"flip": True}), "other run options"
    assert not summary.finished(batch.Job(video, job.outputs, {"bytes": 1, "mtime_ns": 2}), options), (
        "new source"
    )
    assert not summary.finished(
        batch.Job(video, {**job.outputs, "csv": out / "clip.csv"}, job.source), options
    )
    data = mp4.read_bytes()
    mp4.write_bytes(data[: len(data) // 2])
    assert not summary.finished(job, options), "a truncated output"


def test_bad_batch_inputs_end_with_one_line(tmp_path, capsys) -> None:
    clip = tmp_path / "a" / "clip.mp4"
    clip.parent.mkdir()
    with VideoWriter(clip, 64, 48, 25) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    out = str(tmp_path / "out")
    fails_cleanly(
        capsys, ["batch", "--videos", str(tmp_path / "none"), "--out", out], "no such file or folder"
    )
    (tmp_path / "empty").mkdir()
    fails_cleanly(
        capsys, ["batch", "--videos", str(tmp_path / "empty"), "--out", out], "no videos in --videos"
    )
    fails_cleanly(
        capsys, ["batch", "--videos", str(tmp_path / "*.avi"), "--out", out], "no videos in --videos"
    )
    (tmp_path / "file").write_text("x")
    fails_cleanly(
        capsys, ["batch", "--videos", str(clip), "--out", str(tmp_path / "file" / "o")], "--out folder"
    )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "clip.avi").write_bytes(clip.read_bytes())
    fails_cleanly(
        capsys, ["batch", "--videos", str(clip), str(tmp_path / "b"), "--out", out], "would both write"
    )
    fails_cleanly(
        capsys, ["batch", "--videos", str(clip), "--out", str(clip.parent)], "overwritten by its own"
    )
    fails_cleanly(capsys, ["batch", "--videos", str(clip), "--out", out, "--workers", "0"], "--workers")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fails_cleanly(capsys, ["batch", "--videos", str(clip), "--out", out, "--address", f"127.0.0.1:{port}"],
                  "nothing answers there")  # fmt: skip
    fails_cleanly(capsys, ["batch", "--videos", str(clip), "--out", out, "--address", "head"], "HOST:PORT")
    assert not os.path.exists(out) or not os.listdir(out)


def test_gpu_share_follows_the_cluster(ray_local) -> None:
    assert batch.gpu_share("cpu", 2) == batch.gpu_share("auto", 2) == 0.0
    with pytest.raises(batch.UsageError, match="no GPU"):
        batch.gpu_share("cuda", 2)
