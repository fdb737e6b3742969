"""PoseApp's one entry point: the desktop viewer by default, ``--video ... --out ...`` headless, and the
tool side as sub-commands (``python main.py --help``). The same program is ``python -m poseapp`` and, after
``pip install .``, the ``poseapp`` command (``poseapp.cli.launch``)."""

import sys

from poseapp.cli import launch

if __name__ == "__main__":
    sys.exit(launch())
