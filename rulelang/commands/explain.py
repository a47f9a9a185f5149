"""`rulelang explain RULE [RULE...] --model M (--image FILE | --data digits [-n N]) [--target K] -o OUT.png`

Compiles each rule for the model, explains the inputs and writes one PNG grid: the first row shows the inputs,
then one row of heatmaps per rule (columns = images). Titles give the label (built-in data), the prediction and
the explained class.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ..data.inputs import prepare_inputs
from ..errors import RulelangError, UsageError
from ..viz.grid import check_finite, draw_grid

DATA_CHOICES = ("digits", "digits-rgb", "samples")


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


def _check_rule_paths(rules: Sequence[str]) -> None:
    from ..errors import RuleError
    from ..lang.library import looks_like_path
    from ..lang.loader import resolve_path

    for rule in rules:
        if looks_like_path(rule):
            try:
                resolve_path(rule)
            except RuleError as e:
                raise UsageError(e.message + (f" ({e.hint})" if e.hint else "")) from None


def check_output(path: str | os.PathLike, mkdir: bool = False, create: bool = False) -> None:
    """The PNG's folder must exist, or (`mkdir`) be one missing level under an existing folder: never a chain of
    folders. `create` makes that level (the check alone runs before any work, the creation after it)."""
    folder = Path(path).parent
    if folder.is_dir():
        return
    if folder.exists():
        raise UsageError(f"cannot write {path}: {folder} is not a folder")
    if not mkdir:
        raise UsageError(f"output folder {folder} does not exist (create it, or add --mkdir to create that one level)")
    if not folder.parent.is_dir():
        raise UsageError(f"output folder {folder} cannot be created: its parent {folder.parent} does not exist")
    if create:
        try:
            folder.mkdir()
        except OSError as e:
            raise UsageError(f"cannot create output folder {folder}: {e.strerror}") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import builtin_model, model_info
    from ..models.checks import check_input

    _check_rule_paths(args.rules)
    if not str(args.output).lower().endswith(".png"):
        raise UsageError(f"output must be a .png file, got {args.output}")
    check_output(args.output, args.mkdir)  # before any work; the folder is created only once all else is done
    if args.cell < 16:
        raise UsageError(f"--cell must be at least 16 pixels, got {args.cell}")
    info = model_info(args.model)  # unknown model -> ModelError with did-you-mean
    model = builtin_model(args.model, weights=args.weights)
    x, display, names, labels = prepare_inputs(info, args.image, args.data, args.n)
    check_input(model, x)  # a built-in model knows its data set
    with torch.no_grad():
        logits = model(x)
    n_classes = logits.shape[1]
    if args.target is not None and not 0 <= args.target < n_classes:
        raise UsageError(
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


__all__ = ["add_arguments", "check_output", "run"]
