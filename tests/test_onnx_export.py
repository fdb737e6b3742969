"""ONNX export (``main.py export``) and the exported graph as a pose model on onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from poseapp.cli import UsageError, check_knob, main
from poseapp.engine.evaluate import ModelEstimator
from poseapp.engine.train import TrainConfig, build_model
from poseapp.models import OnnxPoseModel, WeightsError, create_model, load_model, save_model
from poseapp.models.onnx_model import record_from_tensors, record_tensors
from poseapp.models.zoo import describe_weights
from poseapp.results import Detection, Frame
from poseapp.runtime.budget import LatencyModel
from poseapp.runtime.flops import count_macs
from poseapp.runtime.pipeline import PipelineConfig, PosePipeline
from poseapp.tools.bench import bench_model
from poseapp.tools.onnx_export import ExportError, static_route

HW = [128, 96]


def crops(n: int, seed: int = 7) -> torch.Tensor:
    return torch.rand(n, 3, *HW, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Random EViTPose-T and EMGPose-T checkpoints and their exports, written by the CLI."""
    root = tmp_path_factory.mktemp("onnx")
    files = {}
    for name, knob in (("evitpose_t", "0.5"), ("emgpose_t", "1")):
        torch.manual_seed(0)
        checkpoint, graph = root / f"{name}.safetensors", root / f"{name}.onnx"
        model = create_model(name, img_hw=HW)
        with torch.no_grad():  # a random head's heatmaps are almost flat, where the fitted peak is
            model.head.out.weight.mul_(30)  # ill-conditioned; trained heads answer with sharp peaks
        save_model(model, checkpoint)
        assert main(["export", "--weights", str(checkpoint), "--out", str(graph), "--knob", knob]) == 0
        files[name] = (checkpoint, graph)
    return files


def test_the_export_reproduces_heatmaps_record_and_cost_at_any_batch_size(exported, capsys) -> None:
    checkpoint, graph = exported["evitpose_t"]
    source, onnx = load_model(checkpoint), load_model(graph)
    assert isinstance(onnx, OnnxPoseModel) and onnx.arch == "evitpose_t"
    assert (onnx.knob.name, onnx.knob.low, onnx.knob.high) == ("keep_ratio", 0.5, 0.5)
    assert onnx.input_size == source.input_size and onnx.precision == "fp32"
    x = crops(7)  # neither the example's batch nor the check's
    with torch.no_grad():
        want = source(x, 0.5)
    got = onnx(x)
    torch.testing.assert_close(got.heatmaps, want.heatmaps, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.tokens_per_block, want.tokens_per_block)
    assert len(got.kept_patches) == 3
    for mine, theirs in zip(got.kept_patches, want.kept_patches, strict=True):
        assert torch.equal(mine, theirs)
    assert torch.equal(count_macs(onnx, got), count_macs(source, want))
    assert got.grid == want.grid and got.knob == 0.5


def test_the_export_names_its_source_checkpoint_by_hash(exported) -> None:
    import hashlib

    checkpoint, graph = exported["evitpose_t"]
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert load_model(graph).meta.source == f"{checkpoint.name} sha256:{digest}"


def test_emgpose_exports_its_both_stages_route(exported) -> None:
    checkpoint, graph = exported["emgpose_t"]
    source, onnx = load_model(checkpoint), load_model(graph)
    x = crops(3)
    with torch.no_grad():
        want = source(x, 1.0)
    got = onnx(x)
    assert bool(got.fine_stage.all()) and onnx.knob.name == "eta"
    torch.testing.assert_close(got.heatmaps, want.heatmaps, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.granularity, want.granularity)
    for mine, theirs in zip(got.merge_groups, want.merge_groups, strict=True):
        assert torch.equal(mine, theirs)
    assert torch.equal(count_macs(onnx, got), count_macs(source, want))


def test_emgpose_routes_are_its_eta_extremes_and_nothing_between_exports() -> None:
    model = create_model("emgpose_t", img_hw=HW).eval()
    x = crops(2)
    with torch.no_grad():
        for route, eta in ((True, 1.0), (False, 0.0)):
            fixed, chosen = model(x, eta, route=route), model(x, eta)
            assert torch.equal(fixed.fine_stage, chosen.fine_stage)
            torch.testing.assert_close(fixed.heatmaps, chosen.heatmaps)
    assert (static_route(model, 1.0), static_route(model, 0.0)) == (True, False)
    assert static_route(create_model("vitpose_t"), 1.0) is None
    with pytest.raises(ExportError, match="eta 0 .* or 1"):
        static_route(model, 0.9)


def test_record_tensors_round_trip() -> None:
    model = create_model("evitpose_t", img_hw=HW).eval()
    with torch.no_grad():
        out = model(crops(2), 0.25)
    named = record_tensors(out)
    assert [name for name, _ in named] == ["heatmaps", "tokens_per_block", "kept_patches.0", "kept_patches.1",
                                           "kept_patches.2"]  # fmt: skip
    back = record_from_tensors(dict(named), out.knob, out.grid)
    assert back.kept_patches[2] is out.kept_patches[2] and back.heatmaps is out.heatmaps


