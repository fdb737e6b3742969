"""One way to build the pose pipeline from run options, shared by the video command, the viewer,
``tools.batch`` and the Python API (``Pose``): the same options give the same pipeline wherever they are
given.

``PipelineBuilder`` holds a ``PipelineConfig`` and a person detector. Each call builds a fresh pipeline (its
own tracker and smoother) for a checkpoint, so the viewer can switch models; the detector is loaded once, on
the first call, and shared. ``builder_from_args``, ``pipeline_from_args`` and ``overlays_from_args`` read
the run options as the command line parses them (``cli.add_pipeline_options``).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..models import OnnxPoseModel, load_model, prepare_for_inference

if TYPE_CHECKING:  # the pipeline (scipy, via the tracker), the detector and the renderer load when used
    from ..results import Detector
    from .pipeline import PipelineConfig, PosePipeline
    from .render import Overlays


class UsageError(ValueError):
    """A bad option or input (a command-line flag, an argument of the API), reported as one line."""


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` where available, else ``cpu``; ``cuda`` without a CUDA device is a UsageError."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA device is available")
    return name


def check_knob(model: nn.Module, value: float | None) -> None:
    """Refuse a knob value outside ``model``'s range (an ONNX export has the one value it was exported at)."""
    knob = model.knob
    if value is None or knob.low - 1e-9 <= value <= knob.high + 1e-9:
        return
    if isinstance(model, OnnxPoseModel):
        raise UsageError(f"{model.path} was exported at {knob.name} {knob.default:g}, not {value:g}")
    if knob.low == knob.high:
        raise UsageError(f"{model.arch} has no knob to set")
    raise UsageError(f"{model.arch}'s {knob.name} runs from {knob.low:g} to {knob.high:g}, not {value:g}")


class PipelineBuilder:
    """Pose pipelines of one configuration around one person detector.

    ``detector``: an Ultralytics checkpoint (loaded on the first call; None: ``detect.DEFAULT_DETECTOR``) or
    any ``image_bgr -> [Detection]`` callable. ``knob_name``: the knob ``cfg.knob`` is meant for
    (``keep_ratio``, ``eta``); a model whose knob has another name is refused instead of being set by a value
    of another scale. ``cfg.device`` may be ``auto``.
    """

    def __init__(
        self, cfg: PipelineConfig, detector: str | Path | Detector | None = None, knob_name: str | None = None
    ) -> None:
        from .detect import DEFAULT_DETECTOR

        self.cfg = replace(cfg, device=resolve_device(cfg.device))
        self.knob_name = knob_name
        self._detector = DEFAULT_DETECTOR if detector is None else detector

    def model(self, weights: str | Path | None = None) -> nn.Module:
        """The checkpoint ``weights`` (None: the configuration's), ready for inference and checked against
        the configured knob."""
        model = prepare_for_inference(load_model(weights or self.cfg.weights))
        if self.knob_name is not None and model.knob.name != self.knob_name:
            raise UsageError(f"{model.arch} has no {self.knob_name} knob (its knob: {model.knob.name})")
        check_knob(model, self.cfg.knob)
        return model

    def detector(self) -> Detector:
        """The person detector, loaded on the first call (a missing or foreign file is a UsageError)."""
        if not callable(self._detector):
            from .detect import PersonDetector

            try:
                self._detector = PersonDetector(
                    self._detector, device=self.cfg.device, precision=self.cfg.precision
                )
            except (FileNotFoundError, ValueError) as exc:
                raise UsageError(str(exc)) from exc
        return self._detector

    def __call__(self, weights: str | Path | None = None, model: nn.Module | None = None) -> PosePipeline:
        """A fresh pipeline of the checkpoint ``weights`` (None: the configuration's), or of an already loaded
        ``model`` of it (shared with its other users: the model is only read)."""
        from .pipeline import PosePipeline

        if model is None:
            model = self.model(weights)  # first: a bad checkpoint fails before the slow detector loads
        cfg = replace(self.cfg, weights=weights or self.cfg.weights)
        return PosePipeline(cfg, self.detector(), model=model)


def builder_from_args(args: argparse.Namespace, runtime_knob: bool = False) -> PipelineBuilder:
    """The pipeline builder the run options describe (``args`` parsed with ``cli.add_pipeline_options``),
    checked without loading anything. ``runtime_knob``: leave ``--budget-ms``, ``--keep-ratio`` and ``--eta``
    out of the pipeline's configuration, for the viewer, which sets them on each model it loads."""
    from .pipeline import PipelineConfig

    if args.keep_ratio is not None and args.eta is not None:
        raise UsageError("give --keep-ratio or --eta, not both")
    if args.budget_ms is not None and args.budget_ms <= 0:
        raise UsageError("--budget-ms must be positive")
    if args.detect_every < 1:
        raise UsageError("--detect-every must be at least 1")
    knob = args.keep_ratio if args.keep_ratio is not None else args.eta
    knob_name = (
        None if knob is None or runtime_knob else ("keep_ratio" if args.keep_ratio is not None else "eta")
    )
    cfg = PipelineConfig(
        weights=args.weights, device=args.device, detect_every=args.detect_every,
        budget_ms=None if runtime_knob else args.budget_ms, knob=None if runtime_knob else knob,
        smoothing=not args.no_smooth, precision=args.precision, flip=args.flip,
    )  # fmt: skip
    return PipelineBuilder(cfg, args.detector, knob_name)


def pipeline_from_args(args: argparse.Namespace) -> PosePipeline:
    """The detector + tracker + pose pipeline the run options describe."""
    return builder_from_args(args)()


def overlays_from_args(args: argparse.Namespace) -> Overlays:
    """The ``--overlay`` choices as the renderer's Overlays."""
    from .render import Overlays

    return Overlays(patches="patches" in args.overlay, granularity="grid" in args.overlay,
                    merges="merges" in args.overlay, windows="windows" in args.overlay)  # fmt: skip
