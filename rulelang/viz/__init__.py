"""Figures (matplotlib, PNG) of the analyses: CSC curves, heatmap grids, sanity-check plots."""

from .plots import plot_csc, plot_csc_models, plot_heatmaps, plot_random_logit, plot_randomization, write_figures

__all__ = ["plot_csc", "plot_csc_models", "plot_heatmaps", "plot_random_logit", "plot_randomization", "write_figures"]
