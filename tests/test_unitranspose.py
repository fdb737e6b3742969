"""UniTransPose: windows, the joint-token path, the sub-pixel decoder, crop sizes, exact FLOPs, the yolo warm
start, ONNX export, the windows overlay, and one training step from the command line."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from poseapp.cli import main
from poseapp.engine.train import TrainConfig, build_model
from poseapp.models import MODEL_NAMES, UniTransPose, create_model, load_model, save_model
from poseapp.models.heads import SubPixelDecoder
from poseapp.models.stem import PYRAMID_LEVELS, YoloStem
from poseapp.models.unitranspose import JAGLBlock, UniTransPoseSize
from poseapp.models.vit import explicit_attention
from poseapp.models.windows import WindowAttention, WindowLayout, merge, partition
from poseapp.models.zoo import prepare_for_inference
from poseapp.results import Frame, FrameResult, Person
from poseapp.runtime.build import UsageError, check_knob
from poseapp.runtime.flops import count_macs
from poseapp.runtime.pipeline import person_records
from poseapp.runtime.render import Overlays, draw_result, joint_heat
from poseapp.runtime.transforms import box_to_center_scale, crop_matrix, heatmap_size
from poseapp.skeleton import NUM_JOINTS
from tests.test_train import write_dataset

TINY = UniTransPoseSize(
    dims=(16, 32, 48, 64),
    depths=(1, 2, 2, 1),
    heads=(1, 2, 3, 4),
    local_depths=(1, 2, 3, 1),
    pyramid_depths=(0, 2, 2, 1),
    pyramid_local_depths=(0, 2, 3, 1),
    window=4,
)
J = 5
CROPS = [(256, 192), (192, 144)]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread) -> None:
    """Every test here on one torch thread."""


def run(model: torch.nn.Module, x: torch.Tensor):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("hw", CROPS)
@pytest.mark.parametrize("stem", ["patch", "yolo_pyramid"])
def test_heatmaps_at_stride_4_and_a_record_of_every_stage(hw: tuple[int, int], stem: str) -> None:
    """Every stage that runs blocks records its windows and its joint-token attention; on the pyramid stem
    the stride-4 level runs none."""
    model = create_model("unitranspose_t", img_hw=list(hw), stem=stem).eval()
    out = run(model, torch.rand(2, 3, *hw))
    w, h = heatmap_size(model.input_size)
    assert out.heatmaps.shape == (2, NUM_JOINTS, h, w) and out.grid == (h, w) == model.grid
    assert out.knob == 1.0 and model.knob.name == "none"
    depths = model.size.depths if stem == "patch" else model.size.pyramid_depths
    assert model.first == (0 if stem == "patch" else 1)
    grids = [(math.ceil(h / 2**s), math.ceil(w / 2**s)) for s in range(4)]
    assert [tuple(seen.shape[1:]) for seen in out.joint_attention] == grids[model.first :]
    assert len(out.window_boxes) == 4 - model.first
    for seen in out.joint_attention:
        torch.testing.assert_close(seen.sum(dim=(1, 2)), torch.ones(2))
    for boxes in out.window_boxes:  # each stage's windows tile the crop exactly once
        cover = torch.zeros(hw)
        for x0, y0, x1, y1 in boxes[1].tolist():
            cover[y0:y1, x0:x1] += 1
        assert cover.eq(1).all()
    blocks = [s[0] * s[1] + NUM_JOINTS for s, depth in zip(grids, depths, strict=True)
              for _ in range(depth)]  # fmt: skip
    assert out.tokens_per_block.tolist() == [blocks, blocks]


def test_a_batch_gives_what_each_crop_gives_alone() -> None:
    model = UniTransPose(TINY, J, img_hw=(96, 80)).eval()
    x = torch.rand(3, 3, 96, 80)
    together = run(model, x)
    for i in range(3):
        alone = run(model, x[i : i + 1])
        torch.testing.assert_close(together.heatmaps[i], alone.heatmaps[0], atol=1e-5, rtol=1e-4)
        for mine, theirs in zip(together.joint_attention, alone.joint_attention, strict=True):
            torch.testing.assert_close(mine[i], theirs[0], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    ("grid", "window", "shifted"),
    [((64, 48), 8, False), ((48, 36), 8, False), ((48, 36), 8, True), ((12, 9), 8, True), ((5, 3), 8, True)],
)
def test_windows_partition_and_merge_round_trip(grid, window: int, shifted: bool) -> None:
    layout = WindowLayout.fit(grid, window, shifted)
    assert max(layout.window) <= window and layout.windows == layout.counts[0] * layout.counts[1]
    assert all(p - g < w for p, g, w in zip(layout.padded, grid, layout.window, strict=True))
    x = torch.randn(2, *grid, 3)
    windows = partition(x, layout)
    assert windows.shape == (2 * layout.windows, layout.size, 3)
    assert torch.equal(merge(windows, layout), x)
    if not shifted:  # the first window is the grid's top-left corner, row-major
        wh, ww = layout.window
        assert torch.equal(windows[0], x[0, :wh, :ww].reshape(-1, 3))


def test_windows_fit_the_grid_with_least_padding() -> None:
    assert WindowLayout.fit((16, 12), 8).window == (8, 6)  # two windows of 6, not 8 and a padded one
    assert WindowLayout.fit((48, 36), 8).padded == (48, 40)
    assert WindowLayout.fit((8, 6), 8, shifted=True).shift == (0, 0)  # one window: nothing to shift
    assert WindowLayout.fit((16, 12), 8, shifted=True).shift == (4, 3)
    assert WindowLayout.fit((64, 48), 8).mask() is None


@pytest.mark.parametrize(("grid", "shifted"), [((12, 10), False), ((12, 10), True), ((16, 12), True)])
def test_the_mask_keeps_each_token_to_its_neighbours_and_off_the_padding(grid, shifted: bool) -> None:
    """Two real tokens of a window may attend each other exactly when they are within a window of each other
    on the grid (not brought together by the roll); nobody real attends padding; no row is empty."""
    layout = WindowLayout.fit(grid, 4, shifted)
    mask = layout.mask()
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    where = partition(torch.stack([rows, cols, torch.ones_like(rows)], dim=-1)[None], layout)
    real = where[..., 2].bool()
    near = ((where[:, :, None, :2] - where[:, None, :, :2]).abs() < torch.tensor(layout.window)).all(-1)
    pairs = real[:, :, None] & real[:, None, :]
    assert torch.equal(mask[pairs], near[pairs])
    assert not mask[real[:, :, None] & ~real[:, None, :]].any()
    assert mask.any(dim=-1).all()


def test_window_attention_equals_attention_inside_each_window_alone() -> None:
    for grid in ((12, 9), (12, 10)):  # windows of 4 x 3, then of 4 x 4 with a padded column
        layout = WindowLayout.fit(grid, 4)
        local = WindowAttention(16, 2, layout).eval()
        x = torch.randn(1, *grid, 16)
        with torch.no_grad():
            out = local(x)
            with explicit_attention():  # the masked plain-matmul path agrees with the fused one
                torch.testing.assert_close(local(x), out, atol=1e-5, rtol=1e-4)
            for x0, y0, x1, y1 in layout.boxes().tolist():
                inside = x[:, y0:y1, x0:x1]
                alone, _ = local.attn(inside.reshape(1, -1, 16))
                torch.testing.assert_close(
                    out[:, y0:y1, x0:x1], alone.reshape(inside.shape), atol=1e-5, rtol=1e-4
                )


def test_every_windows_patches_reach_the_joint_tokens_and_every_other_patch() -> None:
    """Window attention alone keeps each patch to its window; the JAGL block's joint tokens gather from every
    patch and hand every patch the context of the others."""
    layout = WindowLayout.fit((12, 10), 4)  # 3 x 3 windows of 4 x 4, two columns of padding
    block = JAGLBlock(16, 2, layout, 4.0)
    x = torch.randn(1, 12, 10, 16, requires_grad=True)
    joints = torch.randn(1, J, 16)
    out, joints_out, attention = block(x, joints)
    (grad,) = torch.autograd.grad(joints_out.sum(), x, retain_graph=True)
    assert grad.abs().sum(dim=-1).gt(0).all()  # every patch of every window reached the joints
    assert attention.shape == (1, 12 * 10) and attention.gt(0).all()
    far = (11, 9)  # bottom-right window; the top-left patch's output depends on it through the joints
    (grad,) = torch.autograd.grad(out[0, 0, 0].sum(), x, retain_graph=True)
    assert grad[0, far].abs().sum() > 0
    (grad,) = torch.autograd.grad(block.local(x)[0, 0, 0].sum(), x)
    assert grad[0, far].abs().sum() == 0 and grad[0, 0, 0].abs().sum() > 0


def test_the_decoder_brings_every_stage_to_stride_4_cutting_the_overhang() -> None:
    decoder = SubPixelDecoder((16, 32, 48, 64), J)
    sizes = [(48, 36), (24, 18), (12, 9), (6, 5)]  # 9 -> 5 rounds up: the shuffled map is 10 wide
    maps = [torch.randn(2, c, *hw, requires_grad=True) for c, hw in zip((16, 32, 48, 64), sizes, strict=True)]
    heatmaps = decoder(maps)
    assert heatmaps.shape == (2, J, 48, 36)
    grads = torch.autograd.grad(heatmaps.sum(), maps)
    assert all(g.abs().sum() > 0 for g in grads)


def counted(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    with torch.no_grad(), explicit_attention():
        counter = FlopCounterMode(display=False)
        with counter:
            out = model(x)
    return int(count_macs(model, out).sum()), counter.get_total_flops() // 2


@pytest.mark.parametrize("hw", CROPS)
@pytest.mark.parametrize("stem", ["patch", "yolo", "yolo_pyramid"])
def test_flops_are_exact(hw: tuple[int, int], stem: str) -> None:
    model = create_model("unitranspose_t", img_hw=list(hw), stem=stem).eval()
    mine, reference = counted(model, torch.rand(2, 3, *hw))
    print(f"unitranspose_t {stem} {hw}: {mine / 2e9:.3f} GFLOPs/crop")
    assert mine == reference


@pytest.mark.parametrize("stem", ["patch", "yolo", "yolo_pyramid"])
def test_the_local_only_ablation_has_no_joint_tokens_and_costs_what_jagl_costs(stem: str) -> None:
    x = torch.rand(2, 3, 256, 192)
    jagl = create_model("unitranspose_t", stem=stem).eval()
    local = create_model("unitranspose_t", stem=stem, joint_tokens=False).eval()
    assert local.joint_tokens is None and len(local.joint_proj) == 0
    assert all(block.joint is None for stage in local.stages for block in stage.blocks)
    out = run(local, x)
    assert out.heatmaps.shape == (2, NUM_JOINTS, 64, 48) and out.joint_attention == []
    mine, reference = counted(local, x)
    assert mine == reference
    ratio = mine / counted(jagl, x)[0]
    print(f"local-only / JAGL ({stem} stem): {ratio:.4f}")
    assert abs(ratio - 1) < 0.02


@pytest.mark.parametrize(("stem", "evit_stem"), [("patch", "patch"), ("yolo_pyramid", "yolo_neck")])
def test_unitranspose_t_costs_at_most_one_and_a_half_evitpose_t(stem: str, evit_stem: str) -> None:
    """Against the EViTPose-T it is compared with: the same kind of stem (on the pyramid, EViTPose-T as it
    ships, on the ``yolo_neck`` stem)."""
    x = torch.rand(1, 3, 256, 192)
    uni = create_model("unitranspose_t", stem=stem).eval()
    evit = create_model("evitpose_t", stem=evit_stem).eval()
    with torch.no_grad():
        ratio = count_macs(uni, run(uni, x)).item() / count_macs(evit, evit(x, 1.0)).item()
    print(f"UniTransPose-T / EViTPose-T at keep 1.0 ({stem}): {ratio:.2f}")
    assert ratio <= 1.5


def test_it_is_a_zoo_model_with_a_fixed_knob(tmp_path) -> None:
    assert {"unitranspose_t", "unitranspose_s"} <= set(MODEL_NAMES)
    model = create_model("unitranspose_t", img_hw=[96, 80])
    path = tmp_path / "u.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    assert isinstance(loaded, UniTransPose) and loaded.arch == "unitranspose_t" and loaded.img_hw == (96, 80)
    x = torch.rand(1, 3, 96, 80)
    torch.testing.assert_close(run(loaded, x).heatmaps, run(model.eval(), x).heatmaps, atol=2e-2, rtol=2e-2)
    check_knob(loaded, None)
    with pytest.raises(UsageError, match="has no knob"):
        check_knob(loaded, 0.5)
    with pytest.raises(ValueError, match="patch, yolo, yolo_pyramid"):
        create_model("unitranspose_t", stem="yolo_neck")
    with pytest.raises(ValueError, match="as wide as yolo11n-pose"):
        UniTransPose(TINY, J, stem="yolo")


def test_prepare_for_inference_folds_the_yolo_stem_without_changing_the_output() -> None:
    model = create_model("unitranspose_t", img_hw=[96, 80], stem="yolo").eval()
    x = torch.rand(2, 3, 96, 80)
    before = run(model, x).heatmaps
    after = run(prepare_for_inference(model), x).heatmaps
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.patch_embed.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_the_yolo_stem_starts_from_yolo11n_pose_and_feeds_stage_1(yolo_pose_weights) -> None:
    from ultralytics.nn.tasks import load_checkpoint

    cfg = TrainConfig(
        model="unitranspose_t", stem="yolo", stem_weights=str(yolo_pose_weights), img_hw=(64, 48)
    )
    model = build_model(cfg).eval()
    teacher = load_checkpoint(str(yolo_pose_weights), device="cpu")[0].float().eval()
    for name, value in model.patch_embed.body.state_dict().items():
        torch.testing.assert_close(value, teacher.state_dict()[f"model.{name}"], msg=name)
    seen: list[torch.Tensor] = []
    model.stages[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model.pos_embed.zero_()
        x = torch.rand(1, 3, 64, 48)
        model(x)
        expected = teacher.model[:3](x)  # yolo11n-pose's stride-4 features, 64 channels
    torch.testing.assert_close(seen[0].permute(0, 3, 1, 2), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("hw", [(256, 192), (96, 80)])
def test_the_pyramid_stem_gives_yolo11n_poses_own_maps(yolo_pose_weights, hw) -> None:
    """``yolo_pyramid``'s levels are the outputs of yolo11n-pose's layers 2, 16, 19 and 22 run by Ultralytics
    itself (the neck's skips routed by its own forward), cut to ceil(side / stride) past the padding."""
    from ultralytics.nn.tasks import load_checkpoint

    stem = YoloStem(None, "yolo_pyramid")
    stem.init_from_yolo(yolo_pose_weights)
    stem.eval()
    teacher = load_checkpoint(str(yolo_pose_weights), device="cpu")[0].float().eval()
    captured = {}
    for layer, _, _ in PYRAMID_LEVELS:
        teacher.model[layer].register_forward_hook(lambda _m, _i, out, k=layer: captured.update({k: out}))
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        teacher(torch.nn.functional.pad(x, (0, -hw[1] % 32, 0, -hw[0] % 32)))
        levels = stem.levels(x)
    for level, (layer, channels, stride) in zip(levels, PYRAMID_LEVELS, strict=True):
        assert level.shape == (2, channels, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))
        expected = captured[layer][..., : level.shape[-2], : level.shape[-1]]
        torch.testing.assert_close(level, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="no projection"):
        YoloStem(64, "yolo_pyramid")
    with pytest.raises(ValueError, match="UniTransPose"):
        create_model("evitpose_t", stem="yolo_pyramid")


