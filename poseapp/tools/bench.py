"""Speed and FLOPs of a model per knob value: median milliseconds per crop after warm-up."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runtime.flops import count_macs
from ..runtime.precision import autocast, resolve_precision


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
    if inputs is None:
        w, h = model.input_size
        inputs = torch.randn(max(batches), 3, h, w, generator=torch.Generator().manual_seed(0))
    reps = -(-max(batches) // inputs.shape[0])
    inputs = inputs.repeat(reps, 1, 1, 1)[: max(batches)].to(device)
    inputs = inputs.contiguous(memory_format=torch.channels_last)  # the layout crop_batch gives the pipeline
    rows = []
    with autocast(resolve_precision(precision, inputs.device), inputs.device):
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
    name: str
    frames: int
    seconds: float
    pose_ms_p50: float
    pose_ms_p95: float
    gflops_per_frame: float
    max_people: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def row(self) -> str:
        return (
            f"| {self.name} | {self.frames} | {self.fps:.1f} | {self.pose_ms_p50:.1f} "
            f"| {self.pose_ms_p95:.1f} | {self.gflops_per_frame:.2f} | {self.max_people} |"
        )


PIPELINE_HEADER = (
    "| run | frames | end-to-end FPS | pose ms/frame p50 | pose ms/frame p95 | pose GFLOPs/frame "
    "| max people |\n"
    "|---|---|---|---|---|---|---|"
)


def bench_pipeline(name: str, clip: str, pipeline, width: int | None, out: Path) -> PipelineBench:
    """The whole video job (decode, detect, track, pose, render, H.264 encode) over ``clip``."""
    from ..io.video import ScaledSource, open_source
    from ..runtime.video_job import annotate_video, open_writer

    frames = open_source(clip)
    if width:
        frames = ScaledSource(frames, width)
    summary = annotate_video(frames, pipeline, open_writer(frames, clip, out), progress=False)
    ms = np.asarray(summary.pose_ms)
    return PipelineBench(
        name, summary.frames, summary.seconds, float(np.median(ms)), float(np.percentile(ms, 95)),
        float(np.mean(summary.gflops)), max(summary.people),
    )  # fmt: skip


def bench_yolo_every_frame(
    clip: str, weights: str, width: int | None, out: Path, device: str = "cpu"
) -> PipelineBench:
    """The reference: Ultralytics yolo11n-pose on every frame, drawn by its own plot(), same decode/encode."""
    from ultralytics import YOLO

    from ..io.video import ScaledSource, VideoWriter, open_source

    model = YOLO(str(Path(weights).resolve()), verbose=False)
    frames = open_source(clip)
    if width:
        frames = ScaledSource(frames, width)
    info = frames.info
    pose_ms, people = [], []
    start = time.perf_counter()
    with frames, VideoWriter(out, info.width, info.height, info.fps) as writer:
        for frame in frames:
            t = time.perf_counter()
            result = model.predict(frame.image, device=device, verbose=False)[0]
            pose_ms.append(1000 * (time.perf_counter() - t))
            people.append(len(result.boxes))
            writer.write(result.plot())
    seconds = time.perf_counter() - start
    ms = np.asarray(pose_ms)
    name = f"yolo11n-pose every frame (torch threads: {torch.get_num_threads()}, Ultralytics' choice)"
    return PipelineBench(
        name, len(ms), seconds, float(np.median(ms)), float(np.percentile(ms, 95)), float("nan"), max(people)
    )
