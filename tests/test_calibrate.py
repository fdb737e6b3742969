"""EMGPose's default eta, chosen on validation people in one pass (``calibrate``) and stored by ``train``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poseapp.cli import main
from poseapp.data import PoseDataset, load_people
from poseapp.engine.calibrate import EtaPoint, choose_eta, eta_curve, set_default_eta
from poseapp.engine.evaluate import mean_oks, pck_on_people, predict_dataset
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
    truth = np.stack([p.xy for p in people.people])
    visible = np.stack([p.visibility for p in people.people])
    boxes = np.stack([p.box_xywh for p in people.people])
    for point in curve:
        assert point.pck == pytest.approx(pck_on_people(model, people, knob=point.eta))
        xy = predict_dataset(model, people, knob=point.eta).xy
        assert point.oks == pytest.approx(mean_oks(xy, truth, visible, boxes))
        assert point.gflops == pytest.approx(predict_dataset(model, people, knob=point.eta).gflops.mean())
    assert curve[0].fine_share == 0.0 and curve[-1].fine_share == 1.0
    assert [p.gflops for p in curve] == sorted(p.gflops for p in curve)


def test_the_cheapest_eta_within_the_tolerance_of_eta_one_in_mean_oks_is_chosen():
    """Judged by mean OKS, not PCK: eta 0.7 is as good as eta 1 in PCK@0.2 but 0.01 worse in OKS."""
    points = [EtaPoint(0.0, 0.50, 0.60, 0.0, 0.7), EtaPoint(0.5, 0.68, 0.70, 0.4, 1.3),
              EtaPoint(0.7, 0.71, 0.71, 0.7, 1.8), EtaPoint(0.9, 0.71, 0.718, 0.9, 2.0),
              EtaPoint(1.0, 0.71, 0.72, 1.0, 2.2)]  # fmt: skip
    assert choose_eta(points).eta == 0.9
    assert choose_eta(points, tolerance=0.02).eta == 0.5
    assert choose_eta(points, tolerance=0.0).eta == 1.0


def test_mean_oks_is_one_for_exact_poses_and_falls_as_coco_scores_an_offset():
    truth = np.zeros((2, NUM_JOINTS, 2)) + 50.0
    visible = np.zeros((2, NUM_JOINTS))
    visible[0, :3], visible[1, 5] = 1, 2  # person 0: nose and eyes; person 1: the left shoulder
    boxes = np.array([[0, 0, 40, 100], [0, 0, 10, 10]], float)
    assert mean_oks(truth, truth, visible, boxes) == pytest.approx(1.0)
    shifted = truth.copy()
    shifted[1, 5, 0] += 3.0  # 3 px off in a 10 x 10 box: exp(-9 / (2 * 100 * (2 * 0.079)^2))
    shifted[0, 3:] = np.nan  # unlabelled joints do not count, whatever is predicted there
    expected = (1.0 + np.exp(-9 / (2 * 100 * (2 * 0.079) ** 2))) / 2
    assert mean_oks(shifted, truth, visible, boxes) == pytest.approx(expected)
    shifted[0, 0] = np.nan  # a labelled joint not predicted scores 0
    assert mean_oks(shifted, truth, visible, boxes) == pytest.approx((2 / 3 + expected * 2 - 1) / 2)


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


def test_calibrate_command_stores_a_default_and_refuses_other_models(tmp_path, capsys):
    ann, images = write_dataset(tmp_path, people=4)
    model = create_model("emgpose_t", stem="patch", img_hw=[64, 64])
    source, out = tmp_path / "emg.safetensors", tmp_path / "calibrated.safetensors"
    save_model(model, source)
    args = ["calibrate", "--weights", str(source), "--ann", ann, "--images", images]
    assert main([*args, "--last", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    calibrated = load_model(out)
    assert calibrated.info["default_eta"]["eta"] == calibrated.knob.default
    assert len(calibrated.info["eta_curve"]) == 21 and "<- default" in printed and "(3 people)" in printed
    save_model(create_model("vitpose_t", img_hw=[64, 48]), tmp_path / "vit.safetensors")
    assert (
        main(["calibrate", "--weights", str(tmp_path / "vit.safetensors"), "--ann", ann, "--images", images])
        == 2
    )
    assert "only EMGPose" in capsys.readouterr().err
