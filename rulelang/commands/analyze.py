"""`rulelang analyze [RULE...] [--model M] [--weights PATH] [--data D | --images DIR] [-n N] [--at NODE...]
[--checks static,theory,csc,sanity] [--device cpu|cuda] [--seed K] [-o DIR]`

Runs :func:`rulelang.analyze` and writes ``DIR/report.json``, ``DIR/report.md`` and ``DIR/figures/*.png``;
prints where, then the table. With no arguments: every library rule on digits-cnn with the built-in test
digits, all checks, into ``out/analysis/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

DEFAULT_OUT = "out/analysis"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
DATA_CHOICES = ("digits-rgb", "digits", "samples")


AnalyzeCommandError = UsageError  # a bad argument to `rulelang analyze` (missing folder, no images, bad -n)


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


def _read(path: Path) -> np.ndarray:
    """A picture file -> H×W×3 float in [0, 1]."""
    try:
        import skimage.io

        img = np.asarray(skimage.io.imread(str(path)))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AnalyzeCommandError(f"cannot read image {path}: {msg}") from None
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    elif img.ndim == 3 and img.shape[-1] in (2, 4):  # grey+alpha, RGBA
        img = img[..., :-1]
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, -1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise AnalyzeCommandError(f"cannot use image {path}: shape {list(img.shape)} is not a grey or RGB picture")
    if np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float64) / np.iinfo(img.dtype).max
    return np.clip(img.astype(np.float64), 0, 1)


def resize_crop(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize so the shorter side fits `size`, then crop the centre (torchvision's Resize + CenterCrop)."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    img = resize(img, (nh, nw), order=1, anti_aliasing=scale < 1)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return img[top : top + th, left : left + tw]


def load_folder(folder: str, info: Any) -> tuple[Any, list[str]]:
    """Every picture in `folder` (sorted by name) as the model's input batch N×C×H×W."""
    import torch

    from ..data import IMAGENET_MEAN, IMAGENET_STD

    d = Path(folder)
    if not d.is_dir():
        raise AnalyzeCommandError(f"image folder not found: {folder}")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise AnalyzeCommandError(f"no pictures in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    c, h, w = info.input_shape
    imgs = np.stack([resize_crop(_read(p), (h, w)) for p in files]).transpose(0, 3, 1, 2)
    x = torch.from_numpy(imgs.astype(np.float32))
    if c == 1:
        x = x.mean(1, keepdim=True)
    if info.normalize == "imagenet":
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x.contiguous(), [p.name for p in files]


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
            raise AnalyzeCommandError(f"--data {args.data} needs a digits model, not {info.name}; use --images DIR")
        if info.input_shape[0] != (1 if args.data == "digits" else 3):
            raise AnalyzeCommandError(f"--data {args.data} does not fit {info.name} (input {info.input_shape})")
        return builtin_data(args.data, "test"), f"{args.data} (test split)"
    return None, None


def run(args: argparse.Namespace) -> int:
    from ..analysis.analyze import analyze
    from ..models import model_info

    if args.n is not None and args.n < 1:
        raise AnalyzeCommandError(f"-n must be at least 1, got {args.n}")
    if args.probes < 2:
        raise AnalyzeCommandError(f"--probes must be at least 2, got {args.probes}")
    if args.weights is not None and not Path(args.weights).is_file():
        raise AnalyzeCommandError(f"weights file not found: {args.weights}")
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


__all__ = ["AnalyzeCommandError", "add_arguments", "load_folder", "resize_crop", "run"]
