"""A tiny end-to-end training run: data -> steps -> validation -> checkpoint -> resume; and under torchrun.

Run as a script (by ``torchrun``, from ``test_ddp_...``) this file is one process of a DDP run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import poseapp.engine.train as training
from poseapp.cli import main
from poseapp.data import AugmentConfig, PoseDataset, load_people
from poseapp.engine.distill import HeatmapTeacher, mix_targets
from poseapp.engine.losses import QUALITY_TARGETS, quality_target
from poseapp.engine.train import (
    EpochOrder,
    SeededData,
    TrainConfig,
    build_model,
    lr_at,
    parameter_groups,
    seed_from,
    train,
)
from poseapp.models import WeightsError, create_model, load_model, save_model
from poseapp.models.vit import resample_pos_embed
from poseapp.skeleton import COCO17

ROOT = Path(__file__).resolve().parent.parent


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

    cfg.epochs, cfg.resume = 2, True
    train(cfg)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 2 and saved["state"]["step"] == 4
    assert [h["epoch"] for h in saved["state"]["history"]] == [1, 2]


@pytest.mark.parametrize("target", QUALITY_TARGETS)
def test_emgpose_trains_with_the_quality_loss(tmp_path, target: str) -> None:
    data = write_dataset(tmp_path)
    cfg = TrainConfig(model="emgpose_t", stem="patch", train=[data], holdout=2, out=str(tmp_path / "run"),
                      epochs=1, batch=2, workers=0, quality_from_epoch=0, max_steps=1,
                      quality_target=target)  # fmt: skip
    train(cfg)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["state"]["step"] == 1


def test_quality_targets_are_the_coarse_oks_or_what_the_fine_stage_would_not_add() -> None:
    coarse, fine = torch.tensor([0.9, 0.5, 0.6]), torch.tensor([0.8, 0.8, 0.6])
    torch.testing.assert_close(quality_target("oks", coarse, fine), coarse)
    torch.testing.assert_close(quality_target("gain", coarse, fine), torch.tensor([1.0, 0.7, 1.0]))
    with pytest.raises(ValueError, match="quality target 'loss'"):
        quality_target("loss", coarse, fine)


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


def test_a_model_with_another_stem_is_seeded_around_the_teachers_layers(tmp_path, yolo_pose_weights) -> None:
    """Seeding a ``yolo_neck`` model from a ``yolo`` one copies the transformer and head, while the whole
    stem body is yolo11n-pose's own (the source's fine-tuned layers 0-6 would not fit layers 7-19)."""
    from ultralytics.nn.tasks import load_checkpoint

    source = create_model("evitpose_t", stem="yolo", img_hw=[64, 48])
    for p in source.patch_embed.parameters():
        torch.nn.init.normal_(p)  # a stem far from the teacher's
    path = tmp_path / "old.safetensors"
    save_model(source, path)
    cfg = TrainConfig(
        stem="yolo_neck", img_hw=(64, 48), init_from=str(path), stem_weights=str(yolo_pose_weights)
    )
    model = build_model(cfg)
    reference = load_model(path).state_dict()
    for name in ("blocks.0.attn.qkv.weight", "joint_tokens", "pos_embed", "norm.weight"):
        assert torch.equal(model.state_dict()[name], reference[name]), name
    teacher = load_checkpoint(str(yolo_pose_weights), device="cpu")[0].float().state_dict()
    for name, value in model.patch_embed.body.state_dict().items():
        torch.testing.assert_close(value, teacher[f"model.{name}"], msg=name)


def test_the_released_stem_learns_at_its_own_share_of_the_rate() -> None:
    """Every parameter in exactly one group; the stem's body, and nothing else, at ``stem_lr_scale``;
    weight decay on matrices and kernels only."""
    model = create_model("evitpose_t", stem="yolo", img_hw=[64, 48])
    groups = parameter_groups(model, TrainConfig(stem_lr_scale=0.1, weight_decay=0.05))
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    stem = {id(p) for p in model.patch_embed.body.parameters()}
    for group in groups:
        members = {id(p) in stem for p in group["params"]}
        assert members == {group["lr_scale"] == 0.1}
        assert all((p.ndim > 1) == (group["weight_decay"] > 0) for p in group["params"])
    patch = create_model("evitpose_t", stem="patch", img_hw=[64, 48])
    assert {g["lr_scale"] for g in parameter_groups(patch, TrainConfig(stem_lr_scale=0.1))} == {1.0}


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
    assert main(["train", "--train", ann, images, "--warmup-steps", "-1", "--stem", "patch"]) != 0
    assert "--warmup-steps count optimiser steps" in capsys.readouterr().err


def test_train_takes_a_seed_and_refuses_a_negative_one(tmp_path, monkeypatch, capsys) -> None:
    """``--seed`` reaches the run's config (its data order and augmentation); a negative one is refused."""
    ann, images = write_dataset(tmp_path)
    seen: list[TrainConfig] = []
    monkeypatch.setattr("poseapp.engine.train.train", lambda cfg: seen.append(cfg) or "best.safetensors")
    args = ["train", "--train", ann, images, "--stem", "patch", "--out", str(tmp_path / "run")]
    assert main([*args, "--seed", "7"]) == 0 and main(args) == 0
    assert [cfg.seed for cfg in seen] == [7, 0]
    assert main([*args, "--seed", "-1"]) == 2
    assert "--seed must be 0 or more" in capsys.readouterr().err


