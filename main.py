"""PoseApp's one entry point: the desktop viewer by default, ``--video ... --out ...`` headless, and the
tool side as sub-commands (``python main.py --help``)."""

import os
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")  # never probe the network from Ultralytics

from poseapp.cli import build_parser, main  # noqa: E402


def wants_gui(argv: list[str]) -> bool:
    """No sub-command and no headless output: the viewer (on --video, or webcam 0)."""
    args, _ = build_parser().parse_known_args(argv)
    return args.command is None and (args.gui or args.video is None)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "-h" not in argv and "--help" not in argv and wants_gui(argv):
        from app.main_window import run_gui

        args = build_parser().parse_args(argv)
        knob = args.keep_ratio if args.keep_ratio is not None else args.eta
        sys.exit(run_gui(args.video, args.weights, args.detector, args.device, args.budget_ms, knob))
    sys.exit(main(argv))
