"""`rulelang analyze [RULE...] [--model M] [--weights PATH] [--data D | --images DIR] [-n N] [--at NODE...]
[--checks static,theory,csc,sanity] [--device cpu|cuda] [--seed K] [-o DIR]`

Runs :func:`rulelang.analyze` and writes ``DIR/report.json``, ``DIR/report.md`` and ``DIR/figures/*.png``;
prints where, then the table. With no arguments: every library rule on digits-cnn with the built-in test
digits, all checks, into ``out/analysis/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.inputs import load_folder
from ..errors import UsageError

DEFAULT_OUT = "out/analysis"
DATA_CHOICES = ("digits-rgb", "digits", "samples")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..analysis.analyze import CHECKS, DEFAULTS

    parser.add_argument(
        "rules", nargs="*", metavar="RULE", help="library rule names or rule file paths (default: the whole library)"
    )
    parser.add_argument(
        "--model",
        "-m",
        default="digits-cnn",
        help="digits-cnn, digits-resnet, digits-vgg16 or a torchvision name such as resnet18 (default: digits-cnn)",
    )
    parser.add_argument("--weights", metavar="PATH", help="state_dict file for the model")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        choices=DATA_CHOICES,
        help="built-in inputs (default: the model's test digits; the scikit-image sample photos for torchvision)",
    )
    src.add_argument(
        "--images",
        metavar="DIR",
        help="a folder of pictures (resized and centre-cropped to the model's input; ImageNet-normalised for "
        "torchvision models); labels are the model's predictions",
    )
    parser.add_argument(
        "-n", type=int, default=DEFAULTS["n"], metavar="N", help=f"images analysed (default {DEFAULTS['n']})"
    )
    parser.add_argument(
        "--at", nargs="+", metavar="NODE", help="CSC injection nodes (default: output, the logits)", default=None
    )
    parser.add_argument(
        "--checks",
        default=",".join(CHECKS),
        help=f"comma-separated subset of {','.join(CHECKS)} (default: all)",
    )
    parser.add_argument("--probes", type=int, default=DEFAULTS["probes"], help="CSC probes per image (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="seed (default 0)")
    parser.add_argument("-o", "--output", default=DEFAULT_OUT, metavar="DIR", help=f"default {DEFAULT_OUT}/")
    parser.add_argument("--no-figures", action="store_true", help="write report.json and report.md only")


def _data(args: argparse.Namespace, info):
    from ..data import builtin_data, sample_images

    if args.images:
        x, _ = load_folder(args.images, info)
        return x, f"{len(x)} pictures from {args.images}"
    if args.data == "samples":
        x, names = sample_images(size=info.input_shape[1:])
        return x, f"scikit-image sample photos ({', '.join(names)})"
    if args.data is not None:
        if info.data is None or not info.data.startswith("digits"):
            raise UsageError(f"--data {args.data} needs a digits model, not {info.name}; use --images DIR")
        if info.input_shape[0] != (1 if args.data == "digits" else 3):
            raise UsageError(f"--data {args.data} does not fit {info.name} (input {info.input_shape})")
        return builtin_data(args.data, "test"), f"{args.data} (test split)"
    return None, None


def run(args: argparse.Namespace) -> int:
    from ..analysis.analyze import analyze
    from ..models import model_info

    if args.n is not None and args.n < 1:
        raise UsageError(f"-n must be at least 1, got {args.n}")
    if args.probes < 2:
        raise UsageError(f"--probes must be at least 2, got {args.probes}")
    if args.weights is not None and not Path(args.weights).is_file():
        raise UsageError(f"weights file not found: {args.weights}")
    info = model_info(args.model)  # unknown model -> ModelError with a did-you-mean
    data, desc = _data(args, info)
    report = analyze(
        args.model,
        args.rules or None,
        data,
        checks=args.checks,
        n=args.n,
        at=args.at,
        device=args.device,
        seed=args.seed,
        probes=args.probes,
        weights=args.weights,
    )
    if desc is not None:
        report.meta["data"] = desc + (" (labels: the model's predictions)" if args.images else "")
    out = Path(args.output)
    path = report.save(out, figures=not args.no_figures)
    n_fig = len(report.figures)
    print(
        f"wrote {path}, {out / 'report.md'}"
        + (f" and {n_fig} figures in {out / 'figures'}" if n_fig else "")
        + f" ({len(report.rules)} rules, {report.meta['model']}, n={report.meta['n']}, "
        f"{report.meta['seconds_total']:.0f} s)"
    )
    print()
    print(report.table("text"))
    return 0


__all__ = ["add_arguments", "run"]
