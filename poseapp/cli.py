"""Command line of the tool side: ``main.py bench | ...``. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .data import AugmentConfig
from .engine.losses import QUALITY_TARGETS
from .models import MODEL_NAMES, OnnxPoseModel, WeightsError, create_model, load_model, prepare_for_inference
from .models.stem import STEM_LAYERS
from .models.vit import DEFAULT_IMG_HW
from .models.zoo import read_metadata, save_model
from .paths import default_detector
from .runtime.build import UsageError, check_knob, overlays_from_args, pipeline_from_args, resolve_device
from .runtime.precision import PRECISIONS, model_precision, resolve_precision

PRECISION_HELP = "auto: bf16 autocast where the device computes bf16 natively, else fp32"


def model_from_args(name: str | None, weights: str | None, stem: str = "patch") -> torch.nn.Module:
    """A model by zoo name (random weights, enough for speed and FLOPs; ``evitpose_t`` when None) or from a
    checkpoint, which ``name``, when given, must hold."""
    if weights:
        return prepare_for_inference(load_model(weights, expect=name))
    name = name or "evitpose_t"
    if name not in MODEL_NAMES:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return prepare_for_inference(create_model(name, **({"stem": stem} if stem != "patch" else {})))


def cmd_bench(args: argparse.Namespace) -> None:
    from .tools import bench

    if args.pipeline:
        from .runtime.video_job import pose_threads

        torch.set_num_threads(args.threads or pose_threads())
        return bench_pipelines(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = model_from_args(args.model, args.weights, args.stem)
    knobs = args.knob or [model.knob.default]
    for knob in knobs:
        check_knob(model, knob)
    batches = tuple(args.batch)
    if args.runs < 1 or min(batches) < 1:
        raise UsageError("--runs and --batch must be positive")
    device = resolve_device(args.device)
    precision = model_precision(model, args.precision, torch.device(device))
    rows = bench.bench_model(model, knobs, batches, args.runs, args.warmup, device, precision=precision)
    runtime = ", onnxruntime" if isinstance(model, OnnxPoseModel) else ""
    title = f"{model.arch} on {device}{runtime}, {precision} ({torch.get_num_threads()} threads)"
    print(bench.format_table(title, model.knob.name, rows))


def bench_pipelines(args: argparse.Namespace) -> None:
    """End-to-end FPS of the video job on a clip; with ``--compare-yolo``, the peer (``--detector``, by
    default yolo11n-pose) raced at every torch thread count, and our FPS over its fastest configurations."""
    import tempfile

    from .io.video import VideoError
    from .tools import bench

    if not args.weights:
        from .runtime.pipeline import DEFAULT_WEIGHTS

        args.weights = str(DEFAULT_WEIGHTS)
    print(f"{args.pipeline} at {args.width or 'native'} px wide, {torch.get_num_threads()} threads")
    print(bench.PIPELINE_HEADER)
    ours, peers = [], []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for budget in args.budget_ms or [None]:
                args.budget_ms = budget
                name = f"{Path(args.weights).stem}, " + (f"budget {budget} ms" if budget else "default knob")
                name += ", flip test" if args.flip else ""
                result = bench.bench_pipeline(name, args.pipeline, pipeline_from_args(args), args.width,
                                              Path(tmp) / "out.mp4")  # fmt: skip
                print(result.row(), flush=True)
                ours.append(result)
            if args.compare_yolo:
                out, device = Path(tmp) / "peer.mp4", resolve_device(args.device)
                for row in bench.race_peer(args.pipeline, args.detector, args.width, out, device):
                    print(row.row(), flush=True)
                    peers.append(row)
        except VideoError as exc:
            raise UsageError(str(exc)) from exc
    if peers:
        for result in ours:
            print(f"\n{bench.format_ratios(result, peers)}")


def crop_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``256x192``) -> (h, w), each a positive multiple of the 16-pixel patch."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW, e.g. 256x192") from None
    if min(h, w) < 16 or h % 16 or w % 16:
        raise argparse.ArgumentTypeError(f"{text}: height and width must be positive multiples of 16")
    return h, w


def cmd_train(args: argparse.Namespace) -> None:
    from .engine.train import ResumeError, TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = [tuple(pair) for pair in args.train]
    for ann, images in pairs:
        if not Path(ann).is_file() or not Path(images).is_dir():
            raise UsageError(f"--train {ann} {images}: need an annotation file and an image folder")
    if args.model not in MODEL_NAMES:
        raise UsageError(f"unknown model {args.model!r}; known: {', '.join(MODEL_NAMES)}")
    if args.model.startswith("emgpose") and any(v % 32 for v in args.input_size):
        raise UsageError("EMGPose's coarse stage halves the crop: --input-size must be multiples of 32")
    if args.model.startswith("unitranspose") and args.stem == "yolo_neck":
        raise UsageError("UniTransPose takes yolo11n-pose's levels: --stem yolo or yolo_pyramid")
    if args.stem == "yolo_pyramid" and not args.model.startswith("unitranspose"):
        raise UsageError("--stem yolo_pyramid gives UniTransPose's levels; a ViT takes yolo or yolo_neck")
    if args.no_joint_tokens and not args.model.startswith("unitranspose"):
        raise UsageError("--no-joint-tokens is UniTransPose's ablation; other models have no such path")
    if args.head_lateral and (
        not args.model.startswith(("vitpose", "evitpose")) or args.stem not in ("yolo", "yolo_neck")
    ):
        raise UsageError("--head-lateral feeds a ViTPose or EViTPose head from the yolo or yolo_neck stem")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")
    if args.steps < 0 or args.max_steps < 0 or args.warmup_steps < 0:
        raise UsageError("--steps, --max-steps and --warmup-steps count optimiser steps: 0 or more")
    if not 0.0 <= args.paste_prob <= 1.0:
        raise UsageError(f"--paste-prob must be in [0, 1], got {args.paste_prob}")
    low, high = args.scale_range
    if not 0.0 < low <= high:
        raise UsageError(f"--scale-range needs 0 < LOW <= HIGH, got {low} {high}")
    if not 0.0 <= args.ema < 1.0:
        raise UsageError(f"--ema is a decay in [0, 1) (0: off), got {args.ema}")
    if not 0.0 < args.distill_share <= 1.0:
        raise UsageError(f"--distill-share must be in (0, 1], got {args.distill_share}")
    if args.distill and args.loss != "ce":
        raise UsageError("--distill gives each joint a target distribution, which only --loss ce learns")
    if args.distill and not Path(args.distill).is_file():
        raise UsageError(f"--distill: no checkpoint {args.distill}")
    if args.init and args.init_from:
        raise UsageError("give --init (same model) or --init-from (another model), not both")
    if args.init and args.input_size != DEFAULT_IMG_HW:
        raise UsageError("--init keeps the checkpoint's crop size; use --init-from to train at another")
    if args.init or args.init_from:
        try:
            arch = read_metadata(args.init or args.init_from)["arch"]
        except WeightsError as exc:
            raise UsageError(str(exc)) from exc
        if args.init and arch != args.model:
            raise UsageError(f"--init {args.init} holds a {arch} model, not {args.model}")
    if not args.init and args.stem != "patch" and not Path(args.stem_weights).is_file():
        raise UsageError(
            f"--stem {args.stem} needs the teacher checkpoint {args.stem_weights} (run ./setup.sh)"
        )
    cfg = TrainConfig(
        model=args.model, stem=args.stem, stem_weights=args.stem_weights, init=args.init or "",
        init_from=args.init_from or "", train=pairs, img_hw=args.input_size,
        holdout=args.holdout, out=args.out, epochs=args.epochs, batch=args.batch, lr=args.lr, loss=args.loss,
        freeze_stem_epochs=args.freeze_stem_epochs, stem_lr_scale=args.stem_lr_scale,
        freeze_stem_bn=args.freeze_stem_bn, workers=args.workers,
        precision=args.precision,
        time_limit_minutes=args.time_limit, max_steps=args.max_steps, steps=args.steps,
        quality_from_epoch=args.quality_from_epoch, quality_target=args.quality_target,
        warmup_steps=args.warmup_steps, paste_prob=args.paste_prob, resume=args.resume,
        scale_range=(low, high), distill=args.distill or "", distill_share=args.distill_share, ema=args.ema,
        joint_tokens=not args.no_joint_tokens, head_lateral=args.head_lateral, seed=args.seed,
    )  # fmt: skip
    try:
        best = train(cfg)
    except ResumeError as exc:
        raise UsageError(str(exc)) from exc
    print(f"best checkpoint: {best}")


EVAL_BOX_CONF = 0.01
"""``eval --boxes detect``'s lowest box score, the same for every estimator. COCO's AP ranks people by score,
so low-scored extra people cost little and missed ones cost recall (Ultralytics' own ``val`` keeps boxes
from 0.001)."""


def teacher_from_args(
    name: str, path: str | None, device: str, threads: int = 0, detect_conf: float | None = None
):
    """A teacher by name (``movenet``, ``yolo``, or ``fused``: both, as the corpus labels), from ``path`` or
    its default file (``fused``: the defaults); ``threads``: MoveNet's onnxruntime threads (0: its default,
    all cores); ``detect_conf``: yolo11n-pose's lowest box score when it finds people itself."""
    from .engine.label import FusedTeachers
    from .engine.teachers import DEFAULT_MOVENET, DEFAULT_YOLO_POSE, MoveNetTeacher, YoloPoseTeacher

    if name == "fused":
        if path:
            raise UsageError("--teacher fused uses both teachers' default files; --teacher-path is for one")
        return FusedTeachers(
            teacher_from_args("yolo", None, device, detect_conf=detect_conf),
            teacher_from_args("movenet", None, device),
        )
    try:
        if name == "movenet":
            return MoveNetTeacher(path or DEFAULT_MOVENET, threads=threads)
        return YoloPoseTeacher(path or DEFAULT_YOLO_POSE, device=device, detect_conf=detect_conf)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def cmd_eval(args: argparse.Namespace) -> None:
    import json
    import warnings

    from .engine.evaluate import evaluate
    from .runtime.detect import DEFAULT_DETECTOR, PersonDetector
    from .runtime.pipeline import DEFAULT_WEIGHTS

    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.ann).is_file() or not Path(args.images).is_dir():
        raise UsageError(f"--ann {args.ann} --images {args.images}: need a json and its image folder")
    if args.weights and args.teacher:
        raise UsageError("give --weights CHECKPOINT or --teacher movenet|yolo|fused, not both")
    if args.flip and args.teacher:
        raise UsageError("--flip is for PoseApp models, not teachers")
    if not 0.0 <= args.box_conf < 1.0:
        raise UsageError(f"--box-conf is a box score in [0, 1), got {args.box_conf}")
    device = resolve_device(args.device)
    if args.teacher:
        estimator = teacher_from_args(args.teacher, args.teacher_path, device, detect_conf=args.box_conf)
        name, knobs, precision = estimator.name, [None], "fp32"
    else:
        estimator = prepare_for_inference(load_model(args.weights or DEFAULT_WEIGHTS))
        name, knobs = estimator.arch, args.knob or [estimator.knob.default]
        for knob in knobs:
            check_knob(estimator, knob)
        precision = model_precision(estimator, args.precision, torch.device(device))
    detector = None
    if args.boxes == "detect" and (args.detector or not hasattr(estimator, "detect_people")):
        try:
            detector = PersonDetector(  # in the precision the video job gives it, whatever the pose model's
                args.detector or DEFAULT_DETECTOR, device=device, conf=args.box_conf,
                precision=resolve_precision(args.precision, torch.device(device)),
            )  # fmt: skip
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    for knob in knobs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                report = evaluate(
                    estimator, args.ann, args.images, knob, args.boxes, detector, device, precision, args.flip
                )
            except (OSError, ValueError, KeyError) as exc:
                raise UsageError(f"{args.ann}: {exc}") from exc
        for warning in caught:
            print(f"note: {warning.message}", file=sys.stderr)
        print(f"{name} ({args.boxes} boxes, {precision}): {report.summary()}", flush=True)
        if args.per_joint:
            print(report.joint_table(), flush=True)
        if args.results:
            suffix = "" if knob is None or len(knobs) == 1 else f"_knob{knob:g}"
            path = Path(args.results)
            path = path.with_name(f"{path.stem}{suffix}{path.suffix}")
            path.write_text(json.dumps(report.results))
            print(f"wrote {path}")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from .data import PoseDataset, load_people, split_people
    from .engine.calibrate import calibrate_checkpoint, curve_table

    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.ann).is_file() or not Path(args.images).is_dir():
        raise UsageError(f"--ann {args.ann} --images {args.images}: need a json and its image folder")
    if not read_metadata(args.weights)["arch"].startswith("emgpose"):
        raise UsageError(f"--weights {args.weights}: only EMGPose has an eta to calibrate")
    try:
        people = load_people(args.ann, args.images)
        if args.last:
            people = split_people(people, min(args.last, len(people)))[1]
        dataset = PoseDataset(people, train=False, input_size=load_model(args.weights).input_size)
        chosen, curve = calibrate_checkpoint(args.weights, dataset, resolve_device(args.device), args.out)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{args.ann}: {exc}") from exc
    print(curve_table(curve, chosen))
    print(f"default eta {chosen.eta:g} written to {args.out or args.weights} ({len(people)} people)")


