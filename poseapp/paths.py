"""Where PoseApp finds its files, whatever the current directory: the checkpoints in ``weights/`` and the
person detector in ``assets/fetched/``.

They live in one folder, the *home*, found in this order:

1. ``$POSEAPP_HOME`` when set (a folder holding ``weights/`` and ``assets/fetched/``);
2. the source checkout the package runs from (a clone, or ``pip install -e .``), the folder above
   ``poseapp/``;
3. ``<prefix>/share/poseapp``, where ``pip install .`` puts them (``[tool.setuptools.data-files]`` in
   ``pyproject.toml``): the environment's prefix, or the user base for ``pip install --user``.
"""

from __future__ import annotations

import os
import site
import sysconfig
from pathlib import Path

HOME_ENV = "POSEAPP_HOME"
CHECKOUT = Path(__file__).resolve().parent.parent
"""The folder holding the ``poseapp`` package: the repository root when run from source."""


def installed_homes() -> list[Path]:
    """The ``share/poseapp`` folders a ``pip install`` of this environment (then ``--user``) writes to."""
    return [
        Path(sysconfig.get_path("data")) / "share" / "poseapp",
        Path(site.getuserbase()) / "share" / "poseapp",
    ]


def home() -> Path:
    """The folder holding ``weights/`` and ``assets/fetched/`` (see the module's docstring). When none of the
    candidates has a ``weights/`` folder, the first installed one, so that a missing file is reported where a
    ``pip install .`` would have put it."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    candidates = [CHECKOUT, *installed_homes()]
    return next((folder for folder in candidates if (folder / "weights").is_dir()), candidates[1])


def default_weights() -> Path:
    """The default pose checkpoint: EViTPose-T at 192x144 (``weights/evitpose_t_192x144.md``)."""
    return home() / "weights" / "evitpose_t_192x144.safetensors"


def default_detector() -> Path:
    """The default person detector, yolo11n-pose (fetched by ``setup.sh``; only its boxes are used)."""
    return home() / "assets" / "fetched" / "yolo11n-pose.pt"
