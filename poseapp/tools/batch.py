"""Many videos on Ray (``main.py batch``): each annotated exactly as ``main.py --video`` does it.

Ray runs embedded in this process by default (its processes on this machine only, reached on 127.0.0.1,
with no dashboard and no usage statistics); ``--address`` joins a running cluster instead. Each worker is
one Ray actor that builds the pose pipeline once, with the function the video command uses, and annotates
one video at a time: it decodes, poses and encodes the video itself, so only paths and a small result per
video cross the network. Paths must therefore name the same files on every node (shared storage).

A video's outputs (``DIR/<name>.mp4`` and, when asked for, ``.json`` and ``.csv``) are written as
``<file>.part`` and renamed once the video is complete. ``DIR/summary.json``, rewritten after every video,
has an entry per video: status, frames, FPS, most people in a frame, the one-line error, the outputs'
sizes, and the source file and run options they came from. A rerun skips a video only when that entry says
ok for the same source and options and every output still has its recorded size (the MP4 its recorded
frame count too), so an output cut short by a crash or Ctrl-C is never taken for a finished one.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import math
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import av
import torch
from tqdm import tqdm

from ..io.video import VideoError, VideoWriter, open_source, probe
from ..models import WeightsError
from ..runtime.build import UsageError, overlays_from_args, pipeline_from_args
from ..runtime.pipeline import REPO
from ..runtime.video_job import RunSummary, annotate_video, open_writer

if TYPE_CHECKING:
    from ray.actor import ActorHandle

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ts"})
"""What a folder or a glob pattern contributes to ``--videos`` (a file named on its own is taken as it is)."""
SUMMARY_NAME = "summary.json"
PART = ".part"
"""Suffix of an output while it is being written."""
POLL_SECONDS = 0.5
"""How often the driver asks the workers how far they are (the progress bar)."""
OBJECT_STORE_BYTES = 128 * 2**20
"""Embedded Ray's shared-memory store: only small results pass through it (Ray's default: 30% of RAM)."""
WORKER_ENV = {"YOLO_OFFLINE": "1"}
"""Set in every worker, a cluster's too: Ultralytics never probes the network."""


