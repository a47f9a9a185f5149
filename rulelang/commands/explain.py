"""`rulelang explain RULE [RULE...] --model M (--image FILE | --data digits [-n N]) [--target K] -o OUT.png`

Compiles each rule for the model, explains the inputs and writes one PNG grid: the first row shows the inputs,
then one row of heatmaps per rule (columns = images). Titles give the label (built-in data), the prediction and
the explained class.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RulelangError

#: layout of the grid, in pixels (figure dpi is fixed, so the PNG size is exactly `grid_pixel_size`)
DPI = 100
LABEL_WIDTH = 120
TITLE_HEIGHT = 30
GAP = 4
DATA_CHOICES = ("digits", "digits-rgb", "samples")


class ExplainError(RulelangError):
    """A bad argument to `rulelang explain` (missing file, out-of-range target, incompatible data)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "rules",
        nargs="+",
        metavar="RULE",
        help="rule names from the rule library (lrp-zplus, gradient, ...) or rule file paths",
    )
    parser.add_argument(
        "--model",
        "-m",
        default="digits-cnn",
        help="digits-cnn, digits-resnet or a torchvision name such as vgg16 (default: digits-cnn)",
    )
    parser.add_argument(
        "--weights",
        metavar="PATH",
        help="state_dict file for the model (torchvision models start from random weights without it)",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--image",
        metavar="FILE",
        action="append",
        help="a picture to explain (repeatable); resized to the model's input size",
    )
    src.add_argument(
        "--data",
        choices=DATA_CHOICES,
        help="built-in inputs: the digits test split (RGB for the digits models) or the scikit-image sample photos",
    )
    parser.add_argument("-n", type=int, default=4, metavar="N", help="how many built-in inputs (default 4)")
    parser.add_argument(
        "--target", type=int, metavar="K", help="class to explain (default: each input's predicted class)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the PNG to write")
    parser.add_argument(
        "--mkdir",
        action="store_true",
        help="create the output's folder if it is missing (only that last level: its parent must exist)",
    )
    parser.add_argument("--cmap", default="bwr", help="matplotlib colormap (default bwr: red +, blue -)")
    parser.add_argument(
        "--percentile", type=float, default=99.5, help="visual normalisation percentile of each sign (default 99.5)"
    )
    parser.add_argument("--cell", type=int, default=128, help="size of one grid cell in pixels (default 128)")


# --------------------------------------------------------------------------------------------------- inputs


def load_image(path: str | os.PathLike, size: tuple[int, int]):
    """A picture file -> float32 3×H×W tensor in [0, 1] at `size` (grey is repeated, alpha dropped)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExplainError(f"image file not found: {path}")
    try:
        import skimage.io

        img = np.asarray(skimage.io.imread(str(path)))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExplainError(f"cannot read image {path}: {msg}") from None
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    elif img.ndim == 3 and img.shape[-1] in (2, 4):  # grey+alpha, RGBA
        img = img[..., :-1]
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, -1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ExplainError(f"cannot use image {path}: shape {list(img.shape)} is not a 2-D grey or RGB picture")
    if np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float64) / np.iinfo(img.dtype).max
    from skimage.transform import resize

    img = resize(img.astype(np.float64), size, order=1, anti_aliasing=True)
    return torch.from_numpy(np.clip(img, 0, 1).astype(np.float32).transpose(2, 0, 1))


def prepare_inputs(info, images: Sequence[str] | None, data: str | None, n: int):
    """-> (model input N×C×H×W, display images N×3×H×W in [0, 1], column names, labels or None)."""
    import torch

    from ..data import IMAGENET_MEAN, IMAGENET_STD, builtin_data, sample_images

    c, h, w = info.input_shape
    labels = None
    if images:
        display = torch.stack([load_image(p, (h, w)) for p in images])
        names = [Path(p).name for p in images]
    else:
        if n < 1:
            raise ExplainError(f"-n must be at least 1, got {n}")
        if data in ("digits", "digits-rgb"):
            if info.data is None or not info.data.startswith("digits"):
                raise ExplainError(
                    f"--data {data} needs a digits model (digits-cnn, digits-resnet), "
                    f"not {info.name}; use --data samples or --image"
                )
            x, y = builtin_data(info.data, "test")
            if n > len(x):
                raise ExplainError(f"-n {n} is more than the {len(x)} test digits")
            display, labels = x[:n], y[:n]
            names = [f"test #{i}" for i in range(n)]
        else:
            display, names = sample_images(size=(h, w), normalize=False)
            display, names = display[:n], names[:n]
    if display.shape[1] != 3:
        display = display.expand(-1, 3, -1, -1)
    x = display if c == 3 else display.mean(1, keepdim=True)
    if info.normalize == "imagenet":
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x.contiguous(), display, names, labels


# --------------------------------------------------------------------------------------------------- grid


def grid_pixel_size(n_rules: int, n_images: int, cell: int = 128) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that :func:`draw_grid` writes."""
    return LABEL_WIDTH + n_images * cell, TITLE_HEIGHT + (n_rules + 1) * cell