def cmd_soup(args: argparse.Namespace) -> None:
    from .engine.soup import average_checkpoints

    try:
        model = average_checkpoints(args.weights)
    except ValueError as exc:  # WeightsError included
        raise UsageError(str(exc)) from exc
    save_model(model, args.out, soup=[str(path) for path in args.weights],
               ingredients=[read_metadata(path)["info"] for path in args.weights])  # fmt: skip
    print(f"wrote {args.out}: the mean of {len(args.weights)} {model.arch} checkpoints")


def cmd_label(args: argparse.Namespace) -> None:
    from .engine.label import label_images
    from .engine.teachers import YoloPoseTeacher

    source = Path(args.source)
    if not source.exists():
        raise UsageError(f"--source {source} does not exist")
    if args.fill_only and not (Path(args.fill_only).is_file() and source.is_dir()):
        raise UsageError("--fill-only needs a COCO keypoint json and --source its image folder")
    if args.every < 1:
        raise UsageError("--every must be at least 1")
    if args.fix_sides and not args.fill_only:
        raise UsageError("--fix-sides repairs human labels: it needs --fill-only ANN")
    device = resolve_device(args.device)
    teacher = teacher_from_args(args.teacher, args.teacher_path, device)
    boxer = None
    if not args.fill_only and not isinstance(teacher, YoloPoseTeacher):
        boxer = teacher_from_args("yolo", args.detector, device)
    try:
        summary = label_images(
            teacher, source, args.out, fill_only=args.fill_only, every=args.every, boxer=boxer,
            min_box_score=args.min_box_score, min_confidence=args.min_confidence, fix_sides=args.fix_sides,
        )  # fmt: skip
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(str(exc)) from exc
    swaps = f", {summary.side_swaps} arm/leg pairs renamed left for right" if args.fix_sides else ""
    print(f"wrote {summary.out_json}: {summary.people} people in {summary.images} images "
          f"(images in {summary.image_dir}){swaps}")  # fmt: skip


