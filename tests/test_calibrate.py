"""EMGPose's default eta, chosen on validation people in one pass (``calibrate``) and stored by ``train``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poseapp.data import PoseDataset, load_people
from poseapp.engine.calibrate import EtaPoint, choose_eta, eta_curve, set_default_eta
from poseapp.engine.evaluate import pck_on_people, predict_dataset
from poseapp.engine.train import TrainConfig, train
from poseapp.models import EMGPose, create_model, load_model, save_model
from poseapp.models.vit import ViTSize
from poseapp.skeleton import NUM_JOINTS
from tests.test_train import write_dataset


@pytest.fixture()
def model_and_people(tmp_path):
    ann, images = write_dataset(tmp_path, people=5)
    model = EMGPose(ViTSize(48, 12, 3), NUM_JOINTS).eval()
    with torch.no_grad():  # a quality predictor that spreads Q over (0, 1) across people
        model.quality.fc2.weight.normal_(0, 5.0)
    return model, PoseDataset(load_people(ann, images), train=False)


def test_every_point_of_the_curve_is_what_running_at_that_eta_gives(model_and_people):
    model, people = model_and_people
    curve = eta_curve(model, people, etas=np.array([0.0, 0.3, 0.6, 1.0]))
    for point in curve:
        assert point.pck == pytest.approx(pck_on_people(model, people, knob=point.eta))
        assert point.gflops == pytest.approx(predict_dataset(model, people, knob=point.eta).gflops.mean())
    assert curve[0].fine_share == 0.0 and curve[-1].fine_share == 1.0
    assert [p.gflops for p in curve] == sorted(p.gflops for p in curve)


def test_the_cheapest_eta_within_the_tolerance_of_eta_one_is_chosen():
    points = [EtaPoint(0.0, 0.50, 0.0, 0.7), EtaPoint(0.5, 0.68, 0.4, 1.3), EtaPoint(0.7, 0.705, 0.7, 1.8),
              EtaPoint(1.0, 0.71, 1.0, 2.2)]  # fmt: skip
    assert choose_eta(points).eta == 0.7
    assert choose_eta(points, tolerance=0.035).eta == 0.5
    assert choose_eta(points, tolerance=0.0).eta == 1.0


def test_a_default_eta_survives_saving(tmp_path):
    model = create_model("emgpose_t")
    set_default_eta(model, 0.8)
    save_model(model, tmp_path / "m.safetensors")
    assert model.knob.default == 0.8 and load_model(tmp_path / "m.safetensors").knob.default == 0.8


def test_training_an_emgpose_stores_its_calibrated_eta(tmp_path):
    data = write_dataset(tmp_path)
    cfg = TrainConfig(model="emgpose_t", stem="patch", train=[data], holdout=2, out=str(tmp_path / "run"),
                      epochs=1, batch=2, workers=0, warmup_steps=1)  # fmt: skip
    model = load_model(train(cfg))
    chosen = model.info["default_eta"]
    assert model.knob.default == chosen["eta"] and len(model.info["eta_curve"]) == 21
    assert model.info["knob"] == 1.0  # EMGPose validates with the fine stage for everyone
