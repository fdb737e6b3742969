"""PoseApp: real-time multi-person pose estimation with efficient vision transformers.

``from poseapp import Pose`` is the front door (``api.py``); ``Person`` and ``FrameResult`` are what it
returns. They are imported on first use, so ``import poseapp.skeleton`` and the like stay light.

The package is laid out by layer, each importing only the layers before it:

1. the base, at the top level: ``skeleton``, ``paths``, ``geometry`` (boxes, keypoints, affine maps),
   ``results`` (what the runtime returns, and the ``PoseEstimator`` protocol) and ``models``;
2. ``io``: video in and out, keypoint results as JSON and CSV;
3. ``runtime``: detection, tracking, the top-down step, the pipeline and the video job (the GUI in
   ``app/`` builds on this layer);
4. ``data`` (training crops, made with ``runtime.transforms``) and ``engine``: training, evaluation,
   teachers, labelling, eta calibration;
5. ``tools``: bench, ONNX export, batch runs on Ray;
6. the front doors ``cli`` (``main.py``) and ``api``.

``FrameResult.plot``, ``to_json`` and ``from_json`` are the exception: conveniences of the result type that
load the renderer or the JSON writer when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Pose
    from .results import FrameResult, Person

__all__ = ["FrameResult", "Person", "Pose"]


def __getattr__(name: str) -> Any:
    if name == "Pose":
        from .api import Pose

        return Pose
    if name in ("Person", "FrameResult"):
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module 'poseapp' has no attribute {name!r}")
