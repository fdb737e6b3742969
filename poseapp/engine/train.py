"""Training: one process on the CPU or a GPU, or many under ``torchrun`` (DDP), resumable exactly.

Every few minutes the full state goes to ``<out>/last.pt`` (plain tensors, loadable with
``weights_only=True``); after each validation the best model so far is written as half-precision
safetensors to ``<out>/best.safetensors`` with its metrics in the metadata; a run stopped before its last
epoch ends (``time_limit_minutes``, ``max_steps``) also writes its model then as
``<out>/stopped.safetensors``, usable at once (``eval --weights``, ``--init``). ``resume`` continues from
``last.pt``; a run stopped and resumed ends with the weights and history of one never stopped, because
every random choice is a pure function of the run's seed and where it falls: the data order of the
seed and the epoch (``EpochOrder``), a sample's augmentation of the seed, epoch and sample, a step's
keep ratio of the seed, process and step. No RNG's state has to be saved or restored, and none
depends on which DataLoader worker (if any) loads a sample.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import time
from collections.abc import Iterator, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from ..data import AugmentConfig, PoseDataset, Sample, load_people, split_people
from ..models import EMGPose, EViTPose, WeightsError, create_model, load_model, save_model
from ..models.stem import YoloStem
from ..models.vit import DEFAULT_IMG_HW, resample_pos_embed
from ..paths import default_detector
from ..runtime.inference import keypoints_from_logits
from ..runtime.precision import autocast, resolve_precision
from ..runtime.transforms import TRAIN_PADDING
from ..skeleton import SIGMAS
from .calibrate import calibrate_checkpoint
from .distill import HeatmapTeacher
from .evaluate import pck_on_people
from .losses import LOSSES, object_keypoint_similarity, quality_loss, quality_target


@dataclass
class TrainConfig:
    model: str = "evitpose_t"
    stem: str = "yolo"
    stem_weights: str = field(default_factory=lambda: str(default_detector()))
    init: str = ""
    """A PoseApp checkpoint of the same model to start from (a new schedule; the stem is not re-read)."""
    init_from: str = ""
    """A PoseApp checkpoint of another model: every tensor of matching name and shape (the transformer
    blocks and norms of a trained EViTPose, say) seeds this fresh model; the rest starts as usual."""
    img_hw: tuple[int, int] = DEFAULT_IMG_HW
    """Crop (h, w) of a fresh model, multiples of the patch (16); one from ``init`` keeps its own."""
    train: list[tuple[str, str]] = field(default_factory=list)
    """(annotation json, image folder) pairs."""
    holdout: int = 500
    """People at the end of the first training set kept aside for validation (PCK@0.2)."""
    out: str = "runs/evitpose_t"
    epochs: int = 10
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    loss: str = "ce"
    freeze_stem_epochs: int = 6
    freeze_stem_bn: bool = False
    """Keep the released stem's BatchNorm statistics (``YoloStem.freeze_body(keep_statistics=True)``)."""
    stem_lr_scale: float = 1.0
    """The pose-trained stem's learning rate as a share of ``lr`` once it is released (fine-tuning a
    pretrained backbone slower than the new layers on it, as detection and pose recipes do)."""
    min_keep: float = 0.25
    """EViTPose: each step samples a keep ratio in [min_keep, 1] (1.0 a quarter of the time)."""
    quality_weight: float = 0.03
    quality_from_epoch: int = 2
    quality_target: str = "oks"
    """EMGPose: what its quality predictor learns (``losses.quality_target``)."""
    joint_tokens: bool = True
    """UniTransPose: False builds the local-only ablation (no joint-token path)."""
    head_lateral: bool = False
    """A fresh ViTPose / EViTPose head that also reads the conv stem's stride-8 and stride-4 maps."""
    paste_prob: float = 0.0
    """Probability that a training crop gets another person pasted over it (``AugmentConfig.paste_prob``)."""
    scale_range: tuple[float, float] = AugmentConfig.scale_range
    """The training window's size as a multiple of the padded box (``AugmentConfig.scale_range``). Its
    middle sets how large people appear in training crops against the box-sized crops of inference (the
    train-test size discrepancy of Touvron et al., "Fixing the train-test resolution discrepancy", 2019)."""
    workers: int = 1
    precision: str = "auto"
    """``auto``: bf16 autocast where the device has native bf16 (CUDA, AVX512-BF16/AMX CPUs), else fp32."""
    checkpoint_minutes: float = 5.0
    time_limit_minutes: float = 0.0
    """Stop cleanly (checkpoint written) after this long; 0 = no limit."""
    max_steps: int = 0
    """Stop after this many optimiser steps in total; 0 = no limit (for smoke tests)."""
    steps: int = 0
    """Train this many optimiser steps instead of ``epochs`` whole epochs: the schedule anneals over them
    and the run ends with a validation after the last (a short run of a given length; 0 = whole epochs)."""
    distill: str = ""
    """A frozen PoseApp checkpoint with the student's crop size whose flip-test heatmaps soften the
    targets (``engine.distill``); empty: the labels alone."""
    distill_share: float = 0.5
    """The teacher's share of each joint's target distribution, the label's Gaussian the rest."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights, updated after every step, which is then what
    is validated and saved (Polyak and Juditsky 1992; as timm's ``ModelEmaV2``); 0: the weights as trained."""
    seed: int = 0
    resume: bool = False
    """Continue the run in ``out`` from its ``last.pt``; without it an existing ``last.pt`` is refused."""


