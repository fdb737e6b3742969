"""PoseApp: real-time multi-person pose estimation with efficient vision transformers.

``from poseapp import Pose`` is the front door (``api.py``); ``Person`` and ``FrameResult`` are what it
returns. They are imported on first use, so ``import poseapp.skeleton`` and the like stay light.
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
