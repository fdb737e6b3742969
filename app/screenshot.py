"""Grab the viewer as a PNG after it has shown N frames of a clip (for the README), then exit.

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python -m app.screenshot \
        --video assets/fetched/sample.mp4 --weights weights/evitpose_t.safetensors \
        --overlay patches --frames 40 --out docs/viewer.png

It also prints how long after the start of the module (its imports included) the first frame was drawn:
``--frames 1`` measures the viewer's start-up.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import argparse  # noqa: E402 (the clock starts before the heavy imports)
import os  # noqa: E402
import sys  # noqa: E402
from dataclasses import fields, replace  # noqa: E402
from pathlib import Path  # noqa: E402

from PyQt6.QtCore import QTimer  # noqa: E402

from poseapp.runtime.build import PipelineBuilder  # noqa: E402
from poseapp.runtime.detect import DEFAULT_DETECTOR  # noqa: E402
from poseapp.runtime.pipeline import DEFAULT_WEIGHTS, PipelineConfig  # noqa: E402
from poseapp.runtime.render import Overlays  # noqa: E402

from .main_window import MainWindow, qt_application  # noqa: E402

OVERLAY_NAMES = [f.name for f in fields(Overlays) if isinstance(getattr(Overlays(), f.name), bool)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, help="clip to play")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--budget-ms", type=float, help="latency budget (default: the model's default knob)")
    parser.add_argument("--overlay", nargs="*", default=[], choices=OVERLAY_NAMES, help="turn these on too")
    parser.add_argument("--hide", nargs="*", default=[], choices=OVERLAY_NAMES, help="turn these off")
    parser.add_argument("--frames", type=int, default=40, help="frames to show before the grab")
    parser.add_argument("--size", default="1600x1000", help="window size, WxH")
    parser.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    parser.add_argument("--out", required=True, help="PNG to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = qt_application()
    flags = {name: True for name in args.overlay} | {name: False for name in args.hide}
    window = MainWindow(
        PipelineBuilder(PipelineConfig(device=args.device), args.detector),
        [args.weights],
        args.video,
        budget_ms=args.budget_ms,
        overlays=replace(Overlays(), **flags),
    )
    width, height = (int(v) for v in args.size.lower().split("x"))
    window.resize(width, height)
    window.show()
    first_frame: list[float] = []
    outcome: list[tuple[bool, str]] = []
    """(success, message) of the one grab or failure that ends the run."""

    def finish(problem: str = "") -> None:
        """Grab the window once (at the N-th frame or the end of the clip), or fail with ``problem``."""
        if outcome:
            return
        if not problem and window.last_image is None:
            problem = "no frame was shown"
        if not problem:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(args.out):
                problem = f"cannot write {args.out}"
        drawn = f"; first frame drawn {first_frame[0] - STARTED:.2f} s after start" if first_frame else ""
        outcome.append((not problem, problem or f"wrote {args.out} at frame {window.frames_shown}{drawn}"))
        window.close()

    def on_frame(*_) -> None:
        if not first_frame:
            first_frame.append(time.monotonic())
        if window.frames_shown >= args.frames:
            finish()

    window.worker.frame_ready.connect(on_frame)
    window.worker.source_ended.connect(lambda _: finish())
    window.worker.error.connect(finish)
    QTimer.singleShot(round(args.timeout * 1000), lambda: finish(f"timed out after {args.timeout:g} s"))
    window.start()
    app.exec()
    window.worker.wait()
    ok, message = outcome[0] if outcome else (False, "the window was closed before the grab")
    print(message if ok else f"error: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never probe the network from Ultralytics
    sys.exit(main())