def test_train_init_keeps_the_checkpoints_crop_size(tmp_path, capsys) -> None:
    path = tmp_path / "m.safetensors"
    save_model(create_model("evitpose_t"), path)
    ann, images = write_dataset(tmp_path)
    assert main(["train", "--init", str(path), "--train", ann, images, "--input-size", "192x144"]) != 0
    assert "--init-from" in capsys.readouterr().err


def tiny_config(data: tuple[str, str], out: Path, **changes) -> TrainConfig:
    """Two epochs of two steps (4 training people, batch 2) of a small EViTPose-T on ``data``."""
    cfg = TrainConfig(model="evitpose_t", stem="patch", img_hw=(64, 48), train=[data], holdout=2,
                      out=str(out), epochs=2, batch=2, workers=0, warmup_steps=1)  # fmt: skip
    return replace(cfg, **changes)


def without_wall_clock(history: list[dict]) -> list[dict]:
    """The history entries without their wall-clock minutes, which no rerun reproduces."""
    return [{k: v for k, v in entry.items() if k != "minutes"} for entry in history]


@pytest.mark.parametrize("workers, distilled", [(0, False), (2, False), (0, True)])
def test_a_stopped_and_resumed_run_equals_one_never_stopped(tmp_path, workers: int, distilled: bool) -> None:
    data = write_dataset(tmp_path)
    extra = {}
    if distilled:  # a teacher's soft targets and a moving average of the weights, saved and resumed too
        save_model(create_model("evitpose_t", img_hw=[64, 48]), tmp_path / "teacher.safetensors")
        extra = {"distill": str(tmp_path / "teacher.safetensors"), "ema": 0.9}
    train(tiny_config(data, tmp_path / "whole", workers=workers, **extra))
    for stop in (1, 3):  # in the middle of each epoch
        parts = tiny_config(data, tmp_path / "parts", workers=workers, max_steps=stop, resume=stop > 1)
        train(replace(parts, **extra))
        assert torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["state"]["step"] == stop
    train(tiny_config(data, tmp_path / "parts", workers=workers, resume=True, **extra))

    whole, parts = (torch.load(tmp_path / run / "last.pt", weights_only=True) for run in ("whole", "parts"))
    assert parts["state"]["step"] == whole["state"]["step"] == 4
    assert whole.keys() == parts.keys() and ("ema" in whole) == distilled
    for key in ("model", "ema") if distilled else ("model",):
        assert whole[key].keys() == parts[key].keys()
        for name, value in whole[key].items():
            assert torch.equal(parts[key][name], value), name
    assert len(whole["state"]["history"]) == 2
    assert without_wall_clock(parts["state"]["history"]) == without_wall_clock(whole["state"]["history"])


def test_a_run_of_steps_anneals_over_them_and_ends_validated(tmp_path) -> None:
    data = write_dataset(tmp_path)
    lrs: list[float] = []

    def recording(step: int, total: int, cfg: TrainConfig) -> float:
        lrs.append(lr_at(step, total, cfg))
        return lrs[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "lr_at", recording)
        train(tiny_config(data, tmp_path / "run", epochs=5, steps=3))  # 1.5 epochs of 2 steps
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["state"]
    assert state["step"] == 3 and [entry["step"] for entry in state["history"]] == [2, 3]
    cfg = tiny_config(data, tmp_path)
    assert lrs[::2] == lrs[1::2] == [lr_at(step, 3, cfg) for step in range(3)]  # one call per param group
    assert (tmp_path / "run" / "best.safetensors").exists()
    assert not (tmp_path / "run" / "stopped.safetensors").exists()