def cmd_corpus(args: argparse.Namespace) -> None:
    from .engine.corpus import (
        export_corpus,
        label_corpus,
        parse_source,
        read_sources,
        scan_sources,
        write_sources,
    )

    out = Path(args.out)
    if not 0 <= args.shard < args.shards:
        raise UsageError(f"--shard must be in [0, {args.shards}), got {args.shard}")
    try:
        sources = [parse_source(text) for text in args.source] if args.source else read_sources(out)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    device = resolve_device(args.device)
    threads = 1 if args.shards > 1 else 0  # shards side by side: one core each
    if threads:
        torch.set_num_threads(threads)
    yolo = teacher_from_args("yolo", args.detector, device)
    known = read_sources(out) if (out / "sources.json").is_file() else []
    known_names = {s.name for s in known}
    fresh = [s for s in sources if s.name not in known_names]
    if any(s.name in known_names and s not in known for s in sources):
        raise UsageError(f"{out} holds a source of the same name from elsewhere; name the new one otherwise")
    if fresh:
        kept, found, dropped = scan_sources(fresh, out, yolo, args.min_height, args.min_box_score, args.every)
        write_sources(out, known + fresh)
        for source in fresh:
            print(f"{source.name}: {found[source.name]} people found, {dropped[source.name]} copies dropped")
        print(f"{len(kept)} distinct new people in {out / 'people.jsonl'}", flush=True)
    sources = known + fresh
    if args.scan_only:
        return
    movenet = teacher_from_args("movenet", args.movenet, device, threads)
    labelled = label_corpus(out, sources, yolo, movenet, args.shard, args.shards)
    print(f"shard {args.shard}/{args.shards}: {labelled} people labelled now", flush=True)
    manifest = export_corpus(out, sources, args.min_confidence)
    for entry in manifest["sources"]:
        print(f"{entry['name']}: {entry['people']} people in {entry['photos']} images ({entry['origin']})")
    print(f"{manifest['people']} labelled people; manifest {out / 'manifest.json'}")


