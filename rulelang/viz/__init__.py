"""Figures (matplotlib, PNG): attribution heatmaps, the `rulelang explain` grid, the analyses' CSC curves, heatmap
grids and sanity-check plots."""

from .grid import draw_grid, grid_pixel_size
from .heatmap import heatmap, normalize_visual, reduce_channels
from .plots import plot_csc, plot_csc_models, plot_heatmaps, plot_random_logit, plot_randomization, write_figures

__all__ = [
    "draw_grid",
    "grid_pixel_size",
    "heatmap",
    "normalize_visual",
    "reduce_channels",
    "plot_csc",
    "plot_csc_models",
    "plot_heatmaps",
    "plot_random_logit",
    "plot_randomization",
    "write_figures",
]