def test_a_resumed_run_loads_only_the_samples_it_trains_on(tmp_path, monkeypatch) -> None:
    data = write_dataset(tmp_path)
    train(tiny_config(data, tmp_path / "run", epochs=1, max_steps=1))
    stopped = load_model(tmp_path / "run" / "stopped.safetensors")  # a stopped run's model, usable at once
    assert stopped.info["step"] == 1 and not (tmp_path / "run" / "best.safetensors").exists()
    loaded: list[int] = []
    read = PoseDataset.__getitem__

    def counting(self: PoseDataset, index: int):
        if self.train:
            loaded.append(index)
        return read(self, index)

    monkeypatch.setattr(PoseDataset, "__getitem__", counting)
    train(tiny_config(data, tmp_path / "run", epochs=1, resume=True))
    assert not (tmp_path / "run" / "stopped.safetensors").exists()  # the finished run's is best.safetensors
    assert len(loaded) == 2  # the epoch's second step; its first was trained before the stop


def test_the_epoch_order_is_a_function_of_seed_and_epoch_alone() -> None:
    first, again = EpochOrder(range(10), seed=3), EpochOrder(range(10), seed=3)
    first.set_epoch(2)
    again.set_epoch(2, start=4)
    whole = list(first)
    assert sorted(index for index, _ in whole) == list(range(10))
    assert list(again) == whole[4:] and len(again) == 6
    again.set_epoch(3)
    assert [index for index, _ in again] != [index for index, _ in whole]
    shares = [EpochOrder(range(10), seed=3, rank=rank, world=2) for rank in (0, 1)]
    assert sorted(index for share in shares for index, _ in share) == list(range(10))


def test_a_seeded_sample_depends_on_its_key_alone(tmp_path) -> None:
    ann, images = write_dataset(tmp_path)
    data = SeededData(PoseDataset(load_people(ann, images), train=True))
    state = torch.get_rng_state()
    first = data[0, 7]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left alone
    torch.manual_seed(123)
    assert torch.equal(data[0, 7].image, first.image)
    assert not torch.equal(data[0, 8].image, first.image)


