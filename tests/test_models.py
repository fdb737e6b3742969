"""Model behaviour: records, pruning, re-patchify, merging, batch consistency, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from poseapp.models import EMGPose, EViTPose, ViTPose, WeightsError, create_model, load_model, save_model
from poseapp.models.emgpose import cover_weights, unmerge
from poseapp.models.stem import FINER_OUTPUTS, YoloStem
from poseapp.models.vit import Attention, ViTSize, explicit_attention
from poseapp.models.wbas import wbas_merge
from poseapp.runtime.flops import count_macs

TINY = ViTSize(dim=48, depth=12, heads=3)
J = 5


def capture_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """Attention rows each block returned, in call order."""
    seen: list[torch.Tensor] = []
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _i, out: seen.append(out[1]))
    return seen


def test_explicit_attention_matches_fused() -> None:
    attn = Attention(48, 3).eval()
    x = torch.randn(2, 30, 48)
    fused, none = attn(x)
    with explicit_attention():
        explicit, _ = attn(x)
    rows_out, rows = attn(x, rows=4)
    assert none is None
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, rows_out, atol=1e-5, rtol=1e-5)
    assert rows.shape == (2, 3, 4, 30)
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, 3, 4))


def test_training_on_the_cpu_takes_the_matmuls_inference_the_fused_kernel(monkeypatch) -> None:
    attn = Attention(48, 3)
    x = torch.randn(2, 30, 48)
    with torch.no_grad():
        reference, _ = attn(x)
    fused = F.scaled_dot_product_attention
    calls: list[bool] = []

    def counting(*args, **kwargs):
        calls.append(True)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    trained, _ = attn(x)  # under autograd: the plain matmuls, with the same values
    trained.sum().backward()
    assert not calls and attn.qkv.weight.grad is not None
    torch.testing.assert_close(trained.detach(), reference, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        attn(x)
    assert calls == [True]


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.7])
def test_evitpose_keeps_top_patches_by_joint_attention(keep: float) -> None:
    model = EViTPose(TINY, J).eval()
    seen = capture_weights(model)
    x = torch.randn(3, 3, 256, 192)
    with torch.no_grad():
        out = model(x, keep)
    n = 16 * 12
    expected_counts, current = [], n
    for layer in range(1, 13):
        expected_counts.append(J + current)
        if layer in model.prune_layers:
            current = math.ceil(current * keep - 1e-9)
    assert out.tokens_per_block[0].tolist() == expected_counts
    assert len(out.kept_patches) == 3

    previous = torch.arange(n).expand(3, n)
    for layer, kept in zip(model.prune_layers, out.kept_patches, strict=True):
        weights = seen[layer - 1]
        # importance = attention from the joint tokens to each patch, mean over heads and joints
        importance = weights[:, :, :J, J:].mean(dim=(1, 2))
        k = math.ceil(previous.shape[1] * keep - 1e-9)
        top = importance.topk(k, dim=1).indices.sort(dim=1).values
        assert torch.equal(kept, previous.gather(1, top))
        for row in range(3):
            assert set(kept[row].tolist()) <= set(previous[row].tolist())
            assert len(set(kept[row].tolist())) == k
        previous = kept


def reference_evitpose(model: EViTPose, image: torch.Tensor, keep: float) -> torch.Tensor:
    """One sample at a time, tokens dropped with Python lists: the batched gather must agree."""
    patches = (model.patch_embed(image[None]) + model.pos_embed)[0]
    tokens = torch.cat([model.joint_tokens[0], patches])
    state, alive = patches.clone(), list(range(len(patches)))  # each patch's last features (grid head)
    for layer, block in enumerate(model.blocks, start=1):
        tokens, weights = block(tokens[None], rows=J)
        tokens = tokens[0]
        if keep < 1 and layer in model.prune_layers:
            for position, patch in enumerate(alive):
                state[patch] = tokens[J + position]
            score = weights[0, :, :, J:].mean(dim=(0, 1)).tolist()
            k = math.ceil(len(score) * keep - 1e-9)
            best = sorted(sorted(range(len(score)), key=lambda i: -score[i])[:k])
            tokens = torch.cat([tokens[:J], tokens[J:][best]])
            alive = [alive[i] for i in best]
    if model.head_type == "tokens":
        return model.head(model.norm(tokens[:J])[None])[0]
    for position, patch in enumerate(alive):
        state[patch] = tokens[J + position]
    grid = model.norm(state).T.reshape(1, -1, *model.grid)
    return model.head(grid)[0]


@pytest.mark.parametrize("head", ["grid", "tokens"])
def test_evitpose_batched_pruning_matches_reference(head: str) -> None:
    model = EViTPose(TINY, J, head=head).eval()
    x = torch.randn(3, 3, 256, 192)
    with torch.no_grad():
        for keep in (1.0, 0.5):
            out = model(x, keep)
            for i in range(3):
                expected = reference_evitpose(model, x[i], keep)
                torch.testing.assert_close(out.heatmaps[i], expected, atol=1e-4, rtol=1e-4)


def test_vitpose_shapes_and_fixed_knob() -> None:
    model = ViTPose(TINY, J).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 256, 192), 0.3)
    assert out.heatmaps.shape == (2, J, 64, 48)
    assert out.knob == 1.0 and out.tokens_per_block.tolist() == [[192] * 12] * 2


@pytest.mark.parametrize(
    ("name", "hw"), [("vitpose_t", (192, 144)), ("evitpose_t", (192, 144)), ("emgpose_t", (192, 128))]
)
def test_models_take_the_crop_they_were_built_for(name: str, hw: tuple[int, int]) -> None:
    small = create_model(name, img_hw=list(hw)).eval()  # as a checkpoint's JSON config gives it
    full = create_model(name).eval()
    assert small.input_size == hw[::-1] and full.input_size == (192, 256)
    with torch.no_grad():
        out_small = small(torch.rand(2, 3, *hw), 1.0)
        out_full = full(torch.rand(2, 3, 256, 192), 1.0)
    assert out_small.heatmaps.shape[-2:] == (hw[0] // 4, hw[1] // 4)
    assert count_macs(small, out_small).float().mean() < 0.7 * count_macs(full, out_full).float().mean()


def test_emgpose_refuses_a_crop_its_coarse_stage_cannot_halve() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        create_model("emgpose_t", img_hw=(192, 144))


def emg_tiny() -> EMGPose:
    return EMGPose(TINY, J).eval()


def test_emgpose_eta_decides_the_fine_stage() -> None:
    model = emg_tiny()
    x = torch.randn(4, 3, 256, 192)
    with torch.no_grad():
        never, always = model(x, 0.0), model(x, 1.0)
    assert not never.fine_stage.any() and always.fine_stage.all()
    assert never.tokens_per_block[:, 12:].eq(0).all()
    assert never.granularity.eq(0).all()
    torch.testing.assert_close(never.heatmaps, never.coarse_heatmaps)
    assert always.tokens_per_block[0, :12].eq(J + 48 + 1).all()
    assert always.tokens_per_block[0, 12] == J + model.fine_tokens()


def test_emgpose_granularity_follows_gkis() -> None:
    model = emg_tiny()
    seen = capture_weights(model)
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        out = model(x, 1.0)
    gkis = torch.zeros(2, 48)
    for layer in range(model.ema_start, 13):
        gkis = 0.98 * gkis + 0.02 * seen[layer - 1][:, :, :J, J : J + 48].mean(dim=(1, 2))
    level = out.granularity.flatten(1)
    high, mid, low = model.split_counts()
    assert (high, mid, low) == (4, 25, 19)
    order = gkis.argsort(dim=1, descending=True)
    for row in range(2):
        assert set(order[row, :high].tolist()) == set(level[row].eq(3).nonzero().flatten().tolist())
        assert set(order[row, high + mid :].tolist()) == set(level[row].eq(1).nonzero().flatten().tolist())


def embedded_fine_tokens(model: EMGPose, x: torch.Tensor) -> tuple:
    """The run record and the fine stage's image tokens as embedded, with the position and reused-feature
    terms zeroed (so the tokens are the embedding alone)."""
    with torch.no_grad():
        model.pos_fine.zero_()
        model.reuse.fc2.weight.zero_()
        model.reuse.fc2.bias.zero_()
    inputs: list[torch.Tensor] = []
    hook = model.blocks[0].register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    with torch.no_grad():
        out = model(x, 1.0)
    hook.remove()
    return out, inputs[1][:, J:]


def test_emgpose_fine_tokens_tile_the_crop_and_embed_their_own_pixels() -> None:
    model = emg_tiny()
    x = torch.randn(2, 3, 256, 192)
    out, fine_input = embedded_fine_tokens(model, x)
    boxes = out.token_boxes
    area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).sum(dim=1)
    torch.testing.assert_close(area, torch.full((2,), 256.0 * 192.0))
    cover = torch.zeros(2, 256, 192)
    for row in range(2):
        for x0, y0, x1, y1 in boxes[row].round().long().tolist():
            cover[row, y0:y1, x0:x1] += 1
    assert cover.eq(1).all()
    shares = cover_weights(boxes, 16, 12, 16.0)  # what the grid head lays onto each patch cell
    torch.testing.assert_close(shares.sum(dim=-1), torch.ones(2, 16 * 12))

    scales = {32.0: 0.5, 16.0: 1.0, 32.0 / 3: 1.5}
    for row in range(2):
        for t in (0, 40, 100, fine_input.shape[1] - 1):
            x0, y0, x1, y1 = boxes[row, t].tolist()
            s = scales[min(scales, key=lambda side: abs(side - (x1 - x0)))]
            image = (
                F.interpolate(x[row : row + 1], scale_factor=s, mode="bilinear")
                if s == 1.5
                else x[row : row + 1]
            )
            image = F.avg_pool2d(image, 2) if s == 0.5 else image
            c, r = round(x0 * s), round(y0 * s)
            expected = model.patch_embed(image[:, :, r : r + 16, c : c + 16])[0, 0]
            torch.testing.assert_close(fine_input[row, t], expected, atol=1e-4, rtol=1e-4)


def test_emgpose_mixed_batch_equals_single_runs() -> None:
    model = emg_tiny()
    x = torch.randn(4, 3, 256, 192)
    with torch.no_grad():
        quality = model(x, 0.0).quality
        eta = quality.median().item()
        out = model(x, eta)
        assert 0 < out.fine_stage.sum() < 4
        for i in range(4):
            alone = model(x[i : i + 1], eta)
            assert alone.fine_stage.item() == out.fine_stage[i].item()
            torch.testing.assert_close(out.heatmaps[i], alone.heatmaps[0], atol=1e-4, rtol=1e-4)
            assert torch.equal(out.tokens_per_block[i], alone.tokens_per_block[0])
            if alone.fine_stage.item():
                assert torch.equal(out.granularity[i], alone.granularity[0])
                for group, single in zip(out.merge_groups, alone.merge_groups, strict=True):
                    assert torch.equal(group[i], single[0])


def reference_forward(model: EMGPose, x: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """EMGPose's forward (grid head) written plainly: the coarse stage and its heatmaps for every crop, then
    the fine stage one crop at a time for those whose quality is at most ``eta``, its tokens cut and
    embedded cell by cell and its grid laid from the token boxes by ``cover_weights``. -> heatmaps, the
    coarse heatmaps."""
    j, (rows, cols) = model.num_joints, model.grid
    n = rows * cols
    embedded = model.patch_embed(F.avg_pool2d(x, 2))
    keypoints = model.keypoint_tokens.expand(len(x), -1, -1)
    tokens = torch.cat(
        [keypoints, embedded + model.pos_coarse, model.quality_token.expand(len(x), -1, -1)], 1
    )
    gkis = torch.zeros(len(x), n)
    for layer, block in enumerate(model.blocks, start=1):
        tokens, weights = block(tokens, rows=j if layer >= model.ema_start else 0)
        if layer >= model.ema_start:
            gkis = model.ema_beta * gkis + (1 - model.ema_beta) * weights[..., j : j + n].mean(dim=(1, 2))
    tokens = model.norm(tokens)
    coarse = model._coarse_heatmaps(tokens, j)
    heatmaps = coarse.clone()
    high, mid, _ = model.split_counts()
    for i in (model.quality(tokens[:, -1]).squeeze(-1).sigmoid() <= eta).nonzero().flatten().tolist():
        order = gkis[i].argsort(descending=True)
        cells = {3: order[:high], 2: order[high : high + mid], 1: order[high + mid :]}
        images = {3: F.interpolate(x[i : i + 1], scale_factor=1.5, mode="bilinear"), 2: x[i : i + 1]}
        if isinstance(model.patch_embed, YoloStem):  # one stem pass over the full crop
            stride16, stride8, _ = model.patch_embed.pyramid(x[i : i + 1])
            full = model.patch_embed.proj(stride16)
            thirds = (3 * rows, 3 * cols)
            stem_grids = {
                2: full,
                3: F.interpolate(full, thirds, mode="bilinear")
                + model.fine_proj(F.interpolate(stride8, thirds, mode="bilinear")),
            }
        reuse = model.reuse(tokens[i, j : j + n]).T.reshape(1, -1, rows, cols)
        pieces, boxes = [], []
        for s in (3, 2, 1):
            index = getattr(model, f"children{s}")[cells[s]].flatten()
            size = (rows * s, cols * s)
            grid = F.interpolate(model.pos_fine, size, mode="bilinear") + F.interpolate(
                reuse, size, mode="bilinear"
            )
            if s == 1:
                own = embedded[i, index]
            elif isinstance(model.patch_embed, YoloStem):
                own = stem_grids[s].flatten(2)[0, :, index].T
            else:
                own = model._embed_patches(images[s], index[None])[0]
            pieces.append(own + grid.flatten(2)[0, :, index].T)
            boxes.append(getattr(model, f"boxes{s}")[index])
        fine = torch.cat([model.keypoint_tokens[0], *pieces])[None]
        before, after, groups = [], [], []
        for layer, block in enumerate(model.blocks, start=1):
            merge = layer in model.merge_layers
            fine, weights = block(fine, rows=j if merge else 0)
            if merge:
                merged, dest = wbas_merge(
                    fine[:, j:], weights[..., j:].mean(dim=(1, 2)), model.r_head, model.r_last
                )
                before.append(fine[:, j:])
                after.append(merged)
                groups.append(dest)
                fine = torch.cat([fine[:, :j], merged], dim=1)
        cover = cover_weights(torch.cat(boxes)[None], 2 * rows, 2 * cols, model.patch)
        grid = cover @ model.norm(unmerge(fine[:, j:], before, after, groups))
        heatmaps[i] = model.head(grid.transpose(1, 2).reshape(1, -1, 2 * rows, 2 * cols))[0]
    return heatmaps, coarse


@pytest.mark.parametrize("stem", ["patch", "yolo"])
def test_emgpose_forward_equals_the_plain_reference(stem: str) -> None:
    """The forward draws the coarse heatmaps only of the crops that stop at the coarse stage, sends the whole
    batch on without gathers when every crop goes on, and lays the fine grid from precomputed cover tables;
    none of that changes a heatmap."""
    torch.manual_seed(0)
    model = EMGPose(TINY, J, stem=stem).eval()
    with torch.no_grad():  # a quality predictor that spreads Q over (0, 1) across crops
        model.quality.fc2.weight.normal_(0, 5.0)
    x = torch.rand(4, 3, 256, 192) * torch.tensor([0.1, 0.4, 0.7, 1.0]).view(4, 1, 1, 1)
    going = []
    with torch.no_grad():
        quality = model(x, 0.0).quality
        ranked = quality.sort().values  # (with the conv stem, Q differ only in the seventh digit here)
        for eta in (0.0, (ranked[1] + (ranked[2] - ranked[1]) / 2).item(), 1.0):
            expected, coarse = reference_forward(model, x, eta)
            out = model(x, eta)
            torch.testing.assert_close(out.heatmaps, expected, atol=1e-4, rtol=1e-4)
            going.append(out.fine_stage.sum().item())
            assert out.fine_stage.tolist() == (quality <= eta).tolist()
            assert (out.coarse_heatmaps is None) == (going[-1] > 0)  # no coarse maps thrown away in inference
            model.coarse_for_all = True
            kept = model(x, eta)
            model.coarse_for_all = False
            torch.testing.assert_close(kept.heatmaps, expected, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(kept.coarse_heatmaps, coarse, atol=1e-4, rtol=1e-4)
    assert going[0] == 0 and 0 < going[1] < 4 and going[2] == 4
    model.train()
    assert model(x, 1.0).coarse_heatmaps.shape == expected.shape  # the training loss reads them


def test_checkpoint_round_trip_and_clear_errors(tmp_path) -> None:
    model = create_model("evitpose_t").eval()
    path = tmp_path / "m.safetensors"
    save_model(model, path, epochs=1)
    loaded = load_model(path)
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 0.5).heatmaps, model(x, 0.5).heatmaps, atol=2e-2, rtol=2e-2)
    assert loaded.info == {"epochs": 1} and loaded.arch == "evitpose_t"
    assert path.stat().st_size < 30e6

    with pytest.raises(WeightsError, match="holds a evitpose_t model, not emgpose"):
        load_model(path, expect="emgpose")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="not a PoseApp checkpoint"):
        load_model(corrupt)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vitpose_xl")


def test_cover_weights_are_the_overlap_shares() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 16.0], [8.0, 0.0, 24.0, 16.0], [0.0, 16.0, 32.0, 32.0]]])
    shares = cover_weights(boxes, 2, 2, 16.0)
    expected = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    torch.testing.assert_close(shares, expected)


def test_unmerge_keeps_each_tokens_own_features_plus_its_groups_later_change() -> None:
    def column(*values):
        return torch.tensor(values).reshape(1, -1, 1)

    first, second = torch.tensor([[0, 1, 1, 2, 0]]), torch.tensor([[1, 0, 0]])  # 5 tokens -> 3 -> 2
    before = [column(1.0, 2.0, 3.0, 4.0, 5.0), column(13.0, 12.5, 14.0)]
    after = [column(3.0, 2.5, 4.0), column(13.2, 13.0)]
    final = column(23.2, 33.0)  # the two last tokens changed by +10 and +20 after the second merge
    expected = column(31.0, 22.0, 23.0, 24.0, 35.0)
    torch.testing.assert_close(unmerge(final, before, after, [first, second]), expected)
    kept = column(7.0, 8.0, 9.0)  # tokens never merged (each its own group) end with their final features
    identity = torch.arange(3).unsqueeze(0)
    torch.testing.assert_close(unmerge(kept + 1.0, [kept], [kept], [identity]), kept + 1.0)


def test_emgpose_both_stages_draw_their_heatmaps_with_the_grid_head() -> None:
    model = emg_tiny()
    model.coarse_for_all = True
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        out = model(x, 1.0)
        model.head.out.bias.add_(1.0)  # the heatmaps come from the deconvolution head on the grid
        shifted = model(x, 1.0)
    torch.testing.assert_close(shifted.heatmaps, out.heatmaps + 1.0)
    torch.testing.assert_close(shifted.coarse_heatmaps, out.coarse_heatmaps + 1.0)
    tokens = EMGPose(TINY, J, head="tokens").eval()
    with torch.no_grad():
        assert tokens(x, 1.0).heatmaps.shape == out.heatmaps.shape
    with pytest.raises(ValueError, match="'grid' or 'tokens'"):
        EMGPose(TINY, J, head="mlp")


@pytest.mark.parametrize("stem", ["yolo", "yolo_neck"])
def test_emgpose_conv_stem_tokens_come_from_one_pass_over_the_full_crop(stem: str) -> None:
    """The 2x2 cells are the full crop's stride-16 tokens; the 3x3 cells that map resampled to their grid plus
    the projected stride-8 map (zero at the start); the stem runs twice a crop (half-size and full crop)."""
    model = EMGPose(TINY, J, stem=stem).eval()
    x = torch.rand(1, 3, 256, 192)
    passes = []
    hook = model.patch_embed.body[0].register_forward_hook(lambda _m, args, _o: passes.append(args[0].shape))
    out, fine_input = embedded_fine_tokens(model, x)
    hook.remove()
    assert [tuple(shape[-2:]) for shape in passes] == [(128, 96), (256, 192)]
    fine = fine_input[0]
    with torch.no_grad():
        stride16, stride8, _ = model.patch_embed.pyramid(x)
        assert stride8.shape == (1, FINER_OUTPUTS[stem][0][1], 32, 24)
        full = model.patch_embed.proj(stride16)
        thirds = F.interpolate(full, (24, 18), mode="bilinear")
    levels = {16: 0, 11: 0}
    for t, (x0, y0, x1, _) in enumerate(out.token_boxes[0].tolist()):
        side = round(x1 - x0)
        if side == 16:  # a 2x2 child: a full-resolution patch
            torch.testing.assert_close(fine[t], full[0, :, round(y0) // 16, round(x0) // 16])
        elif side == 11:  # a 3x3 child: the fine projection is still zero
            torch.testing.assert_close(fine[t], thirds[0, :, round(y0 * 3 / 32), round(x0 * 3 / 32)])
        levels[side] = levels.get(side, 0) + 1
    high, mid, _ = model.split_counts()
    assert levels[16] == 4 * mid and levels[11] == 9 * high
    with torch.no_grad():
        model.fine_proj.bias.fill_(1.0)
        _, shifted = embedded_fine_tokens(model, x)
    moved = (shifted[0] - fine).abs().amax(dim=1) > 0.5
    assert moved.sum().item() == 9 * high  # the stride-8 projection reaches the 3x3 cells and only them


def test_emgpose_checkpoint_without_the_stride8_projection_loads_it_as_zero() -> None:
    model = EMGPose(TINY, J, stem="yolo")
    with torch.no_grad():
        model.fine_proj.weight.fill_(1.0)
    older = {k: v for k, v in EMGPose(TINY, J, stem="yolo").state_dict().items() if "fine_proj" not in k}
    model.load_state_dict(older)
    assert model.fine_proj.weight.eq(0).all() and model.fine_proj.bias.eq(0).all()
    with pytest.raises(RuntimeError, match="Missing key"):  # nothing else may be absent
        model.load_state_dict({k: v for k, v in older.items() if k != "pos_fine"})


def test_bf16_weights_compute_what_autocast_computes_and_leave_the_model_alone() -> None:
    from poseapp.models import prepare_for_inference
    from poseapp.runtime.precision import bf16_weights

    torch.manual_seed(0)
    model = prepare_for_inference(EViTPose(TINY, 19, stem="yolo_neck"))
    cast = bf16_weights(model)
    x = torch.rand(2, 3, 256, 192)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = model(x, 0.5).heatmaps, cast(x, 0.5).heatmaps
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert cast.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert cast.norm.weight.dtype == torch.float32  # autocast keeps normalisations in float32


@pytest.mark.parametrize(("family", "stem"), [(EViTPose, "yolo_neck"), (ViTPose, "yolo")])
def test_the_lateral_head_starts_as_the_head_without_it_and_reads_the_stems_finer_maps(family, stem) -> None:
    from poseapp.engine.train import seed_from

    torch.manual_seed(0)
    plain = family(TINY, J, img_hw=(64, 48), stem=stem).eval()
    lateral = family(TINY, J, img_hw=(64, 48), stem=stem, head_lateral=True).eval()
    assert len(seed_from(lateral, plain)) == len(plain.state_dict())
    x = torch.rand(2, 3, 64, 48)
    knob = 0.5 if family is EViTPose else None
    with torch.no_grad():
        torch.testing.assert_close(lateral(x, knob).heatmaps, plain(x, knob).heatmaps, atol=0, rtol=0)
    seen: list[torch.Tensor] = []
    for conv in lateral.head.lateral:
        conv.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    lateral.train()
    lateral(x, knob).heatmaps.square().sum().backward()
    with torch.no_grad():
        _, stride8, stride4 = lateral.patch_embed.pyramid(x)
    torch.testing.assert_close(seen[0], stride8)
    torch.testing.assert_close(seen[1], stride4)
    assert seen[0].shape[-2:] == (8, 6) and seen[1].shape[-2:] == (16, 12)
    assert all(conv.weight.grad.abs().sum() > 0 for conv in lateral.head.lateral)


def test_the_lateral_head_folds_its_batchnorm_like_the_plain_one() -> None:
    from poseapp.models.zoo import prepare_for_inference

    torch.manual_seed(0)
    model = EViTPose(TINY, J, img_hw=(64, 48), stem="yolo_neck", head_lateral=True).eval()
    for module in model.modules():  # nonzero laterals and BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    for conv in model.head.lateral:
        torch.nn.init.normal_(conv.weight, std=0.1)
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        want = model(x, 0.5).heatmaps
        got = prepare_for_inference(model)(x.contiguous(memory_format=torch.channels_last), 0.5).heatmaps
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_lateral_head_needs_a_conv_stem_and_the_grid_head() -> None:
    with pytest.raises(ValueError, match="yolo or yolo_neck stem, not patch"):
        EViTPose(TINY, J, head_lateral=True)
    with pytest.raises(ValueError, match="grid head"):
        EViTPose(TINY, J, stem="yolo_neck", head="tokens", head_lateral=True)