def cmd_export(args: argparse.Namespace) -> None:
    from .tools.onnx_export import ExportError, export_onnx

    if Path(args.out).suffix.lower() != ".onnx":
        raise UsageError(f"--out {args.out}: the file to write must end in .onnx")
    if Path(args.weights).suffix.lower() == ".onnx":
        raise UsageError(f"--weights {args.weights} is an ONNX export already; give its checkpoint")
    if args.int8 != bool(args.calib):
        raise UsageError(
            "--int8 and --calib ANN IMAGES go together: int8 ranges are measured on people (training people)"
        )
    model = load_model(args.weights)
    check_knob(model, args.knob)
    try:
        if not args.int8:
            print(export_onnx(model, args.out, args.knob, source=args.weights, opset=args.opset).summary())
            return
        from .tools.onnx_quantize import calibration_crops, quantize_export

        crops = calibration_crops(*args.calib, model.input_size, args.calib_people)
        out = Path(args.out)
        with tempfile.TemporaryDirectory(dir=out.resolve().parent) as work:
            float_path = Path(work) / out.name
            report = export_onnx(model, float_path, args.knob, source=args.weights, opset=args.opset)
            print(report.summary(name="the float graph"))
            print(quantize_export(float_path, out, crops).summary())
    except (ExportError, OSError) as exc:
        raise UsageError(str(exc)) from exc


