"""Pose models: a plain ViTPose baseline, the efficient EViTPose and EMGPose, the multi-scale UniTransPose."""

from .emgpose import EMGPose
from .evitpose import EViTPose
from .knob import Knob
from .onnx_model import OnnxPoseModel
from .record import PoseOutput
from .unitranspose import UniTransPose
from .vitpose import ViTPose
from .zoo import MODEL_NAMES, WeightsError, create_model, load_model, prepare_for_inference, save_model

__all__ = [
    "EMGPose", "EViTPose", "Knob", "MODEL_NAMES", "OnnxPoseModel", "PoseOutput", "UniTransPose", "ViTPose",
    "WeightsError", "create_model", "load_model", "prepare_for_inference", "save_model",
]  # fmt: skip