def test_each_pyramid_stage_starts_from_its_neck_map_alone() -> None:
    """The strided convolutions between the pyramid's stages start at zero: at first each stage takes its
    level's 1x1 projection (plus the position embedding at the first), so training begins from the
    teacher's features; the gradient still reaches the convolutions."""
    model = create_model("unitranspose_t", img_hw=[96, 80], stem="yolo_pyramid").eval()
    x = torch.rand(2, 3, 96, 80)
    seen: dict[int, torch.Tensor] = {}
    for i, stage in enumerate(model.stages):
        stage.register_forward_pre_hook(lambda _m, args, i=i: seen.update({i: args[0]}))
    with torch.no_grad():
        model.pos_embed.zero_()
        model(x)
        levels = model.patch_embed.levels(x)
    for i, level in enumerate(levels):
        torch.testing.assert_close(seen[i], model.lateral[i](level).permute(0, 2, 3, 1))
    model(x).heatmaps.sum().backward()
    assert all(down.conv.weight.grad.abs().sum() > 0 for down in model.downsample.values())


@pytest.mark.parametrize("stem", ["patch", "yolo_pyramid"])
def test_the_onnx_export_equals_the_checkpoint(tmp_path, stem: str) -> None:
    hw = [96, 80]  # stage grids 24x20 .. 3x3: padded, shifted and single windows
    checkpoint, graph = tmp_path / "u.safetensors", tmp_path / "u.onnx"
    save_model(create_model("unitranspose_t", img_hw=hw, stem=stem), checkpoint)
    assert main(["export", "--weights", str(checkpoint), "--out", str(graph)]) == 0
    source, onnx = load_model(checkpoint), load_model(graph)
    assert onnx.knob.name == "none" and onnx.input_size == source.input_size and onnx.grid == source.grid
    x = torch.rand(3, 3, *hw)
    want, got = run(source, x), onnx(x)
    torch.testing.assert_close(got.heatmaps, want.heatmaps, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.tokens_per_block, want.tokens_per_block)
    for mine, theirs in zip(got.window_boxes, want.window_boxes, strict=True):
        assert torch.equal(mine, theirs)
    for mine, theirs in zip(got.joint_attention, want.joint_attention, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)
    assert torch.equal(count_macs(onnx, got), count_macs(source, want))


