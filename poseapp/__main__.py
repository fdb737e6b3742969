"""``python -m poseapp``: the same program as ``main.py`` and the installed ``poseapp`` command."""

import sys

from poseapp.cli import launch

if __name__ == "__main__":
    sys.exit(launch())
