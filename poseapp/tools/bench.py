"""Speed: a model's FLOPs and median milliseconds per crop per knob value (after warm-up), and the whole
video job's frame rate on a clip, raced against yolo11n-pose at its best (the peer)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..io.video import CaptureThread, FrameSource, ScaledSource, open_source
from ..runtime.flops import count_macs
from ..runtime.precision import autocast, bf16_weights, model_precision

if TYPE_CHECKING:
    from ultralytics.engine.results import Results


@dataclass(frozen=True)
class BenchRow:
    knob: float
    gflops: float
    """Mean 10^9 multiply-adds per crop."""
    ms_per_crop: dict[int, float]
    """Batch size -> median milliseconds per crop."""
    fine_share: float | None = None
    """EMGPose: share of crops that ran the fine stage."""


def time_call(model: nn.Module, x: torch.Tensor, knob: float, runs: int, warmup: int) -> float:
    """Median seconds of one ``model(x, knob)`` call."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            if x.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x, knob)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(
    model: nn.Module,
    knobs: list[float],
    batches: tuple[int, ...] = (1, 8),
    runs: int = 20,
    warmup: int = 3,
    device: str = "cpu",
    inputs: torch.Tensor | None = None,
    precision: str = "fp32",
) -> list[BenchRow]:
    """Time ``model`` at every knob value and batch size; ``inputs`` (N, 3, h, w) are the crops
    to use (default: a fixed random batch of the model's input size), cycled to fill the largest batch."""
    model = model.to(device).eval()
    precision = model_precision(model, precision, torch.device(device))
    if precision == "bf16":
        model = bf16_weights(model)  # as the pipeline's predictor runs it
    if inputs is None:
        w, h = model.input_size
        inputs = torch.randn(max(batches), 3, h, w, generator=torch.Generator().manual_seed(0))
    reps = -(-max(batches) // inputs.shape[0])
    inputs = inputs.repeat(reps, 1, 1, 1)[: max(batches)].to(device)
    inputs = inputs.contiguous(memory_format=torch.channels_last)  # the layout crop_batch gives the pipeline
    rows = []
    with autocast(precision, inputs.device):
        for knob in knobs:
            with torch.inference_mode():
                out = model(inputs, knob)
            macs = count_macs(model, out).double().mean().item()
            fine = out.fine_stage.float().mean().item() if out.fine_stage is not None else None
            ms = {b: 1000 * time_call(model, inputs[:b], knob, runs, warmup) / b for b in batches}
            rows.append(BenchRow(out.knob, macs / 1e9, ms, fine))
    return rows


def format_table(name: str, knob_name: str, rows: list[BenchRow]) -> str:
    """A Markdown table of bench rows."""
    batches = list(rows[0].ms_per_crop)
    head = [knob_name, "GFLOPs"] + [f"ms/crop (batch {b})" for b in batches]
    if rows[0].fine_share is not None:
        head.append("fine stage")
    lines = [f"{name}", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row.knob:.2f}", f"{row.gflops:.2f}"] + [f"{row.ms_per_crop[b]:.1f}" for b in batches]
        if row.fine_share is not None:
            cells.append(f"{row.fine_share:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class PipelineBench:
    """One row of ``bench --pipeline``: our video job, or one configuration of the peer."""

    name: str
    frames: int
    seconds: float
    pose_ms_p50: float
    pose_ms_p95: float
    gflops_per_frame: float
    """NaN where unknown (the peer)."""
    max_people: int
    threads: int
    """Torch threads in force during the timed model calls (the peer's: read inside Ultralytics' predict)."""
    inference_only: bool = False
    """Only the model calls were timed (the peer's lower bound), not decode, drawing and encode."""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def row(self) -> str:
        gflops = "-" if np.isnan(self.gflops_per_frame) else f"{self.gflops_per_frame:.2f}"
        return (
            f"| {self.name} | {self.frames} | {self.fps:.1f} | {self.pose_ms_p50:.1f} "
            f"| {self.pose_ms_p95:.1f} | {gflops} | {self.max_people} |"
        )


PIPELINE_HEADER = (
    "| run | frames | end-to-end FPS | pose ms/frame p50 | pose ms/frame p95 | pose GFLOPs/frame "
    "| max people |\n"
    "|---|---|---|---|---|---|---|"
)


def _timed(
    name: str,
    seconds: float,
    pose_ms: list[float],
    gflops: float,
    people: list[int],
    threads: int,
    inference_only: bool = False,
) -> PipelineBench:
    ms = np.asarray(pose_ms)
    return PipelineBench(
        name, len(ms), seconds, float(np.median(ms)), float(np.percentile(ms, 95)), gflops, max(people),
        threads, inference_only,
    )  # fmt: skip


def open_clip(clip: str, width: int | None) -> FrameSource:
    """``clip``'s frames, resized to ``width`` pixels wide (None or 0: as they are)."""
    frames = open_source(clip)
    return ScaledSource(frames, width) if width else frames


def bench_pipeline(name: str, clip: str, pipeline, width: int | None, out: Path) -> PipelineBench:
    """The whole video job (decode, detect, track, pose, render, H.264 encode) over ``clip``."""
    from ..runtime.video_job import annotate_video, open_writer

    frames = open_clip(clip, width)
    summary = annotate_video(frames, pipeline, open_writer(frames, clip, out), progress=False)
    return _timed(
        name, summary.seconds, summary.pose_ms, float(np.mean(summary.gflops)), summary.people,
        torch.get_num_threads(),
    )  # fmt: skip


def peer_thread_counts() -> list[int]:
    """The torch thread counts the peer is raced at: every count from 1 to the cores."""
    return list(range(1, (os.cpu_count() or 1) + 1))


class Peer:
    """Ultralytics YOLO (yolo11n-pose) driven from Python the usual way, ``YOLO.predict`` on each frame, with
    the torch thread count the caller sets.

    Ultralytics' predictor calls its ``select_device`` once, when the first ``predict`` sets it up, and that
    sets torch's threads to its own choice (the cores but one, at most 8: one on a 2-core machine); later
    calls leave them alone. So the constructor runs that first call, and every later ``predict`` runs with
    whatever count was set after it. ``threads_seen`` records ``torch.get_num_threads()`` read inside each
    call (the predictor's ``on_predict_batch_start`` callback), which is how a race checks the count it
    names."""

    def __init__(self, weights: str | Path, device: str, first_image: np.ndarray) -> None:
        from ultralytics import YOLO

        self.name = Path(weights).stem
        self.device = device
        self.model = YOLO(str(Path(weights).resolve()), verbose=False)
        self.threads_seen: list[int] = []
        self.model.add_callback(
            "on_predict_batch_start", lambda _predictor: self.threads_seen.append(torch.get_num_threads())
        )
        self.predict(first_image)
        self.threads_seen.clear()  # the setup call's count is Ultralytics' choice

    def predict(self, image: np.ndarray) -> Results:
        """Ultralytics' ``Results`` for one BGR image."""
        return self.model.predict(image, device=self.device, verbose=False)[0]

    def threads_in_force(self) -> int:
        """The one torch thread count of the calls since the last look (and forget them); RuntimeError if
        Ultralytics changed it between calls."""
        seen, self.threads_seen = set(self.threads_seen), []
        if len(seen) != 1:
            raise RuntimeError(f"{self.name}'s predict ran with torch threads {sorted(seen)}, not one count")
        return seen.pop()


def _threads(n: int) -> str:
    return f"{n} thread" + ("s" if n > 1 else "")


def bench_peer_inference(peer: Peer, clip: str, width: int | None) -> PipelineBench:
    """The peer's model calls alone over ``clip`` (``predict`` per frame; decoding is not timed): the lower
    bound on the peer's time for the video job."""
    pose_ms, people = [], []
    with open_clip(clip, width) as frames:
        for frame in frames:
            start = time.perf_counter()
            result = peer.predict(frame.image)
            pose_ms.append(1000 * (time.perf_counter() - start))
            people.append(len(result.boxes))
    threads = peer.threads_in_force()
    name = f"{peer.name} inference only, {_threads(threads)}"
    return _timed(name, sum(pose_ms) / 1000, pose_ms, float("nan"), people, threads, inference_only=True)


def bench_peer_video_job(peer: Peer, clip: str, width: int | None, out: Path) -> PipelineBench:
    """The same job as ours, threaded as ours is: a capture thread decodes (``CaptureThread``), the calling
    thread runs ``predict``, and an output thread draws each result with Ultralytics' own ``plot()`` and
    H.264-encodes it (``EncodeThread``, the writer ``open_writer`` gives ours). Timed as ``annotate_video``
    times ours: from the start to the last frame handed to the output thread."""
    from ..runtime.video_job import EncodeThread, open_writer

    frames = open_clip(clip, width)
    writer = open_writer(frames, clip, out)
    capture = CaptureThread(frames, live=False)
    output = EncodeThread(writer, lambda result: result.plot())
    pose_ms, people = [], []
    start = time.perf_counter()
    try:
        capture.start()
        output.start()
        while (frame := capture.get()) is not None:
            t = time.perf_counter()
            result = peer.predict(frame.image)
            pose_ms.append(1000 * (time.perf_counter() - t))
            people.append(len(result.boxes))
            output.put(result)
        seconds = time.perf_counter() - start
        output.finish()
    finally:
        capture.stop()
        writer.close()
    threads = peer.threads_in_force()
    name = f"{peer.name} video job (decode/encode threads), {_threads(threads)}"
    return _timed(name, seconds, pose_ms, float("nan"), people, threads)


def race_peer(
    clip: str,
    weights: str | Path,
    width: int | None,
    out: Path,
    device: str = "cpu",
    thread_counts: list[int] | None = None,
) -> Iterator[PipelineBench]:
    """The peer at its best on ``clip``: at every torch thread count (default ``peer_thread_counts()``), its
    inference alone, then the same video job as ours; one row per configuration, as each finishes. Each
    count gets one untimed call first (the thread pool's start). The caller's torch thread count is
    restored at the end. ``out``: the file the video jobs write."""
    ours = torch.get_num_threads()
    with open_clip(clip, width) as frames:
        first = next(iter(frames)).image
    try:
        peer = Peer(weights, device, first)
        for n in thread_counts or peer_thread_counts():
            torch.set_num_threads(n)
            peer.predict(first)
            yield bench_peer_inference(peer, clip, width)
            yield bench_peer_video_job(peer, clip, width, out)
    finally:
        torch.set_num_threads(ours)


def fps_ratio(ours: PipelineBench, peers: list[PipelineBench]) -> tuple[float, PipelineBench]:
    """Our FPS over the fastest of ``peers``' FPS, and that fastest row."""
    fastest = max(peers, key=lambda row: row.fps)
    return ours.fps / fastest.fps, fastest


def format_ratios(ours: PipelineBench, peers: list[PipelineBench]) -> str:
    """Our end-to-end FPS against the peer's fastest full video job, and against its fastest inference alone
    (its model calls only: the lower bound on its time, which no decode, drawing or encode can beat), each
    ratio naming the configuration it is against."""
    jobs = [row for row in peers if not row.inference_only]
    inference = [row for row in peers if row.inference_only]
    lines = [f"{ours.name}, {ours.fps:.1f} FPS end to end, against the peer at its best:"]
    for label, rows in (
        ("the fastest full video job", jobs),
        ("the inference-only bound (model calls alone, no decode, drawing or encode)", inference),
    ):
        ratio, fastest = fps_ratio(ours, rows)
        lines.append(f"- {ratio:.2f}x {label}: {fastest.name}, {fastest.fps:.1f} FPS")
    return "\n".join(lines)