def test_the_onnx_model_runs_the_pipeline_with_its_overlay_record(exported) -> None:
    class TwoPeople:
        def __call__(self, image: np.ndarray) -> list[Detection]:
            return [
                Detection(np.array([10.0, 20.0, 60.0, 200.0]), 0.9),
                Detection(np.array([100, 20, 150, 210.0]), 0.8),
            ]

    _, graph = exported["evitpose_t"]
    onnx = load_model(graph)
    pipeline = PosePipeline(PipelineConfig(weights=graph), TwoPeople(), model=onnx)
    assert pipeline.controller.is_fixed and pipeline.precision == "fp32"
    image = np.full((240, 320, 3), 90, np.uint8)
    result = pipeline.step(Frame(0, image, 0.0))
    assert len(result.people) == 2 and result.knob == 0.5
    assert result.gflops == pytest.approx(2 * onnx.macs_per_crop / 1e9)
    assert all(len(person.record.kept_patches) == 3 for person in result.people)

    # Under a budget its one knob value is calibrated like any model's (no cache: timed here) ...
    timed = PipelineConfig(weights=graph, budget_ms=5.0, latency_cache=None)
    budget = PosePipeline(timed, TwoPeople(), model=onnx)
    assert not budget.controller.is_fixed and budget.controller.model.grid.tolist() == [0.5]
    # ... and when one crop is all that fits, the two people are posed in turn, the other one carried.
    one_fits = LatencyModel([0.5], [0.0], [10.0], rate=0.0)
    cfg = PipelineConfig(weights=graph, budget_ms=15.0)
    budget = PosePipeline(cfg, TwoPeople(), model=onnx, latency=one_fits)
    results = [budget.step(Frame(i, image, i / 25)) for i in range(3)]
    assert [r.posed for r in results] == [1, 1, 1] and [len(r.people) for r in results] == [1, 2, 2]
    assert all(r.knob == 0.5 for r in results)


def test_the_onnx_model_estimates_like_its_checkpoint_in_fp32(exported) -> None:
    checkpoint, graph = exported["evitpose_t"]
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 20.0, 60.0, 180.0], [120.0, 30.0, 70.0, 200.0]])
    want = ModelEstimator(load_model(checkpoint), precision="fp32").predict(image, boxes, 0.5)
    got = ModelEstimator(load_model(graph), precision="bf16").predict(image, boxes)  # the graph stays fp32
    np.testing.assert_allclose(got.xy, want.xy, atol=0.1)
    np.testing.assert_allclose(got.gflops, want.gflops)


def test_a_knob_the_export_does_not_hold_is_refused(exported) -> None:
    onnx = load_model(exported["evitpose_t"][1])
    check_knob(onnx, 0.5)
    with pytest.raises(UsageError, match="exported at keep_ratio 0.5, not 0.7"):
        check_knob(onnx, 0.7)
    with pytest.raises(UsageError, match="has no knob"):
        check_knob(create_model("vitpose_t"), 0.5)
    with pytest.raises(UsageError, match="runs from 0.25 to 1"):
        check_knob(create_model("evitpose_t"), 0.1)