def draw_grid(
    images,
    attributions: Mapping[str, Any],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    cell: int = 128,
    cmap: str = "bwr",
    percentile: float = 99.5,
) -> tuple[int, int]:
    """Write a PNG grid: row 0 the input `images` (N×3×H×W or N×H×W×3 in [0, 1]), then one row of heatmaps per
    entry of `attributions` (rule name -> N×C×H×W tensor/array). Returns the (width, height) in pixels,
    which is exactly :func:`grid_pixel_size`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..analysis.heatmap import heatmap

    imgs = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if imgs.ndim == 3:
        imgs = imgs[None]
    if imgs.shape[1] in (1, 3) and imgs.shape[-1] not in (1, 3):
        imgs = imgs.transpose(0, 2, 3, 1)
    if imgs.shape[-1] == 1:
        imgs = np.repeat(imgs, 3, -1)
    n = len(imgs)
    for rule, att in attributions.items():
        if len(att) != n:
            raise RulelangError(f"{rule}: {len(att)} attributions for {n} images")
        check_finite(rule, att)
    if not Path(path).parent.is_dir():
        raise RulelangError(f"output folder {Path(path).parent} does not exist")
    width, height = grid_pixel_size(len(attributions), n, cell)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)  # Agg canvas; no pyplot global state
    FigureCanvasAgg(fig)
    inner = max(cell - GAP, 1)

    def axes(row: int, col: int):
        left = LABEL_WIDTH + col * cell + GAP / 2
        top = TITLE_HEIGHT + row * cell + GAP / 2
        ax = fig.add_axes((left / width, 1 - (top + inner) / height, inner / width, inner / height))
        ax.set_axis_off()
        return ax

    def row_label(row: int, text: str) -> None:
        y = 1 - (TITLE_HEIGHT + (row + 0.5) * cell) / height
        fig.text(6 / width, y, text, ha="left", va="center", fontsize=9, wrap=True)

    row_label(0, "input")
    for j in range(n):
        axes(0, j).imshow(np.clip(imgs[j], 0, 1), interpolation="nearest")
        if titles is not None:
            fig.text(
                (LABEL_WIDTH + (j + 0.5) * cell) / width,
                1 - (TITLE_HEIGHT - 6) / height,
                titles[j],
                ha="center",
                va="bottom",
                fontsize=8,
            )
    for i, (rule, att) in enumerate(attributions.items(), start=1):
        row_label(i, _short(rule))
        for j in range(n):
            axes(i, j).imshow(heatmap(att[j], cmap=cmap, percentile=percentile), interpolation="nearest")
    fig.savefig(path, dpi=DPI)
    return width, height


def _short(rule: str, limit: int = 18) -> str:
    name = Path(rule).stem if rule.endswith((".yaml", ".yml")) else rule
    return name if len(name) <= limit else name[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------------- command


def check_finite(rule: str, att) -> None:
    """Refuse an attribution with NaN or inf: a heatmap would paint those pixels as if they were zero."""
    a = att.detach().cpu().numpy() if hasattr(att, "detach") else np.asarray(att)
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(1)
    if bad.any():
        which = ", ".join(str(int(i)) for i in np.flatnonzero(bad)[:5])
        raise ExplainError(
            f"{rule}: the attribution of image(s) {which} has non-finite values (NaN or inf); "
            "no heatmap is drawn for it (check the rule's parameters and the inputs)"
        )


def _check_rule_paths(rules: Sequence[str]) -> None:
    from ..errors import RuleError
    from ..lang.library import looks_like_path
    from ..lang.loader import resolve_path

    for rule in rules:
        if looks_like_path(rule):
            try:
                resolve_path(rule)
            except RuleError as e:
                raise ExplainError(e.message + (f" ({e.hint})" if e.hint else "")) from None


def check_output(path: str | os.PathLike, mkdir: bool = False, create: bool = False) -> None:
    """The PNG's folder must exist, or (`mkdir`) be one missing level under an existing folder: never a chain of
    folders. `create` makes that level (the check alone runs before any work, the creation after it)."""
    folder = Path(path).parent
    if folder.is_dir():
        return
    if folder.exists():
        raise ExplainError(f"cannot write {path}: {folder} is not a folder")
    if not mkdir:
        raise ExplainError(
            f"output folder {folder} does not exist (create it, or add --mkdir to create that one level)"
        )
    if not folder.parent.is_dir():
        raise ExplainError(f"output folder {folder} cannot be created: its parent {folder.parent} does not exist")
    if create:
        try:
            folder.mkdir()
        except OSError as e:
            raise ExplainError(f"cannot create output folder {folder}: {e.strerror}") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import builtin_model, model_info
    from ..models.checks import check_input

    _check_rule_paths(args.rules)
    if not str(args.output).lower().endswith(".png"):
        raise ExplainError(f"output must be a .png file, got {args.output}")
    check_output(args.output, args.mkdir)  # before any work; the folder is created only once all else is done
    if args.cell < 16:
        raise ExplainError(f"--cell must be at least 16 pixels, got {args.cell}")
    info = model_info(args.model)  # unknown model -> ModelError with did-you-mean
    model = builtin_model(args.model, weights=args.weights)
    x, display, names, labels = prepare_inputs(info, args.image, args.data, args.n)
    check_input(model, x)  # a built-in model knows its data set
    with torch.no_grad():
        logits = model(x)
    n_classes = logits.shape[1]
    if args.target is not None and not 0 <= args.target < n_classes:
        raise ExplainError(
            f"target {args.target} is out of range: {args.model} has {n_classes} classes (0..{n_classes - 1})"
        )
    preds = logits.argmax(1).tolist()
    try:
        from .. import compile as compile_rules
    except (ImportError, AttributeError) as e:
        raise RulelangError(f"the rule compiler is not available in this installation ({e})") from None
    attributions: dict[str, torch.Tensor] = {}
    for rule in args.rules:
        explainer = compile_rules(model, rule, example_input=x)
        att = explainer(x, target=args.target)
        att = att.detach() if hasattr(att, "detach") else torch.as_tensor(att)
        if tuple(att.shape) != tuple(x.shape):
            raise RulelangError(f"{rule}: attribution has shape {list(att.shape)}, expected {list(x.shape)}")
        check_finite(rule, att)
        attributions[rule] = att
    titles = []
    for j, name in enumerate(names):
        parts = [name if labels is None else f"label {int(labels[j])}", f"pred {preds[j]}"]
        if args.target is not None:
            parts.append(f"expl {args.target}")
        titles.append(", ".join(parts))
    check_output(args.output, args.mkdir, create=True)
    w, h = draw_grid(
        display, attributions, args.output, titles=titles, cell=args.cell, cmap=args.cmap, percentile=args.percentile
    )
    print(f"wrote {args.output} ({w}x{h} px: {len(attributions)} rule(s) x {len(names)} image(s), model {args.model})")
    return 0


__all__ = [
    "ExplainError",
    "add_arguments",
    "check_finite",
    "check_output",
    "draw_grid",
    "grid_pixel_size",
    "load_image",
    "prepare_inputs",
    "run",
]