def cmd_video(args: argparse.Namespace) -> None:
    from .io.video import VideoError, open_source
    from .runtime.video_job import annotate_video, open_writer, pose_threads

    torch.set_num_threads(args.threads or pose_threads())
    if args.out is None and args.json is None and args.csv is None and not args.show:
        raise UsageError("--video needs somewhere to put the result: --out, --json, --csv or --show")
    overlays = overlays_from_args(args)
    for path in (args.out, args.json, args.csv):
        folder = Path(path).resolve().parent if path else None
        if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
            raise UsageError(f"cannot write {path}: folder {folder} does not exist or is not writable")
    try:
        frames = open_source(args.video)
        try:
            pipeline = pipeline_from_args(args)
            writer = open_writer(frames, args.video, args.out) if args.out else None
        except BaseException:
            frames.close()
            raise
        summary = annotate_video(
            frames, pipeline, writer, overlays, args.json, args.csv, show=args.show, progress=not args.quiet
        )
    except VideoError as exc:
        raise UsageError(str(exc)) from exc
    print(summary.describe())
    if summary.interrupted:
        print(f"stopped early: {summary.frames} frames written" + (f" to {args.out}" if args.out else ""))
    elif args.out:
        print(f"wrote {args.out}")


def cmd_batch(args: argparse.Namespace) -> int:
    from .tools.batch import run_batch

    return run_batch(args)


def add_pipeline_options(run: argparse._ActionsContainer) -> list[str]:
    """The options that decide how every frame is posed and drawn (the video command's and batch's);
    returns their names in the parsed arguments."""
    from .runtime.detect import DEFAULT_DETECTOR
    from .runtime.pipeline import DEFAULT_WEIGHTS

    options = [
        run.add_argument(
            "--weights", default=str(DEFAULT_WEIGHTS), help="pose model checkpoint (default: %(default)s)"
        ),
        run.add_argument(
            "--detector",
            default=str(DEFAULT_DETECTOR),
            help="Ultralytics detection or pose checkpoint (default: %(default)s)",
        ),  # fmt: skip
        run.add_argument(
            "--detect-every", type=int, default=5, help="longest gap between detector runs (frames)"
        ),
        run.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"]),
        run.add_argument(
            "--budget-ms", type=float, help="pose time per frame to stay under (adapts the knob)"
        ),
        run.add_argument("--keep-ratio", type=float, help="fix EViTPose's keep ratio"),
        run.add_argument("--eta", type=float, help="fix EMGPose's threshold"),
        run.add_argument(
            "--overlay",
            nargs="*",
            default=[],
            choices=["patches", "grid", "merges", "windows"],
            help="draw what the model kept (patches), its granularity map (grid), WBAS groups (merges), "
            "UniTransPose's windows and joint-token attention (windows)",
        ),
        run.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP),
        run.add_argument("--no-smooth", action="store_true", help="turn keypoint smoothing off"),
        run.add_argument(
            "--flip",
            action="store_true",
            help="flip test: each person also posed mirrored (more accurate, 2x cost)",
        ),
    ]
    return [option.dest for option in options]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run (default command)")
    run.add_argument("--video", help="video file, webcam index or image folder to process")
    run.add_argument("--out", help="annotated H.264 MP4 to write")
    run.add_argument("--json", help="COCO-results JSON of every person per frame and track id")
    run.add_argument("--csv", help="CSV of keypoints per frame and track id")
    run.add_argument("--show", action="store_true", help="open a preview window while processing")
    run.add_argument("--gui", action="store_true", help="open the desktop viewer")
    add_pipeline_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores but one)")