def find_videos(specs: Sequence[str]) -> list[Path]:
    """The videos ``--videos`` names, in order, each once, as absolute paths: a file as it is, a folder's
    files with a video suffix (not its sub-folders'), and a glob pattern's matching files with one."""
    found: dict[Path, None] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif glob.has_magic(spec):
            files = (Path(p) for p in glob.glob(spec, recursive=True))
            matches = sorted(p for p in files if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            raise UsageError(f"--videos {spec}: no such file or folder")
        found.update((Path(os.path.abspath(p)), None) for p in matches)
    if not found:
        suffixes = " ".join(sorted(VIDEO_SUFFIXES))
        raise UsageError(f"no videos in --videos {' '.join(specs)} (a folder or glob takes {suffixes})")
    return list(found)


def prepare_out(out: str) -> Path:
    """The output folder as an absolute path, made if missing; one line when it cannot be written."""
    folder = Path(out).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the --out folder {out}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write in the --out folder {out}")
    return folder


@dataclass(frozen=True)
class Job:
    """One video of the batch and where its outputs go."""

    video: Path
    outputs: dict[str, Path]
    """Kind (``mp4``, and ``json`` / ``csv`` when asked for) -> final path."""
    source: dict[str, int]
    """Size and modification time of the video when the batch was planned (a changed file is done again)."""

    @property
    def name(self) -> str:
        return self.video.stem


def part(path: Path) -> Path:
    """Where ``path`` is written until its video is complete."""
    return path.with_name(path.name + PART)


def remove_parts(job: Job) -> None:
    """Delete what a worker that stopped half-way left of ``job``'s outputs."""
    for path in job.outputs.values():
        part(path).unlink(missing_ok=True)


def plan_jobs(videos: Sequence[Path], out: Path, kinds: Sequence[str]) -> list[Job]:
    """A job per video with outputs ``out/<video name>.<kind>``; refuses two videos of one name and an output
    that would replace its own video."""
    jobs: dict[str, Job] = {}
    for video in videos:
        if video.stem in jobs:
            raise UsageError(
                f"{jobs[video.stem].video} and {video} would both write {out / video.stem}.mp4: "
                "rename one or give them different --out folders"
            )
        outputs = {kind: out / f"{video.stem}.{kind}" for kind in kinds}
        if any(path.exists() and path.samefile(video) for path in outputs.values()):
            raise UsageError(f"{video} would be overwritten by its own output: give another --out folder")
        stat = video.stat()
        jobs[video.stem] = Job(video, outputs, {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return list(jobs.values())


def mp4_frames(path: Path) -> int:
    """Frame count in an MP4's index (written last, when the file is finished); -1 when it cannot be read."""
    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames
    except (av.FFmpegError, OSError, IndexError):
        return -1


@dataclass
class VideoResult:
    """What a worker reports for one video."""

    video: str
    status: str
    """``ok`` or ``failed``."""
    frames: int = 0
    fps: float = 0.0
    people: int = 0
    """Most people in one frame."""
    corrupt_frames: int = 0
    """Frames skipped because they could not be decoded."""
    seconds: float = 0.0
    error: str | None = None
    """Why it failed, in one line."""
    outputs: dict[str, dict] = field(default_factory=dict)
    """Kind -> ``{"file": name in the output folder, "bytes": size}``."""


def one_line(exc: BaseException) -> str:
    """``exc`` in one line: PoseApp's own input errors as they are, anything else after its type."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (VideoError, UsageError, WeightsError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Summary:
    """``DIR/summary.json``: an entry per video annotated into the folder (by this batch or an earlier one),
    keyed by the video's path, and the totals of the last run; rewritten whole and atomically."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SUMMARY_NAME
        self.entries: dict[str, dict] = {}
        self.last_run: dict = {}
        if self.path.is_file():
            try:
                videos = json.loads(self.path.read_text())["videos"]
                self.entries = {entry["video"]: entry for entry in videos}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                print(f"note: {self.path} is unreadable ({one_line(exc)}): every video is done again",
                      file=sys.stderr)  # fmt: skip

    def finished(self, job: Job, options: dict) -> bool:
        """Whether ``job``'s outputs are complete: its entry says ok for the same source file and run options,
        and each output asked for has the size recorded, the MP4 also the frame count."""
        entry = self.entries.get(str(job.video), {})
        if (entry.get("status"), entry.get("source"), entry.get("options")) != ("ok", job.source, options):
            return False
        recorded = entry.get("outputs", {})
        for kind, path in job.outputs.items():
            size = recorded.get(kind, {}).get("bytes")
            if size is None or not path.is_file() or path.stat().st_size != size:
                return False
        return mp4_frames(job.outputs["mp4"]) == entry.get("frames")

    def record(self, job: Job, result: VideoResult, options: dict) -> None:
        """Enter ``result``, replacing any entry of another video that wrote the same output names."""
        for video, entry in list(self.entries.items()):
            if entry.get("name") == job.name and video != str(job.video):
                del self.entries[video]
        self.entries[str(job.video)] = {
            "name": job.name, **asdict(result), "source": job.source, "options": options
        }  # fmt: skip

    def write(self) -> None:
        videos = sorted(self.entries.values(), key=lambda entry: entry["name"])
        temporary = part(self.path)
        temporary.write_text(json.dumps({"videos": videos, "last_run": self.last_run}, indent=2) + "\n")
        os.replace(temporary, self.path)


class PoseWorker:
    """The body of one Ray actor: the pipeline the run options describe, built once by the video command's
    own function, and one video at a time through it. A second thread answers ``frames_done``."""

    def __init__(self, args: argparse.Namespace, threads: int) -> None:
        torch.set_num_threads(threads)
        self.overlays = overlays_from_args(args)
        self.writer: VideoWriter | None = None
        self.error: str | None = None
        try:
            self.pipeline = pipeline_from_args(args)
        except (UsageError, WeightsError) as exc:
            self.error = str(exc)

    def setup_error(self) -> str | None:
        """Why this worker could not build its pipeline (weights, detector, device), or None."""
        return self.error

    def frames_done(self) -> int:
        """Frames encoded so far of the video in progress (0 between videos)."""
        writer = self.writer
        return writer.frames if writer is not None else 0

    def annotate(self, job: Job) -> VideoResult:
        """Annotate ``job.video`` into ``<output>.part`` files and rename them when it is complete; any error
        (or an interruption) removes them and is the result's one line."""
        started = time.perf_counter()
        parts = {kind: part(path) for kind, path in job.outputs.items()}
        try:
            summary = self._annotate(str(job.video), parts)
            if summary.interrupted:
                raise InterruptedError(f"interrupted after {summary.frames} frames")
            for kind, path in job.outputs.items():
                os.replace(parts[kind], path)
        except Exception as exc:  # a bad video fails alone: its reason goes into the summary
            remove_parts(job)
            return VideoResult(str(job.video), "failed", error=one_line(exc))
        outputs = {kind: {"file": p.name, "bytes": p.stat().st_size} for kind, p in job.outputs.items()}
        return VideoResult(
            str(job.video), "ok", frames=summary.frames, fps=round(summary.fps, 2),
            people=max(summary.people, default=0), corrupt_frames=summary.corrupt,
            seconds=round(time.perf_counter() - started, 2), outputs=outputs,
        )  # fmt: skip

    def _annotate(self, video: str, parts: dict[str, Path]) -> RunSummary:
        """What ``main.py --video`` does with one file, on this worker's pipeline (reset: no tracks)."""
        self.pipeline.reset()
        frames = open_source(video)
        try:
            self.writer = open_writer(frames, video, parts["mp4"])
        except BaseException:
            frames.close()
            raise
        try:
            return annotate_video(
                frames, self.pipeline, self.writer, self.overlays, parts.get("json"), parts.get("csv"),
                progress=False,
            )  # fmt: skip
        finally:
            self.writer = None


def check_address(address: str) -> None:
    """Refuse an ``--address`` that is not HOST:PORT or where nothing answers, at once (Ray would retry for
    minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address}: expected HOST:PORT, as `ray start --head` prints it")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(f"--address {address}: nothing answers there ({exc.strerror or exc})") from exc


def ray_environment(address: str | None) -> None:
    """Settings Ray reads when it is first imported: no usage statistics, and for embedded Ray its processes
    on 127.0.0.1 only (what Ray does where it runs without clusters) instead of this machine's address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def init_ray(address: str | None, cpus: int) -> None:
    """Join the Ray cluster at ``address``, or start Ray embedded in this process with at least ``cpus`` CPUs.

    Embedded Ray stays on this machine (``ray_environment``, when this is the process's first ``import ray``)
    and starts no dashboard. Either way the workers' own output stays in Ray's log files.
    """
    ray_environment(address)
    import ray

    env = dict(WORKER_ENV)
    if not address:  # embedded workers import poseapp from this checkout, whatever the current folder
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "runtime_env": {"env_vars": env}}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(  # "local": a new instance even where RAY_ADDRESS names a cluster
                "local", num_cpus=max(cpus, os.cpu_count() or 1), include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES, **quiet,
            )  # fmt: skip
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot start Ray{f' at {address}' if address else ''}: {one_line(exc)}") from exc


@contextmanager
def ray_session(address: str | None, cpus: int) -> Iterator[None]:
    """Ray for the length of a batch: the session this process already has (left running, as a test's), else
    one from ``init_ray``, shut down at the end."""
    ray_environment(address)
    import ray

    if ray.is_initialized():
        yield
        return
    init_ray(address, cpus)
    try:
        yield
    finally:
        ray.shutdown()


def default_threads(workers: int) -> int:
    """Torch threads per worker: this machine's cores shared out, less one for decoding and encoding (as
    ``main.py --video`` does), at least one."""
    return max(1, (os.cpu_count() or 1) // workers - 1)


def gpu_share(device: str, workers: int) -> float:
    """Each worker's share of the cluster's GPUs (Ray's ``num_gpus``): split evenly, at most one each; none
    for ``--device cpu``, nor for ``auto`` on a cluster without GPUs."""
    import ray

    if device == "cpu":
        return 0.0
    gpus = ray.cluster_resources().get("GPU", 0.0)
    if device == "cuda" and not gpus:
        raise UsageError("--device cuda, but the Ray cluster has no GPU")
    return min(1.0, math.floor(gpus / workers * 1e4) / 1e4)


def start_workers(args: argparse.Namespace, count: int, threads: int, restarts: int) -> list[ActorHandle]:
    """``count`` pose actors with ``threads`` CPUs and their GPU share each, once all have built their
    pipelines; one line (and none left running) when one could not. A worker whose process dies (a crash in
    a decoder, out of memory, a lost node) fails its video and is started again, up to ``restarts`` times."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0.0)
    if cpus < count * threads:
        print(f"note: the workers ask for {count * threads} CPUs and the Ray cluster has {cpus:g}: "
              "some wait until it has more", file=sys.stderr)  # fmt: skip
    actor = ray.remote(max_concurrency=2, max_restarts=restarts)(PoseWorker).options(
        num_cpus=threads, num_gpus=gpu_share(args.device, count)
    )
    workers = [actor.remote(args, threads) for _ in range(count)]
    try:
        errors = ray.get([worker.setup_error.remote() for worker in workers])
    except ray.exceptions.RayError as exc:
        errors = [f"a Ray worker did not start ({type(exc).__name__}; Ray's logs say why)"]
    if any(errors):
        stop_workers(workers)
        raise UsageError(next(error for error in errors if error))
    return workers


def stop_workers(workers: Sequence[ActorHandle]) -> None:
    """End the workers' processes (whatever they are doing)."""
    import ray

    for worker in workers:
        ray.kill(worker)


def frame_estimate(video: Path) -> int:
    """The frame count a video's container states or implies, for the progress bar; 0 where it cannot be read
    (its worker then reports why)."""
    try:
        return probe(str(video)).frames or 0
    except VideoError:
        return 0


def frames_in_progress(workers: Sequence[ActorHandle]) -> int:
    """Frames the busy ``workers`` have encoded of their current videos."""
    import ray

    refs = [worker.frames_done.remote() for worker in workers]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)
    done = 0
    for ref in ready:
        with contextlib.suppress(ray.exceptions.RayError):  # a dead worker is reported by its video's result
            done += ray.get(ref)
    return done


def collect(ref, job: Job) -> tuple[VideoResult, bool]:
    """The result of ``job``'s annotate call, and whether its worker died (which fails the video)."""
    import ray

    try:
        return ray.get(ref), False
    except ray.exceptions.RayError as exc:
        failed = VideoResult(str(job.video), "failed", error=f"its Ray worker failed ({type(exc).__name__})")
        return failed, isinstance(exc, ray.exceptions.RayActorError)


def revived(ref) -> bool:
    """Whether a worker that died is back, with its pipeline (``ref``: its ``setup_error`` call)."""
    import ray

    try:
        return ray.get(ref) is None
    except ray.exceptions.RayError:  # it died for good: no restarts left, or it cannot start again
        return False


def describe(job: Job, result: VideoResult) -> str:
    """The line printed when a video is finished."""
    if result.status != "ok":
        return f"FAILED {job.name}: {result.error}"
    return (
        f"ok     {job.name}: {result.frames} frames, {result.fps:.1f} FPS, up to {result.people} people"
        f" -> {job.outputs['mp4']}"
    )


def annotate_all(
    jobs: Sequence[Job], workers: Sequence[ActorHandle], summary: Summary, options: dict, progress: bool
) -> list[VideoResult]:
    """Hand each worker the next video as soon as it is free, record every result in the summary as it comes
    and show one bar over all frames. A worker that died gets videos again once Ray has started it anew (the
    videos left fail if none is left). On Ctrl-C the workers are stopped and their ``.part`` files removed."""
    import ray

    estimates = {job.video: frame_estimate(job.video) for job in jobs}
    bar = tqdm(total=sum(estimates.values()), unit="frame", disable=not progress, mininterval=1.0)
    queue, idle = deque(jobs), list(workers)
    running: dict[ray.ObjectRef, tuple[ActorHandle, Job | None]] = {}
    """Each call in flight: its worker and video (None: the worker is being started again)."""
    results, finished_frames = [], 0

    def finish(job: Job, result: VideoResult) -> None:
        nonlocal finished_frames
        summary.record(job, result, options)
        summary.write()
        results.append(result)
        finished_frames += result.frames
        bar.total += result.frames - estimates[job.video]
        tqdm.write(describe(job, result))

    try:
        while queue or any(job for _, job in running.values()):
            while idle and queue:
                worker, job = idle.pop(), queue.popleft()
                running[worker.annotate.remote(job)] = (worker, job)
            if not running:  # every worker died for good
                for job in queue:
                    finish(job, VideoResult(str(job.video), "failed", error="no Ray worker left"))
                queue.clear()
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                worker, job = running.pop(ref)
                if job is None:
                    if revived(ref):
                        idle.append(worker)
                    continue
                result, died = collect(ref, job)
                finish(job, result)
                if died:  # Ray starts it again; a call with retries returns once it is back
                    remove_parts(job)
                    running[worker.setup_error.options(max_task_retries=-1).remote()] = (worker, None)
                else:
                    idle.append(worker)
            busy = [worker for worker, job in running.values() if job]
            bar.update(finished_frames + frames_in_progress(busy) - bar.n)
    except KeyboardInterrupt:
        stop_workers(workers)
        stopped = [job for _, job in running.values() if job]
        for job in stopped:
            remove_parts(job)
        tqdm.write(f"stopped with {len(queue) + len(stopped)} videos to go: run the same command again")
        raise
    finally:
        bar.close()
    return results


def run_batch(args: argparse.Namespace) -> int:
    """``main.py batch``: annotate every video of ``--videos`` not already done in ``--out``; 0 when all of
    them are ok, 1 when any failed."""
    if args.workers < 1 or args.threads_per_worker < 0:
        raise UsageError("--workers must be at least 1 and --threads-per-worker at least 0")
    if args.address:
        check_address(args.address)
    out = prepare_out(args.out)
    kinds = ["mp4"] + [kind for kind in ("json", "csv") if getattr(args, kind)]
    jobs = plan_jobs(find_videos(args.videos), out, kinds)
    options = json.loads(json.dumps({name: getattr(args, name) for name in args.pipeline_options}))
    summary = Summary(out)
    todo = [job for job in jobs if not summary.finished(job, options)]
    count = min(args.workers, len(todo))
    threads = args.threads_per_worker or default_threads(args.workers)
    plan = f" on {count} Ray workers, {threads} torch threads each" if todo else ""
    print(
        f"{len(jobs)} videos, {len(jobs) - len(todo)} already done; {len(todo)} to annotate{plan}", flush=True
    )
    results, seconds = [], 0.0
    if todo:
        with ray_session(args.address, count * threads):
            workers = start_workers(args, count, threads, restarts=len(todo))
            started = time.perf_counter()
            try:
                results = annotate_all(todo, workers, summary, options, progress=not args.quiet)
            finally:
                stop_workers(workers)
            seconds = time.perf_counter() - started
    frames = sum(result.frames for result in results)
    ok = sum(summary.entries[str(job.video)]["status"] == "ok" for job in jobs)
    summary.last_run = {
        "videos": len(jobs), "already_done": len(jobs) - len(todo), "annotated": len(results),
        "ok": ok, "failed": len(jobs) - ok, "workers": count, "threads_per_worker": threads,
        "address": args.address, "frames": frames, "seconds": round(seconds, 2),
        "fps": round(frames / seconds, 2) if seconds else 0.0,
    }  # fmt: skip
    summary.write()
    print(f"{ok} of {len(jobs)} videos ok, {len(jobs) - ok} failed; {frames} frames annotated now in "
          f"{seconds:.1f} s ({summary.last_run['fps']:.1f} FPS over the batch); {summary.path}")  # fmt: skip
    return 0 if ok == len(jobs) else 1
