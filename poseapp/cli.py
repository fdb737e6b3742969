"""Command line of the tool side: ``main.py bench | ...``. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from .models import MODEL_NAMES, WeightsError, create_model, load_model


class UsageError(Exception):
    """A bad argument or input, reported as one line."""


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA device is available")
    return name


def model_from_args(name: str, weights: str | None) -> torch.nn.Module:
    """A model by zoo name (random weights, enough for speed and FLOPs) or from a checkpoint."""
    if weights:
        return load_model(weights, expect=name)
    if name not in MODEL_NAMES:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return create_model(name).eval()


def cmd_bench(args: argparse.Namespace) -> None:
    from .bench import bench_model, format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    model = model_from_args(args.model, args.weights)
    knobs = args.knob or [model.knob.default]
    batches = tuple(args.batch)
    if args.runs < 1 or min(batches) < 1:
        raise UsageError("--runs and --batch must be positive")
    rows = bench_model(model, knobs, batches, args.runs, args.warmup, resolve_device(args.device))
    print(
        format_table(
            f"{args.model} on {args.device} ({torch.get_num_threads()} threads)", model.knob.name, rows
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="PoseApp: real-time multi-person pose.")
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench", help="GFLOPs and measured milliseconds per crop for each knob value")
    bench.add_argument("--model", default="evitpose_t", help=f"one of {', '.join(MODEL_NAMES)}")
    bench.add_argument("--weights", help="checkpoint to load instead of random weights")
    bench.add_argument(
        "--knob", type=float, nargs="+", help="knob values (keep ratio / eta); default: model's"
    )
    bench.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bench.add_argument("--runs", type=int, default=20, help="timed runs per setting (median reported)")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except (UsageError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