def posed_person(model: UniTransPose, box: tuple[float, float, float, float]) -> Person:
    """A person in ``box`` with the record of one model call on a random crop."""
    box = np.asarray(box)
    w, h = model.input_size
    center, size = box_to_center_scale(np.concatenate([box[:2], box[2:] - box[:2]]), w / h, padding=1.0)
    (record,) = person_records(model, run(model, torch.rand(1, 3, h, w)))
    keypoints = np.zeros((NUM_JOINTS, 2))
    return Person(1, box, keypoints, np.zeros(NUM_JOINTS), crop_matrix(center, size, out_size=(w, h)), record)


def test_the_windows_overlay_tints_where_the_joints_looked_inside_the_crop() -> None:
    model = UniTransPose(TINY, J, img_hw=(96, 80)).eval()
    person = posed_person(model, (100.0, 40.0, 180.0, 136.0))  # the crop's own aspect: 1 image px = 1 crop px
    stride_16 = person.record.joint_attention[2]  # a random model looks nearly everywhere: make it look here
    stride_16[:] = 0.0
    stride_16[1, 3] = 1.0  # crop pixels x 48-64, y 16-32
    image = np.full((200, 300, 3), 128, np.uint8)
    result = FrameResult(Frame(0, image, 0.0), [person], knob=1.0, pose_ms=1.0, gflops=0.1)
    plain = Overlays(skeleton=False, boxes=False, ids=False, hud=False)
    before = draw_result(image, result, plain)
    drawn = draw_result(image, result, replace(plain, windows=True))
    ys, xs = np.nonzero(np.abs(drawn.astype(int) - before.astype(int)).sum(axis=2))
    assert len(xs) and xs.min() >= 99 and xs.max() <= 181 and ys.min() >= 39 and ys.max() <= 137
    heat = joint_heat(person.record.grid, person.record.joint_attention)
    assert heat.shape == model.grid and 0 < heat.sum() <= len(model.stages)  # less what overhangs the crop
    red = drawn[..., 2].astype(int) - drawn[..., 0].astype(int)  # the tint reddens the grey
    assert red[40 + 20, 100 + 50] > red[40 + 20, 100 + 30] == red[40 + 60, 100 + 50] == 0
    result.people = [Person(2, person.box, person.keypoints, person.scores, person.crop_matrix)]  # no record
    assert np.array_equal(draw_result(image, result, replace(plain, windows=True)), before)


