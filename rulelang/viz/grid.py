"""A PNG grid of heatmaps: the inputs in the first row, then one row of heatmaps per rule (columns = images),
with a fixed pixel layout (``grid_pixel_size``). Drawn on an Agg canvas, no pyplot state."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RulelangError
from .heatmap import heatmap

__all__ = ["DPI", "GAP", "LABEL_WIDTH", "TITLE_HEIGHT", "check_finite", "draw_grid", "grid_pixel_size"]

#: layout of the grid, in pixels (figure dpi is fixed, so the PNG size is exactly `grid_pixel_size`)
DPI = 100
LABEL_WIDTH = 120
TITLE_HEIGHT = 30
GAP = 4


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


def check_finite(rule: str, att) -> None:
    """Refuse an attribution with NaN or inf: a heatmap would paint those pixels as if they were zero."""
    a = att.detach().cpu().numpy() if hasattr(att, "detach") else np.asarray(att)
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(1)
    if bad.any():
        which = ", ".join(str(int(i)) for i in np.flatnonzero(bad)[:5])
        raise RulelangError(
            f"{rule}: the attribution of image(s) {which} has non-finite values (NaN or inf); "
            "no heatmap is drawn for it (check the rule's parameters and the inputs)"
        )
