"""A tiny end-to-end training run: data -> steps -> validation -> checkpoint -> resume."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from poseapp.cli import main
from poseapp.models import WeightsError, create_model, load_model, save_model
from poseapp.models.vit import resample_pos_embed
from poseapp.skeleton import COCO17
from poseapp.train import TrainConfig, build_model, lr_at, seed_from, train


def write_dataset(folder, people: int = 6) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    images, annotations = [], []
    (folder / "images").mkdir()
    for i in range(people):
        image = rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / "images" / f"{i}.jpg"), image)
        joints = np.column_stack([rng.uniform(20, 70, 17), rng.uniform(10, 110, 17), np.full(17, 2)])
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 90, "height": 120})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "keypoints": joints.ravel().tolist(),
                            "bbox": [15, 5, 60, 110], "area": 6600, "iscrowd": 0})  # fmt: skip
    ann = {"images": images, "annotations": annotations,
           "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17)}]}  # fmt: skip
    (folder / "ann.json").write_text(json.dumps(ann))
    return str(folder / "ann.json"), str(folder / "images")


def test_training_runs_validates_saves_and_resumes(tmp_path) -> None:
    data = write_dataset(tmp_path)
    cfg = TrainConfig(model="evitpose_t", stem="patch", train=[data], holdout=2, out=str(tmp_path / "run"),
                      epochs=1, batch=2, workers=0, warmup_steps=1)  # fmt: skip
    best = train(cfg)
    model = load_model(best)
    assert model.arch == "evitpose_t" and model.info["epoch"] == 1
    assert 0.0 <= model.info["val_pck@0.2"] <= 1.0
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1 and saved["state"]["step"] == 2

    cfg.epochs = 2
    train(cfg)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 2 and saved["state"]["step"] == 4
    assert [h["epoch"] for h in saved["state"]["history"]] == [1, 2]


def test_emgpose_trains_with_the_quality_loss(tmp_path) -> None:
    data = write_dataset(tmp_path)
    cfg = TrainConfig(model="emgpose_t", stem="patch", train=[data], holdout=2, out=str(tmp_path / "run"),
                      epochs=1, batch=2, workers=0, quality_from_epoch=0, max_steps=1)  # fmt: skip
    train(cfg)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["state"]["step"] == 1


def test_learning_rate_warms_up_then_decays() -> None:
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(0, 100, cfg) < lr_at(9, 100, cfg) == 1e-3
    assert lr_at(50, 100, cfg) < 1e-3 and lr_at(100, 100, cfg) == 0.0


def test_warm_start_begins_from_the_given_checkpoint(tmp_path) -> None:
    data = write_dataset(tmp_path)
    first = TrainConfig(model="evitpose_t", stem="patch", train=[data], holdout=2, out=str(tmp_path / "a"),
                        epochs=1, batch=2, workers=0, max_steps=1)  # fmt: skip
    train(first)
    start = tmp_path / "start.safetensors"
    save_model(build_model(first), start)
    warm = TrainConfig(model="evitpose_t", train=[data], holdout=2, out=str(tmp_path / "b"), init=str(start),
                       epochs=1, batch=2, workers=0, max_steps=1, lr=0.0)  # fmt: skip
    model = build_model(warm)
    reference = load_model(start)
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    train(warm)  # lr 0: the run's weights stay the checkpoint's
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert torch.equal(saved["joint_tokens"], reference.state_dict()["joint_tokens"])

    warm.model = "vitpose_t"
    with pytest.raises(WeightsError, match="evitpose_t"):
        build_model(warm)


def test_init_from_seeds_the_shared_tensors_of_another_model(tmp_path) -> None:
    source = create_model("evitpose_t")
    path = tmp_path / "evit.safetensors"
    save_model(source, path)
    cfg = TrainConfig(model="emgpose_t", stem="patch", init_from=str(path))
    model = build_model(cfg)
    copied = seed_from(create_model("emgpose_t"), load_model(path))
    assert "blocks.0.attn.qkv.weight" in copied and "norm.weight" in copied
    assert "pos_coarse" not in copied  # EMGPose's own parts start fresh
    reference = load_model(path).state_dict()  # the checkpoint is half precision: compare to it
    for name in copied:
        assert torch.equal(model.state_dict()[name], reference[name]), name
    with pytest.raises(WeightsError, match="shares no tensor"):
        seed_from(torch.nn.Linear(2, 2), load_model(path))


def test_a_model_trained_at_256x192_seeds_one_at_192x144(tmp_path) -> None:
    source = create_model("evitpose_t")
    path = tmp_path / "big.safetensors"
    save_model(source, path)
    model = build_model(TrainConfig(stem="patch", img_hw=(192, 144), init_from=str(path)))
    assert model.config["img_hw"] == [192, 144] and model.grid == (12, 9)
    reference = load_model(path).state_dict()
    for name, tensor in model.state_dict().items():
        if name != "pos_embed":
            assert torch.equal(tensor, reference[name]), name
    assert model.pos_embed.shape == (1, 12 * 9, 192)


def test_position_embeddings_resample_smoothly() -> None:
    constant = torch.ones(1, 16 * 12, 4) * torch.arange(4.0)
    expected = torch.ones(1, 12 * 9, 4) * torch.arange(4.0)
    torch.testing.assert_close(resample_pos_embed(constant, (16, 12), (12, 9)), expected)
    ramp = torch.linspace(0, 1, 16).repeat_interleave(12).reshape(1, -1, 1)  # rises from top to bottom
    rows = resample_pos_embed(ramp, (16, 12), (12, 9)).reshape(12, 9)
    assert (rows[1:, 0] > rows[:-1, 0]).all() and torch.allclose(rows, rows[:, :1].expand(12, 9))


@pytest.mark.parametrize(
    "size, message", [("100x50", "multiples of 16"), ("192", "not HxW"), ("0x16", "multiples")]
)
def test_train_refuses_a_bad_input_size(size: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--train", "a.json", "images", "--input-size", size])
    assert exc.value.code != 0 and message in capsys.readouterr().err


def test_training_with_pasted_people_runs_and_refuses_a_bad_probability(tmp_path, capsys) -> None:
    ann, images = write_dataset(tmp_path)
    cfg = TrainConfig(model="evitpose_t", stem="patch", train=[(ann, images)], holdout=2, paste_prob=1.0,
                      out=str(tmp_path / "run"), epochs=1, batch=2, workers=0)  # fmt: skip
    assert load_model(train(cfg)).info["epoch"] == 1
    assert main(["train", "--train", ann, images, "--paste-prob", "1.5", "--stem", "patch"]) != 0
    assert "--paste-prob" in capsys.readouterr().err


def test_train_init_keeps_the_checkpoints_crop_size(tmp_path, capsys) -> None:
    path = tmp_path / "m.safetensors"
    save_model(create_model("evitpose_t"), path)
    ann, images = write_dataset(tmp_path)
    assert main(["train", "--init", str(path), "--train", ann, images, "--input-size", "192x144"]) != 0
    assert "--init-from" in capsys.readouterr().err