def test_bad_files_and_arguments_fail_with_one_line(tmp_path, exported, capsys) -> None:
    garbage = tmp_path / "bad.onnx"
    garbage.write_bytes(b"not a graph")
    with pytest.raises(WeightsError, match="not a PoseApp ONNX export"):
        load_model(garbage)
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    checkpoint, graph = exported["emgpose_t"]
    cases = [
        (["--weights", str(checkpoint), "--out", str(tmp_path / "x.onnx"), "--knob", "0.9"], "run time"),
        (["--weights", str(checkpoint), "--out", str(tmp_path / "x.txt")], "must end in .onnx"),
        (["--weights", str(graph), "--out", str(tmp_path / "x.onnx")], "ONNX export already"),
        (
            ["--weights", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x.onnx")],
            "does not exist",
        ),
    ]
    for args, message in cases:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(WeightsError, match="cannot be trained"):
        build_model(TrainConfig(model="emgpose_t", init=str(graph), train=[]))


def test_the_metadata_is_json_the_library_reads(exported) -> None:
    onnx = load_model(exported["emgpose_t"][1])
    meta = json.loads(onnx.meta.to_json())
    assert meta["arch"] == "emgpose_t" and meta["knob"] == 1.0 and meta["config"]["img_hw"] == HW
    assert meta["outputs"][0] == "heatmaps" and "fine_stage" in meta["outputs"]


def test_the_viewer_lists_exports_with_their_model_and_knob(tmp_path, exported) -> None:
    from app.main_window import checkpoints

    checkpoint, graph = exported["evitpose_t"]
    (tmp_path / "broken.onnx").write_bytes(b"")
    labels = [label for label, _ in checkpoints(tmp_path, [str(checkpoint), str(graph)])]
    assert labels == ["broken.onnx (not a checkpoint)", "evitpose_t.safetensors (evitpose_t)",
                      "evitpose_t.onnx (evitpose_t ONNX, keep_ratio 0.5)"]  # fmt: skip
    assert describe_weights(exported["emgpose_t"][1]) == "emgpose_t ONNX, eta 1"


def test_a_lateral_head_exports_with_its_finer_maps(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("evitpose_t", img_hw=HW, stem="yolo_neck", head_lateral=True)
    with torch.no_grad():
        model.head.out.weight.mul_(30)
        for conv in model.head.lateral:
            torch.nn.init.normal_(conv.weight, std=0.1)
    checkpoint, graph = tmp_path / "lateral.safetensors", tmp_path / "lateral.onnx"
    save_model(model, checkpoint)
    assert main(["export", "--weights", str(checkpoint), "--out", str(graph), "--knob", "0.5"]) == 0
    source, onnx = load_model(checkpoint), load_model(graph)
    x = crops(3)
    with torch.no_grad():
        want = source(x, 0.5)
    torch.testing.assert_close(onnx(x).heatmaps, want.heatmaps, atol=1e-4, rtol=1e-4)


def _people_file(root, people: int) -> tuple[str, str]:
    """A COCO keypoint file of ``people`` boxes over a few textured images (calibration people)."""
    import cv2

    rng = np.random.default_rng(1)
    (root / "img").mkdir()
    images, annotations = [], []
    for i in range(4):
        base = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (320, 240))  # smooth blobs
        cv2.imwrite(str(root / "img" / f"{i}.png"), base)
        images.append({"id": i, "file_name": f"{i}.png", "width": 320, "height": 240})
    for k in range(people):
        x, y = rng.uniform(0, 200), rng.uniform(0, 60)
        box, joints = [x, y, 60.0, 150.0], [x + 30, y + 20, 2] + [0] * 48
        annotations.append({"id": k + 1, "image_id": k % 4, "category_id": 1, "iscrowd": 0,
                            "num_keypoints": 1, "bbox": box, "keypoints": joints})  # fmt: skip
    ann = root / "people.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1}]}))
    return str(ann), str(root / "img")


def test_int8_export_is_quantized_calibrated_and_close_to_the_float_graph(
    tmp_path, exported, capsys, monkeypatch
) -> None:
    import onnx

    from poseapp.tools import onnx_quantize

    checkpoint, float_graph = exported["evitpose_t"]
    ann, images = _people_file(tmp_path, 24)
    graph = tmp_path / "int8.onnx"
    args = ["export", "--weights", str(checkpoint), "--out", str(graph), "--knob", "0.5", "--int8"]
    args += ["--calib", ann, images, "--calib-people", "24"]
    crops = onnx_quantize.calibration_crops(ann, images, (HW[1], HW[0]), 24)
    # A random model's heatmaps are noise whose argmax any rounding moves: its joints fail the default
    # bound (a trained model's median joint moves about 1 px), and the graph is refused, leaving nothing.
    with pytest.raises(ExportError, match="px from the float graph's at the median"):
        onnx_quantize.quantize_export(float_graph, graph, crops)
    assert not graph.exists()
    monkeypatch.setattr(onnx_quantize, "MAX_MEDIAN_KEYPOINT_SHIFT", 1.0)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "int8 calibrated on 18 people: against the float graph on 6 other people" in printed
    ops = {node.op_type for node in onnx.load(str(graph)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    quantized, reference = load_model(graph), load_model(float_graph)
    assert quantized.precision == "int8" and quantized.meta.info["int8_calibration_people"] == 18
    assert describe_weights(graph) == "evitpose_t ONNX int8, keep_ratio 0.5"
    x = torch.from_numpy(onnx_quantize.calibration_crops(ann, images, quantized.input_size, 24, seed=5))
    assert x.shape == (24, 3, *HW)
    got, want = quantized(x), reference(x)
    assert torch.equal(got.tokens_per_block, want.tokens_per_block)
    correlation = torch.corrcoef(torch.stack([got.heatmaps.flatten(), want.heatmaps.flatten()]))[0, 1]
    assert float(correlation) > 0.9, "the int8 logits are not the float graph's up to rounding"
    assert not list(tmp_path.glob("tmp*")), "the float graph's temporary folder is left behind"
    rows = bench_model(quantized, [0.5], batches=(1,), runs=1, warmup=0, precision="bf16")
    assert rows[0].gflops == pytest.approx(quantized.macs_per_crop / 1e9)


def test_int8_export_arguments_fail_with_one_line(tmp_path, exported, capsys) -> None:
    checkpoint, _ = exported["evitpose_t"]
    out = tmp_path / "x.onnx"
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": []}))
    cases = [
        ([], "--int8 and --calib ANN IMAGES go together"),
        (["--calib", str(empty), str(tmp_path)], "holds no person"),
        (["--calib", str(tmp_path / "none.json"), str(tmp_path)], "not a readable COCO keypoint file"),
    ]
    for extra, message in cases:
        assert main(["export", "--weights", str(checkpoint), "--out", str(out), "--int8", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not out.exists()
