"""PoseApp's one entry point: ``python main.py <command> ...`` (see ``python main.py --help``)."""

import os
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")  # never probe the network from Ultralytics

from poseapp.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