@pytest.mark.parametrize("flag, message", [(["--resume"], "no run to continue"), ([], "pass --resume")])
def test_train_resumes_only_when_asked_and_able(tmp_path, capsys, flag: list[str], message: str) -> None:
    ann, images = write_dataset(tmp_path)
    out = tmp_path / "run"
    if not flag:
        out.mkdir()
        (out / "last.pt").write_bytes(b"")
    assert main(["train", "--train", ann, images, "--stem", "patch", "--out", str(out), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "last.pt" in err and len(err.splitlines()) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_trains_through_the_release_of_the_stem(tmp_path, yolo_pose_weights) -> None:
    """Two CPU processes (gloo): the stem frozen in epoch 1 and released in epoch 2 (DDP wrapped again),
    EMGPose with its quality loss too; both processes end with the same weights."""
    data = write_dataset(tmp_path, people=10)  # 8 training people: 2 steps of 2 per process and epoch
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), __file__,
               str(tmp_path), *data, str(yolo_pose_weights)]  # fmt: skip
    run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for model in ("evitpose_t", "emgpose_t"):
        ranks = [torch.load(tmp_path / f"{model}-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
        assert torch.load(tmp_path / model / "last.pt", weights_only=True)["state"]["step"] == 4
        for name, value in ranks[0]["after"].items():
            assert torch.equal(ranks[1]["after"][name], value), f"{model} {name}"
        stem = [name for name in ranks[0]["before"] if name.startswith("patch_embed.body.")]
        assert stem and any(not torch.equal(ranks[0]["before"][n], ranks[0]["after"][n]) for n in stem)


def ddp_process(folder: str, ann: str, images: str, stem_weights: str) -> None:
    """One process of ``test_ddp_...``: train each tiny config, then save this process's parameters
    as built (``before``) and as trained (``after``) to ``<folder>/<model>-rank<rank>.pt``."""
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    build = training.build_model
    built: list[tuple[nn.Module, dict[str, torch.Tensor]]] = []

    def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    def keep(cfg: TrainConfig) -> nn.Module:
        model = build(cfg)
        built.append((model, parameters(model)))
        return model

    training.build_model = keep
    for name, hw in (("evitpose_t", (64, 48)), ("emgpose_t", (64, 64))):
        cfg = TrainConfig(model=name, stem="yolo", stem_weights=stem_weights, img_hw=hw, holdout=2,
                          train=[(ann, images)], out=f"{folder}/{name}", epochs=2, batch=2, workers=0,
                          warmup_steps=1, freeze_stem_epochs=1, quality_from_epoch=0)  # fmt: skip
        train(cfg)
        model, before = built[-1]
        torch.save({"before": before, "after": parameters(model)}, f"{folder}/{name}-rank{rank}.pt")


if __name__ == "__main__":
    ddp_process(*sys.argv[1:])


def test_a_training_window_of_0_8_is_the_inference_crop_and_bad_ranges_are_refused(tmp_path, capsys) -> None:
    ann, images = write_dataset(tmp_path)
    still = AugmentConfig(scale_range=(0.8, 0.8), rotation_prob=0.0, flip_prob=0.0, half_body_prob=0.0,
                          truncate_prob=0.0, aspect_jitter=1.0)  # fmt: skip
    people = load_people(ann, images)
    trained = PoseDataset(people, train=True, augment=still)[0]
    inferred = PoseDataset(people, train=False)[0]
    assert torch.allclose(trained.joints, inferred.joints, atol=1e-4)
    assert main(["train", "--train", ann, images, "--scale-range", "1.2", "0.8", "--stem", "patch"]) != 0
    assert "--scale-range" in capsys.readouterr().err


def test_with_ema_the_moving_average_is_validated_and_saved(tmp_path) -> None:
    data = write_dataset(tmp_path)
    best = train(tiny_config(data, tmp_path / "run", ema=0.5))
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    average = {k.removeprefix("module."): v for k, v in saved["ema"].items() if k != "n_averaged"}
    shipped = load_model(best).state_dict()
    name = "blocks.0.attn.qkv.weight"
    assert torch.allclose(shipped[name], average[name].half().float())
    assert not torch.allclose(average[name], saved["model"][name])  # an average, not the last weights
    # four steps at decay 0.5 after a copy of the first: w1/8 + w2/8 + w3/4 + w4/2 of the trained weights
    assert saved["ema"]["n_averaged"].item() == 4


def test_distillation_mixes_the_teachers_flip_test_into_the_label() -> None:
    target = torch.zeros(1, 2, 4, 3)
    target[0, 0, 1, 1], target[0, 0, 1, 2] = 2.0, 2.0  # joint 0's label, not normalised; joint 1 has none
    logits = torch.randn(1, 2, 4, 3)
    soft = torch.softmax(logits.flatten(2), dim=-1).view_as(logits)
    assert torch.allclose(mix_targets(target, logits, 1.0), soft)
    mixed = mix_targets(target, logits, 0.25)
    assert torch.allclose(mixed.flatten(2).sum(-1), torch.tensor([[1.0, 0.25]]))  # unlabelled: the teacher's
    assert torch.allclose(mixed[0, 0], 0.25 * soft[0, 0] + 0.75 * target[0, 0] / 4)


def test_a_teacher_of_another_crop_size_is_refused(tmp_path, capsys) -> None:
    ann, images = write_dataset(tmp_path)
    teacher = tmp_path / "teacher.safetensors"
    save_model(create_model("evitpose_t", img_hw=[64, 48]), teacher)
    with pytest.raises(WeightsError, match="64x48 crops, the student 128x96"):
        HeatmapTeacher(teacher, (96, 128), torch.device("cpu"))
    argv = ["train", "--stem", "patch", "--train", ann, images, "--holdout", "2", "--out", str(tmp_path)]
    assert main([*argv, "--distill", str(teacher)]) == 2
    assert "64x48 crops" in capsys.readouterr().err
    assert main([*argv, "--ema", "1.0"]) == 2
    assert "--ema" in capsys.readouterr().err
    assert main([*argv, "--distill", str(teacher), "--loss", "mse"]) == 2
    assert "--loss ce" in capsys.readouterr().err


def test_a_lateral_head_seeded_from_a_model_without_it_starts_where_that_model_is(
    tmp_path, yolo_pose_weights, capsys
) -> None:
    source = create_model("evitpose_t", stem="yolo_neck", img_hw=[64, 48]).eval()
    path = tmp_path / "plain.safetensors"
    save_model(source, path)
    cfg = TrainConfig(
        stem="yolo_neck", img_hw=(64, 48), init_from=str(path), stem_weights=str(yolo_pose_weights),
        head_lateral=True,
    )  # fmt: skip
    model = build_model(cfg).eval()
    assert model.config["head_lateral"] is True
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 0.5).heatmaps, load_model(path)(x, 0.5).heatmaps)
    ann, images = write_dataset(tmp_path)
    for args in (["--stem", "patch"], ["--model", "emgpose_t", "--stem", "yolo_neck"]):
        assert main(["train", "--train", ann, images, "--head-lateral", *args]) == 2
        assert "--head-lateral feeds a ViTPose or EViTPose head" in capsys.readouterr().err