def test_joint_heat_places_each_stage_by_its_grid() -> None:
    """A record whose first stage is at stride 8 (the pyramid stem's) spreads each stage's attention over
    the stride-4 cells its patches cover, whichever stage the list starts with."""
    grid = (12, 9)  # stride-8 stage 6x5, stride-16 3x3, stride-32 2x2
    at8, at16, at32 = np.zeros((6, 5)), np.zeros((3, 3)), np.zeros((2, 2))
    at8[1, 2], at16[2, 0], at32[0, 1] = 1.0, 1.0, 1.0
    heat = joint_heat(grid, [at8, at16, at32])
    expected = np.zeros(grid)
    expected[2:4, 4:6] += 1 / 4
    expected[8:12, 0:4] += 1 / 16
    expected[0:8, 8:9] += 1 / 64
    np.testing.assert_allclose(heat, expected)


def test_main_train_runs_a_step(tmp_path, capsys) -> None:
    ann, images = write_dataset(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--model", "unitranspose_t", "--train", ann, images, "--stem", "patch", "--input-size",
            "64x48", "--holdout", "2", "--out", str(out), "--epochs", "1", "--batch", "2", "--workers", "0",
            "--max-steps", "1"]  # fmt: skip
    assert main(args) == 0
    assert torch.load(out / "last.pt", weights_only=True)["state"]["step"] == 1
    assert main([*args[:-2], "--stem", "yolo_neck"]) == 2
    assert "--stem yolo" in capsys.readouterr().err
    local = [str(tmp_path / "local") if a == str(out) else a for a in args] + ["--no-joint-tokens"]
    assert main(local) == 0
    assert load_model(tmp_path / "local" / "stopped.safetensors").joint_tokens is None
    evit = [*local[:2], "evitpose_t", *local[3:]]
    assert main(evit) == 2
    assert "--no-joint-tokens" in capsys.readouterr().err
    pyramid = ["yolo_pyramid" if a == "patch" else a for a in evit[:-1]]
    assert main(pyramid) == 2
    assert "--stem yolo_pyramid gives UniTransPose" in capsys.readouterr().err