class ResumeError(ValueError):
    """``resume`` without a ``last.pt`` to continue, or an existing one without ``resume``."""


def last_checkpoint(cfg: TrainConfig) -> Path:
    """The run's ``<out>/last.pt``, once it is clear that it exists exactly when ``cfg.resume`` is set.

    ResumeError when ``cfg.resume`` is set and there is no such file, or when it is not set and the file
    exists: a run is never continued, nor its state overwritten, without being asked to.
    """
    last = Path(cfg.out) / "last.pt"
    if cfg.resume and not last.is_file():
        raise ResumeError(f"--resume: {last} does not exist, so there is no run to continue")
    if not cfg.resume and last.exists():
        raise ResumeError(f"{last} exists: pass --resume to continue that run, or choose another --out")
    return last


def _seed(*parts: int) -> int:
    """A 64-bit seed that depends on ``parts`` (non-negative ints) alone, well mixed by numpy's
    SeedSequence, so that neighbouring parts (epoch 3 and 4, sample 7 and 8) give unrelated streams."""
    return int(np.random.SeedSequence(parts).generate_state(1, np.uint64)[0])


class EpochOrder(Sampler[tuple[int, int]]):
    """This process's samples of one epoch as (index, seed) pairs, from the ``start``-th on.

    The order is ``DistributedSampler``'s shuffle (a pure function of the seed and the epoch, shared out
    among ``world`` processes), a sample's seed a pure function of (seed, epoch, index) that ``SeededData``
    draws its augmentation from. So an epoch replays exactly, whichever process or DataLoader worker
    loads a sample, and a resumed epoch starts at its first untrained sample without loading the others.
    """

    def __init__(self, data: Sized, seed: int, rank: int = 0, world: int = 1) -> None:
        self.shuffle = DistributedSampler(data, num_replicas=world, rank=rank, seed=seed)
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Serve ``epoch``, skipping its first ``start`` samples (those trained on before a resume)."""
        self.shuffle.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, len(self.shuffle) - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in itertools.islice(self.shuffle, self.start, None):
            yield index, _seed(self.seed, self.epoch, index)


class SeededData(Dataset[Sample]):
    """``data[index]`` for an ``(index, seed)`` key (from ``EpochOrder``), with torch's CPU generator
    seeded by ``seed`` while it loads: the augmentation, which ``poseapp.data.sample_rng`` draws from that
    generator, is then fixed by the key. The caller's generator is left as it was."""

    def __init__(self, data: Dataset[Sample]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return self.data[index]


def _distributed() -> tuple[int, int]:
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _data_parallel(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel, which records at construction which parameters need
    gradients: wrap again whenever that set changes (the stem released). EMGPose may leave some
    parameters unused in a step, so only it pays for the search for unused ones."""
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=isinstance(model, EMGPose))


def _device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def build_model(cfg: TrainConfig) -> nn.Module:
    """A fresh model: from ``cfg.init`` when given, else random with the stem read from the teacher,
    then seeded from ``cfg.init_from``."""
    for path in (cfg.init, cfg.init_from):
        if path and Path(path).suffix.lower() == ".onnx":
            raise WeightsError(f"{path} is an ONNX export, which cannot be trained: use its checkpoint")
    if cfg.init:
        model = load_model(cfg.init, expect=cfg.model)
        if model.arch != cfg.model:
            raise WeightsError(f"{cfg.init} holds a {model.arch} model, not {cfg.model}")
        return model.train()
    config = {"stem": cfg.stem} if cfg.stem != "patch" else {}
    if not cfg.joint_tokens:
        config["joint_tokens"] = False
    if cfg.head_lateral:
        config["head_lateral"] = True
    if tuple(cfg.img_hw) != DEFAULT_IMG_HW:
        config["img_hw"] = list(cfg.img_hw)
    model = create_model(cfg.model, **config)
    stem = model.patch_embed if isinstance(model.patch_embed, YoloStem) else None
    if stem is not None:
        stem.init_from_yolo(cfg.stem_weights)
    if cfg.init_from:
        source = load_model(cfg.init_from)
        skip: tuple[str, ...] = ()
        if stem is not None and getattr(source.patch_embed, "kind", None) != stem.kind:
            skip = (
                "patch_embed.",
            )  # another slice of yolo11n-pose: keep the teacher's layers, a fresh projection
        copied = seed_from(model, source, skip)
        print(f"seeded {len(copied)} of {len(model.state_dict())} tensors from {cfg.init_from}", flush=True)
    return model


def seed_from(model: nn.Module, source: nn.Module, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy into ``model`` every tensor of ``source`` with the same name and shape, but those whose names
    start with one of ``skip``; returns their names. A position embedding of another grid (the source
    trained at another crop size) is resampled to this one. WeightsError when nothing matches (the two
    models share no part)."""
    target = model.state_dict()
    weights = source.state_dict()
    pos = weights.get("pos_embed")
    if pos is not None and "pos_embed" in target and pos.shape != target["pos_embed"].shape:
        weights["pos_embed"] = resample_pos_embed(pos, source.grid, model.grid)
    shared = {
        k: v
        for k, v in weights.items()
        if k in target and target[k].shape == v.shape and not (skip and k.startswith(skip))
    }
    if not shared:
        source_name, model_name = (getattr(m, "arch", type(m).__name__) for m in (source, model))
        raise WeightsError(f"{source_name} shares no tensor with {model_name}")
    model.load_state_dict(shared, strict=False)
    return sorted(shared)


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: weight decay on matrices and kernels only, and the pose-trained stem's
    body at ``cfg.stem_lr_scale`` of the learning rate (each group's ``lr_scale``); empty groups left out."""
    stem = model.patch_embed if isinstance(getattr(model, "patch_embed", None), YoloStem) else None
    in_stem = {id(p) for p in stem.body.parameters()} if stem is not None else set()
    groups = []
    for scale, from_stem in ((1.0, False), (cfg.stem_lr_scale, True)):
        params = [p for p in model.parameters() if (id(p) in in_stem) == from_stem]
        for decay, chosen in (
            (cfg.weight_decay, [p for p in params if p.ndim > 1]),
            (0.0, [p for p in params if p.ndim <= 1]),
        ):
            if chosen:
                groups.append({"params": chosen, "weight_decay": decay, "lr_scale": scale})
    return groups


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def sample_knob(model: nn.Module, cfg: TrainConfig, rng: random.Random) -> float | None:
    if isinstance(model, EViTPose):
        return 1.0 if rng.random() < 0.25 else rng.uniform(cfg.min_keep, 1.0)
    if isinstance(model, EMGPose):
        return 1.0  # the paper trains with eta = 1: every sample runs both stages
    return None


def training_loss(
    model: nn.Module,
    batch,
    knob: float | None,
    cfg: TrainConfig,
    epoch: int,
    teacher: HeatmapTeacher | None = None,
) -> torch.Tensor:
    target = batch.target
    if teacher is not None:
        target = teacher.soft_targets(batch.image, target, cfg.distill_share)
    out = model(batch.image, knob)
    loss_fn = LOSSES[cfg.loss]
    loss = loss_fn(out.heatmaps, target, batch.weight)
    if out.coarse_heatmaps is not None:
        loss = loss + loss_fn(out.coarse_heatmaps, target, batch.weight)
        if epoch >= cfg.quality_from_epoch:
            with torch.no_grad():
                truth, visible = batch.joints[..., :2], batch.weight
                h, w = batch.image.shape[-2:]  # the person fills the crop bar its padding
                area = torch.full_like(visible[:, 0], w * h / TRAIN_PADDING**2)
                sigmas = torch.as_tensor(SIGMAS).float()
                coarse_oks, fine_oks = (
                    object_keypoint_similarity(keypoints_from_logits(maps)[0], truth, visible, area, sigmas)
                    for maps in (out.coarse_heatmaps, out.heatmaps)
                )
                target = quality_target(cfg.quality_target, coarse_oks, fine_oks)
            loss = loss + cfg.quality_weight * quality_loss(out.quality, target)
    return loss


def _to(batch, device: torch.device):
    return type(batch)(
        *(v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for v in batch)
    )


def train(cfg: TrainConfig) -> Path:
    """Run a training run, or continue the one in ``cfg.out`` (``cfg.resume``) as if it had never
    stopped; returns the path of the best checkpoint. ResumeError (before anything else is done) when
    ``cfg.resume`` and ``<out>/last.pt`` disagree (``last_checkpoint``)."""
    last = last_checkpoint(cfg)
    rank, world = _distributed()
    device = _device(rank)
    torch.manual_seed(cfg.seed + rank)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    model = build_model(cfg).to(device)
    first, *rest = cfg.train
    people, holdout = split_people(load_people(*first), cfg.holdout)
    augment = AugmentConfig(paste_prob=cfg.paste_prob, scale_range=tuple(cfg.scale_range))
    train_sets = [
        PoseDataset(group, train=True, augment=augment, input_size=model.input_size)
        for group in [people] + [load_people(*pair) for pair in rest]
    ]
    data = SeededData(ConcatDataset(train_sets))
    order = EpochOrder(data, cfg.seed, rank, world)
    loader = DataLoader(
        data,
        batch_size=cfg.batch,
        sampler=order,
        num_workers=cfg.workers,
        drop_last=True,
        persistent_workers=cfg.workers > 0,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader)  # the order starts at 0 here: a whole epoch
    val_set = PoseDataset(holdout, train=False, input_size=model.input_size)

    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr)
    teacher = HeatmapTeacher(cfg.distill, model.input_size, device) if cfg.distill else None
    # the weights' moving average, BatchNorm statistics included; what is validated and saved when on
    ema = None
    if cfg.ema:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    kept = ema.module if ema is not None else model
    # loss: the running loss of the epoch under way, saved with the rest so that its history entry is
    # the same whether or not the epoch was interrupted
    state = {"epoch": 0, "step": 0, "best": -1.0, "loss": 0.0, "history": []}
    if cfg.resume:
        saved = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if ema is not None:
            if "ema" not in saved:
                raise ResumeError(f"{last} was trained without --ema, so it cannot be continued with one")
            ema.load_state_dict(saved["ema"])
        state.update(saved["state"])
        if rank == 0:
            print(f"resumed from {last} at epoch {state['epoch']} step {state['step']}", flush=True)
    stem = model.patch_embed if isinstance(model.patch_embed, YoloStem) else None
    ddp, wrapped_for = model, None  # under DDP: the wrapper, and which parameters were trainable at wrapping
    epochs = math.ceil(cfg.steps / steps_per_epoch) if cfg.steps else cfg.epochs
    total_steps = cfg.steps or epochs * steps_per_epoch
    precision = resolve_precision(cfg.precision, device)
    if rank == 0:
        print(f"training on {device} in {precision}", flush=True)

    started = time.monotonic()
    saved_at = started

    def save_state() -> None:
        if rank == 0:
            blob = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}
            if ema is not None:
                blob["ema"] = ema.state_dict()
            torch.save(blob, out_dir / "last.tmp")
            os.replace(out_dir / "last.tmp", last)

    def out_of_time() -> bool:
        over_time = cfg.time_limit_minutes and time.monotonic() - started > 60 * cfg.time_limit_minutes
        return bool(over_time) or bool(cfg.max_steps and state["step"] >= cfg.max_steps)

    def finished() -> bool:
        return state["epoch"] >= epochs or state["step"] >= total_steps

    while not finished() and not out_of_time():
        epoch = state["epoch"]
        done = max(0, state["step"] - epoch * steps_per_epoch)  # steps of this epoch trained before a resume
        order.set_epoch(epoch, start=done * cfg.batch)
        if stem is not None:
            stem.freeze_body(epoch < cfg.freeze_stem_epochs, keep_statistics=cfg.freeze_stem_bn)
        trainable = [p.requires_grad for p in model.parameters()]
        if world > 1 and trainable != wrapped_for:
            ddp, wrapped_for = _data_parallel(model), trainable
        ddp.train()
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{epochs}", initial=done, total=steps_per_epoch,
            disable=rank != 0, mininterval=10,
        )  # fmt: skip
        for batch in bar:
            batch = _to(batch, device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state["step"], total_steps, cfg) * group["lr_scale"]
            knob = sample_knob(model, cfg, random.Random(_seed(cfg.seed, rank, state["step"])))
            with autocast(precision, device):
                loss = training_loss(ddp, batch, knob, cfg, epoch, teacher)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            state["step"] += 1
            state["loss"] = 0.98 * state["loss"] + 0.02 * loss.item() if state["loss"] else loss.item()
            bar.set_postfix(loss=f"{state['loss']:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            if time.monotonic() - saved_at > 60 * cfg.checkpoint_minutes:
                save_state()
                saved_at = time.monotonic()
            if state["step"] >= total_steps or out_of_time():  # a run of --steps ends mid-epoch
                break
        if state["step"] >= total_steps or state["step"] == (epoch + 1) * steps_per_epoch:
            state["epoch"] += 1
            if rank == 0:
                kept.eval()
                knob = kept.knob.high if isinstance(kept, EMGPose) else kept.knob.default
                score = pck_on_people(kept, val_set, knob=knob, device=device)
                entry = {
                    "epoch": state["epoch"],
                    "step": state["step"],
                    "loss": state["loss"],
                    "val_pck@0.2": score,
                    "knob": knob,
                    "minutes": (time.monotonic() - started) / 60,
                }
                state["history"].append(entry)
                print(json.dumps(entry), flush=True)
                if score > state["best"]:
                    state["best"] = score
                    save_model(kept, out_dir / "best.safetensors", config=asdict(cfg), **entry)
            state["loss"] = 0.0
        save_state()
        saved_at = time.monotonic()
    if rank == 0 and not finished():  # stopped by the clock or --max-steps: keep what it learned
        save_model(kept, out_dir / "stopped.safetensors", config=asdict(cfg), step=state["step"])
    elif rank == 0:  # finished: an earlier stop's model is stale
        (out_dir / "stopped.safetensors").unlink(missing_ok=True)
    if rank == 0 and isinstance(model, EMGPose) and (out_dir / "best.safetensors").exists():
        chosen, curve = calibrate_checkpoint(out_dir / "best.safetensors", val_set, device)
        print(
            f"default eta {chosen.eta:g}: hold-out mean OKS {chosen.oks:.3f} (eta 1: {curve[-1].oks:.3f}), "
            f"PCK@0.2 {chosen.pck:.3f}, fine stage for {chosen.fine_share:.0%}, {chosen.gflops:.2f} GFLOPs",
            flush=True,
        )
    if world > 1:
        dist.barrier()
    return out_dir / "best.safetensors"