def build_parser() -> argparse.ArgumentParser:
    from .runtime.detect import DEFAULT_DETECTOR
    from .runtime.pipeline import DEFAULT_WEIGHTS
    from .tools.onnx_export import OPSET
    from .tools.onnx_quantize import CALIBRATION_PEOPLE

    prog = "main.py" if Path(sys.argv[0]).name == "main.py" else "poseapp"  # the script, or the command
    parser = argparse.ArgumentParser(prog=prog, description="PoseApp: real-time multi-person pose.")
    add_run_options(parser)
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser(
        "bench",
        help="GFLOPs and milliseconds per crop for each knob value; --pipeline CLIP: the whole video job's "
        "FPS, raced against yolo11n-pose at its best with --compare-yolo",
    )
    bench.add_argument(
        "--model", help=f"one of {', '.join(MODEL_NAMES)} (default: the --weights' model, else evitpose_t)"
    )
    bench.add_argument("--weights", help="checkpoint to load instead of random weights")
    bench.add_argument(
        "--stem", default="patch", choices=["patch", *STEM_LAYERS], help="random model's embedding"
    )
    bench.add_argument(
        "--knob", type=float, nargs="+", help="knob values (keep ratio / eta); default: model's"
    )
    bench.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bench.add_argument("--runs", type=int, default=20, help="timed runs per setting (median reported)")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's; --pipeline: all cores but one)"
    )
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    bench.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    bench.add_argument("--pipeline", metavar="CLIP", help="time the whole video job on CLIP instead")
    bench.add_argument(
        "--width", type=int, default=1280, help="--pipeline: resize frames to this width (0: as is)"
    )
    bench.add_argument(
        "--budget-ms", type=float, nargs="*", help="--pipeline: budgets to run (default: fixed knob)"
    )
    bench.add_argument(
        "--compare-yolo",
        action="store_true",
        help="--pipeline: race the --detector checkpoint (yolo11n-pose) through Ultralytics' predict on "
        "every frame at every torch thread count up to the cores, its inference alone (the lower bound on "
        "its time) and the same video job as ours (decode and encode on their own threads); print every "
        "configuration and our FPS over its fastest full job and over its fastest inference alone",
    )
    bench.add_argument(
        "--detector", default=str(DEFAULT_DETECTOR), help="--pipeline: our detector, and the raced peer"
    )
    bench.add_argument("--detect-every", type=int, default=5)
    bench.add_argument("--flip", action="store_true", help="--pipeline: with the flip test")
    bench.set_defaults(func=cmd_bench, keep_ratio=None, eta=None, no_smooth=False)

    tr = sub.add_parser("train", help="train a pose model (--resume continues <out>/last.pt)")
    tr.add_argument("--model", default="evitpose_t")
    tr.add_argument(
        "--stem",
        default="yolo",
        choices=[*STEM_LAYERS, "patch"],
        help="yolo11n-pose's layers 0-6 (yolo) or 0-19 through its neck (yolo_neck) as the stem, its four "
        "levels through the neck (yolo_pyramid, UniTransPose), or patches",
    )
    tr.add_argument(
        "--stem-weights", default=str(default_detector()), help="yolo11n-pose checkpoint the stem starts from"
    )
    tr.add_argument("--init", help="PoseApp checkpoint of the same model to warm-start from (new schedule)")
    tr.add_argument(
        "--init-from", help="PoseApp checkpoint of another model: copy the tensors both have (e.g. blocks)"
    )
    tr.add_argument(
        "--train",
        nargs=2,
        action="append",
        required=True,
        metavar=("ANN", "IMAGES"),
        help="COCO keypoint json and its image folder (repeat for several datasets)",
    )
    tr.add_argument(
        "--input-size", type=crop_size, default=DEFAULT_IMG_HW, metavar="HxW",
        help="crop height x width of a new model (default 256x192; 192x144 is about 40%% cheaper)",
    )  # fmt: skip
    tr.add_argument("--holdout", type=int, default=500, help="people of the first set kept for validation")
    tr.add_argument("--out", default="runs/train")
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--batch", type=int, default=32)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--loss", default="ce", choices=["ce", "mse"])
    tr.add_argument("--freeze-stem-epochs", type=int, default=6)
    tr.add_argument("--freeze-stem-bn", action="store_true", help="a released stem keeps its BN statistics")
    tr.add_argument("--stem-lr-scale", type=float, default=1.0, help="a released stem's share of --lr")
    tr.add_argument(
        "--quality-from-epoch", type=int, default=2,
        help="EMGPose: the epoch (from 0) at which its quality loss (weight 0.03) starts",
    )  # fmt: skip
    tr.add_argument(
        "--quality-target", default="oks", choices=QUALITY_TARGETS,
        help="EMGPose: its quality predictor learns the coarse result's OKS (the paper's) or 'gain': "
        "1 - what the fine stage adds to it",
    )  # fmt: skip
    tr.add_argument("--warmup-steps", type=int, default=200, help="steps of linear learning-rate warm-up")
    tr.add_argument(
        "--paste-prob", type=float, default=0.0,
        help="probability of pasting another training person over a crop as a distractor (default 0)",
    )  # fmt: skip
    tr.add_argument(
        "--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=AugmentConfig.scale_range,
        help="training window size as a multiple of the box padded by 1.25 (default 0.75 1.25; inference "
        "crops the box itself, 0.8)",
    )  # fmt: skip
    tr.add_argument(
        "--distill", metavar="CHECKPOINT",
        help="a PoseApp checkpoint of the same crop size whose flip-test heatmaps soften the targets",
    )  # fmt: skip
    tr.add_argument("--distill-share", type=float, default=0.5, help="the teacher's share of a target")
    tr.add_argument("--ema", type=float, default=0.0, metavar="DECAY", help="save a moving average")
    tr.add_argument(
        "--seed",
        type=int,
        default=0,
        help="data order and augmentation: a run continued with --init and "
        "another seed sees other crops first (the hold-out is the same whatever the seed)",
    )
    tr.add_argument(
        "--no-joint-tokens", action="store_true",
        help="UniTransPose: the local-only ablation, without the joint-token path",
    )  # fmt: skip
    tr.add_argument(
        "--head-lateral", action="store_true",
        help="ViTPose / EViTPose with a conv stem: the head also reads the stem's stride-8 and stride-4 maps",
    )  # fmt: skip
    tr.add_argument("--workers", type=int, default=1)
    tr.add_argument("--threads", type=int, default=0)
    tr.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    tr.add_argument("--time-limit", type=float, default=0.0, help="minutes; stop cleanly after")
    tr.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (resumable)")
    tr.add_argument(
        "--steps", type=int, default=0,
        help="train this many steps instead of whole epochs, the learning rate annealed over them",
    )  # fmt: skip
    tr.add_argument(
        "--resume", action="store_true",
        help="continue the stopped run in --out from its last.pt, exactly as if it had not stopped",
    )  # fmt: skip
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="COCO keypoint AP, PCK@0.2 and GFLOPs of a model or a teacher")
    ev.add_argument("--ann", required=True, help="COCO keypoint json (scored on the joints it shares)")
    ev.add_argument("--images", required=True, help="the json's image folder")
    ev.add_argument("--weights", help=f"PoseApp checkpoint to evaluate (default {DEFAULT_WEIGHTS})")
    ev.add_argument(
        "--teacher",
        choices=["movenet", "yolo", "fused"],
        help="evaluate a teacher instead (fused: both, as the corpus labels them)",
    )
    ev.add_argument("--teacher-path", help="teacher model file (default: its usual place)")
    ev.add_argument("--knob", type=float, nargs="+", help="knob values to evaluate; default: model's")
    ev.add_argument(
        "--boxes", default="gt", choices=["gt", "detect"], help="ground-truth boxes or detected people"
    )
    ev.add_argument(
        "--detector", help="--boxes detect: person detector (default yolo11n-pose; --teacher yolo: its own)"
    )
    ev.add_argument(
        "--box-conf", type=float, default=EVAL_BOX_CONF,
        help="--boxes detect: the lowest box score kept, by the detector and by a teacher that finds people "
        f"itself alike (default {EVAL_BOX_CONF}: AP rewards recall; the video job shows people from 0.25)",
    )  # fmt: skip
    ev.add_argument(
        "--flip", action="store_true",
        help="flip test: average each crop's heatmaps with its mirror image's (twice the GFLOPs)",
    )  # fmt: skip
    ev.add_argument("--results", help="write the COCO keypoint results json here")
    ev.add_argument(
        "--per-joint",
        action="store_true",
        help="also PCK@0.2 and the mean offset (torso lengths) per joint, over all predictions and over hits",
    )
    ev.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ev.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    ev.add_argument("--threads", type=int, default=0)
    ev.set_defaults(func=cmd_eval)

    ca = sub.add_parser(
        "calibrate",
        help="EMGPose: choose the default eta on labelled people (mean OKS within 0.005 of eta 1)",
    )
    ca.add_argument("--weights", required=True, help="EMGPose checkpoint")
    ca.add_argument("--ann", required=True, help="COCO keypoint json of the people to calibrate on")
    ca.add_argument("--images", required=True, help="the json's image folder")
    ca.add_argument("--last", type=int, default=0, help="only the last N people (train's --holdout split)")
    ca.add_argument("--out", help="checkpoint to write (default: --weights itself)")
    ca.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ca.add_argument("--threads", type=int, default=0)
    ca.set_defaults(func=cmd_calibrate)

    so = sub.add_parser(
        "soup", help="average the weights of checkpoints of one model, e.g. runs continued from one"
    )
    so.add_argument("weights", nargs="+", help="two or more checkpoints of the same model and configuration")
    so.add_argument("--out", required=True, help="checkpoint to write")
    so.set_defaults(func=cmd_soup)

    lb = sub.add_parser("label", help="pseudo-label an image folder or a video with a teacher")
    lb.add_argument("--source", required=True, help="image folder or video file")
    lb.add_argument("--out", required=True, help="COCO keypoint json to write (video frames: images/ beside)")
    lb.add_argument("--teacher", default="movenet", choices=["movenet", "yolo"])
    lb.add_argument("--teacher-path", help="teacher model file (default: its usual place)")
    lb.add_argument("--detector", help="YOLO pose checkpoint that finds the people (default yolo11n-pose)")
    lb.add_argument(
        "--fill-only",
        metavar="ANN",
        help="human-labelled json of --source: keep its labels, fill only the joints its skeleton lacks",
    )
    lb.add_argument(
        "--fix-sides",
        action="store_true",
        help="with --fill-only: swap left/right arm or leg labels where the teacher agrees far better",
    )
    lb.add_argument("--every", type=int, default=5, help="video: label every k-th frame")
    lb.add_argument("--min-box-score", type=float, default=0.5, help="people kept from the detector")
    lb.add_argument("--min-confidence", type=float, default=0.3, help="joints below are written v=0")
    lb.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    lb.set_defaults(func=cmd_label)

    co = sub.add_parser(
        "corpus",
        help="build a distillation corpus: scan and de-duplicate people, label them with both teachers",
        description="Resumable: run it again (without --source) to go on; --shard/--shards split the "
        "labelling over processes. Each run exports what is labelled so far.",
    )
    co.add_argument("--out", required=True, help="corpus folder (people.jsonl, labels, <source>.json)")
    co.add_argument(
        "--source", action="append", metavar="NAME=KIND:PATH[:IMAGES][@ORIGIN]",
        help="a source of people (repeat); kinds: yolo, voc, crops, photos, video, coco (see poseapp.corpus)",
    )  # fmt: skip
    co.add_argument("--min-height", type=float, default=48.0, help="people shorter (pixels) are skipped")
    co.add_argument("--min-box-score", type=float, default=0.5, help="detected people kept (photos, video)")
    co.add_argument("--every", type=int, default=1, help="video sources: every k-th frame")
    co.add_argument("--min-confidence", type=float, default=0.3, help="fused joint weights below: v=0")
    co.add_argument("--shard", type=int, default=0, help="label this shard of the people ...")
    co.add_argument("--shards", type=int, default=1, help="... of this many")
    co.add_argument("--scan-only", action="store_true", help="scan and de-duplicate, label nothing")
    co.add_argument("--detector", help="YOLO pose checkpoint (default yolo11n-pose): detector and teacher")
    co.add_argument("--movenet", help="MoveNet Thunder ONNX file (default: ../shared/teachers)")
    co.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    co.set_defaults(func=cmd_corpus)

    ex = sub.add_parser("export", help="write a checkpoint as an ONNX graph at one knob value (onnxruntime)")
    ex.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="PoseApp checkpoint (.safetensors)")
    ex.add_argument("--out", required=True, help="the .onnx file to write")
    ex.add_argument("--knob", type=float, help="keep ratio (EViTPose) or eta (EMGPose: 0 or 1); default: own")
    ex.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version")
    ex.add_argument(
        "--int8", action="store_true",
        help="quantize weights and activations to 8 bits (static, calibrated on --calib's people)",
    )  # fmt: skip
    ex.add_argument(
        "--calib", nargs=2, metavar=("ANN", "IMAGES"),
        help="--int8: COCO keypoint json and images whose people calibrate the ranges (training people)",
    )  # fmt: skip
    ex.add_argument(
        "--calib-people", type=int, default=CALIBRATION_PEOPLE, metavar="N",
        help=f"--int8: people to calibrate and check on ({CALIBRATION_PEOPLE})",
    )  # fmt: skip
    ex.set_defaults(func=cmd_export)

    bt = sub.add_parser(
        "batch", help="annotate many videos on Ray: embedded on this machine, or a cluster's by --address"
    )
    bt.add_argument(
        "--videos", nargs="+", required=True, metavar="PATH", help="video files, folders of videos, globs"
    )
    bt.add_argument(
        "--out", required=True, metavar="DIR", help="folder for <video name>.mp4 (+ .json, .csv) and summary"
    )
    bt.add_argument("--json", action="store_true", help="also <video name>.json (COCO results, track ids)")
    bt.add_argument("--csv", action="store_true", help="also <video name>.csv (keypoints per frame, track)")
    bt.add_argument(
        "--workers", type=int, default=1, metavar="N", help="pose actors, each on one video at a time (1)"
    )
    bt.add_argument(
        "--threads-per-worker", type=int, default=0, metavar="T",
        help="torch threads of each actor (0: this machine's cores / workers, less one, at least 1)",
    )  # fmt: skip
    bt.add_argument(
        "--address", metavar="HOST:PORT",
        help="join this running Ray cluster (ray start --head); default: Ray embedded in this process",
    )  # fmt: skip
    options = add_pipeline_options(bt.add_argument_group("run options (as for --video)"))
    bt.add_argument("--quiet", action="store_true", help="no progress bar")
    bt.set_defaults(func=cmd_batch, pipeline_options=options)
    return parser


def wants_gui(argv: Sequence[str]) -> bool:
    """No sub-command and no headless output: the viewer (on --video, or webcam 0)."""
    args, _ = build_parser().parse_known_args(argv)
    return args.command is None and (args.gui or args.video is None)


def launch(argv: Sequence[str] | None = None) -> int:
    """The whole program, as ``main.py``, ``python -m poseapp`` and the installed ``poseapp`` command run it:
    the desktop viewer by default (every run option applies to it), ``--video ... --out ...`` headless, and
    the sub-commands. The viewer's package (``app``, PyQt6) is imported only when the viewer is asked for."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never probe the network from Ultralytics
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" not in argv and "--help" not in argv and wants_gui(argv):
        from app.main_window import run_gui

        try:
            return run_gui(build_parser().parse_args(argv))
        except (UsageError, WeightsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if args.video is None or args.gui:
            print("error: the desktop viewer starts from main.py or the poseapp command (--gui --video FILE)",
                  file=sys.stderr)  # fmt: skip
            return 2
        args.func = cmd_video
    try:
        code = args.func(args)
    except (UsageError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code or 0
