"""Start-up latency calibrations kept on disk, so only the first start on a machine pays for the timing.

A calibration is valid for one model architecture on one device with one thread count and torch version:
those make the key. A file that cannot be read is recalibrated; a cache folder that cannot be written
only means the next start calibrates again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .budget import LatencyModel


def default_cache_dir() -> Path:
    """``$POSEAPP_CACHE``, else ``$XDG_CACHE_HOME/poseapp``, else ``~/.cache/poseapp``."""
    if os.environ.get("POSEAPP_CACHE"):
        return Path(os.environ["POSEAPP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "poseapp"


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def latency_key(model: nn.Module, device: torch.device, precision: str = "fp32", flip: bool = False) -> str:
    """What a calibration of ``model`` on ``device`` in ``precision`` (with the flip test or not) depends
    on, hashed."""
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else _processor()
    parts = {
        "arch": getattr(model, "arch", type(model).__name__),
        "config": getattr(model, "config", {}),
        "device": device.type,
        "precision": precision,
        "flip": flip,
        "hardware": hardware,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cached_latency(key: str, calibrate: Callable[[], LatencyModel], cache_dir: Path | None) -> LatencyModel:
    """The calibration stored under ``key`` in ``cache_dir``, or ``calibrate()`` (then stored there).
    ``cache_dir`` None: always calibrate."""
    if cache_dir is None:
        return calibrate()
    path = Path(cache_dir) / f"latency-{key}.json"
    try:
        return LatencyModel.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    latency = calibrate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(latency.to_dict()), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass
    return latency
