"""The figures of an analysis report (matplotlib, Agg, PNG; no pyplot global state).

- :func:`plot_csc` — CSC per readout layer for all rules: median |cos| on a linear axis with the random
  baseline, and the paper's ``1 − median`` log axis (ticks "1 − 1e-k", inverted);
- :func:`plot_heatmaps` — a grid of heatmaps, one row per rule (or per randomization step), a few images;
- :func:`plot_randomization` — SSIM after each cascading-randomization step, median with its interval;
- :func:`plot_random_logit` — the random-logit SSIM per rule (boxplot of the per-image scores when kept,
  else the median with its interval);
- :func:`write_figures` — all of them for a :class:`~rulelang.analysis.report.Report` into ``DIR/figures``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "plot_csc",
    "plot_csc_models",
    "plot_heatmaps",
    "plot_random_logit",
    "plot_randomization",
    "write_figures",
]

DPI = 100
#: smallest 1 − median shown on the log axis (exact convergence, 1 − median = 0, is drawn there)
LOG_FLOOR = 1e-8


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _style(i: int) -> dict[str, Any]:
    """Line style of the i-th rule: 40 distinct colours, line styles and markers cycling at other periods."""
    import matplotlib

    colors = list(matplotlib.colormaps["tab20"].colors) + list(matplotlib.colormaps["tab20b"].colors)  # type: ignore[attr-defined]  # ListedColormap
    colors = colors[0::2] + colors[1::2]  # strong shades first
    return {
        "color": colors[i % len(colors)],
        "linestyle": ("-", "--", "-.", ":")[i % 4],
        "marker": "os^vD<>ph*"[i % 10],
        "markersize": 3,
    }


def _save(fig: Any, path: str | Path, dpi: int = DPI) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _log_axis(ax: Any, lowest: float) -> None:
    """The paper's CSC axis: 1 − median on a log scale, inverted, ticks labelled "1 − 1e-k"."""
    ax.set_yscale("log")
    k_max = max(1, math.ceil(-math.log10(max(lowest, LOG_FLOOR))))
    ticks = [10.0**-k for k in range(0, k_max + 1)]
    ax.set_yticks(ticks)
    ax.set_yticklabels(["0" if k == 0 else f"1 − 1e-{k}" for k in range(0, k_max + 1)])
    ax.set_ylim(1.5, 10.0**-k_max / 1.5)  # inverted: converged (small 1 − median) at the top
    ax.set_ylabel("median |cos| (log of 1 − median)")


# ------------------------------------------------------------------------------------------------- CSC
def _curves(csc: Mapping[str, Any] | None, injection: str | None) -> list[dict]:
    inj = (csc or {}).get("injections") or {}
    if not inj:
        return []
    key = injection if injection in inj else next(iter(inj))
    return list((inj.get(key) or {}).get("readouts") or [])


def plot_csc(
    results: Mapping[str, Mapping[str, Any] | None],
    path: str | Path,
    injection: str | None = None,
    title: str = "",
    whole_map_input: bool = True,
    dpi: int = DPI,
) -> Path:
    """CSC per readout layer for several rules (``{rule: csc.to_dict()}``), from the injection node (left) down
    to the input (right): left panel median |cos| (linear, with the random baseline), right panel 1 − median
    (log, inverted). With `whole_map_input`, the input's whole-map |cos| is drawn as an open marker."""
    curves = {rule: _curves(c, injection) for rule, c in results.items()}
    curves = {rule: c for rule, c in curves.items() if c}
    fig = _figure(15, 5.5)
    ax_lin, ax_log = fig.subplots(1, 2)
    longest: list[dict] = max(curves.values(), key=len) if curves else []
    lowest = 1.0
    for i, (rule, reads) in enumerate(curves.items()):
        st = _style(i)
        xs = np.arange(len(reads))
        med = np.array([r.get("median") if r.get("median") is not None else np.nan for r in reads], float)
        ax_lin.plot(xs, med, label=rule, linewidth=1.2, **st)
        gap = np.clip(1.0 - med, LOG_FLOOR, None)
        lowest = min(lowest, float(np.nanmin(gap)) if np.isfinite(gap).any() else 1.0)
        ax_log.plot(xs, gap, label=rule, linewidth=1.2, **st)
        whole = reads[-1].get("whole_map") if whole_map_input else None
        if whole is not None:
            ax_lin.plot([xs[-1]], [whole], marker="o", mfc="none", color=st["color"], markersize=7)
            ax_log.plot([xs[-1]], [max(1 - whole, LOG_FLOOR)], marker="o", mfc="none", color=st["color"], markersize=7)
    if longest:
        base = np.array([r.get("baseline") if r.get("baseline") is not None else np.nan for r in longest], float)
        ax_lin.plot(np.arange(len(longest)), base, color="black", linewidth=2, alpha=0.6, label="random baseline")
        ax_log.plot(np.arange(len(longest)), 1 - base, color="black", linewidth=2, alpha=0.6)
        names = [f"{r.get('node')} ({r.get('channels')})" for r in longest]
        for ax in (ax_lin, ax_log):
            ax.set_xticks(np.arange(len(longest)))
            ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
            ax.grid(alpha=0.3)
            ax.set_xlabel("readout layer (channels), from the injection down to the input")
    ax_lin.set_ylim(0, 1.02)
    ax_lin.set_ylabel("median |cos| between probes")
    _log_axis(ax_log, lowest)
    ax_log.invert_yaxis() if ax_log.get_ylim()[0] < ax_log.get_ylim()[1] else None
    ax_lin.set_title("CSC (linear; open circle: whole-map |cos| at the input)", fontsize=10)
    ax_log.set_title("CSC (1 − median, log; up = converged)", fontsize=10)
    handles, labels = ax_lin.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.91, 0.5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(right=0.9, wspace=0.25)
    return _save(fig, path, dpi)


def plot_csc_models(
    results: Mapping[str, Mapping[str, Mapping[str, Any] | None]],
    path: str | Path,
    title: str = "",
    dpi: int = DPI,
) -> Path:
    """CSC against depth for several models: ``{model: {rule: csc.to_dict()}}``; one panel per model on the
    paper's log axis, x = readout layers from the logits down to the input (so the reader sees depth at work)."""
    models = list(results)
    fig = _figure(6.5 * len(models) + 2, 5.5)
    axes = np.atleast_1d(fig.subplots(1, len(models), sharey=True))
    rules: list[str] = []
    for m in models:
        rules += [r for r in results[m] if r not in rules]
    lowest = 1.0
    for ax, m in zip(axes, models):
        longest: list[dict] = []
        for rule, c in results[m].items():
            reads = _curves(c, None)
            if not reads:
                continue
            longest = reads if len(reads) > len(longest) else longest
            med = np.array([r.get("median") if r.get("median") is not None else np.nan for r in reads], float)
            gap = np.clip(1 - med, LOG_FLOOR, None)
            lowest = min(lowest, float(np.nanmin(gap)) if np.isfinite(gap).any() else 1.0)
            ax.plot(np.arange(len(reads)), gap, label=rule, linewidth=1.2, **_style(rules.index(rule)))
        if longest:
            base = np.array([r.get("baseline") or np.nan for r in longest], float)
            ax.plot(np.arange(len(longest)), 1 - base, color="black", linewidth=2, alpha=0.6, label="random baseline")
            ax.set_xticks(np.arange(len(longest)))
            ax.set_xticklabels([str(r.get("node")) for r in longest], rotation=70, ha="right", fontsize=6)
        ax.set_title(f"{m}: {len(longest) - 1 if longest else 0} readout layers", fontsize=10)
        ax.grid(alpha=0.3)
    _log_axis(axes[0], lowest)
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(
        list(seen.values()), list(seen), loc="center left", bbox_to_anchor=(0.92, 0.5), fontsize=7, frameon=False
    )
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(right=0.91, wspace=0.08)
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------------------------- heatmaps
def _display(images: Any) -> np.ndarray:
    imgs = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float)
    if imgs.ndim == 3:
        imgs = imgs[None]
    if imgs.shape[1] in (1, 3) and imgs.shape[-1] not in (1, 3):
        imgs = imgs.transpose(0, 2, 3, 1)
    if imgs.shape[-1] == 1:
        imgs = np.repeat(imgs, 3, -1)
    lo, hi = imgs.min(), imgs.max()
    if lo < 0 or hi > 1:  # normalised inputs (ImageNet): rescale each image for display
        mn = imgs.min(axis=(1, 2, 3), keepdims=True)
        mx = imgs.max(axis=(1, 2, 3), keepdims=True)
        imgs = (imgs - mn) / np.where(mx > mn, mx - mn, 1)
    return np.clip(imgs, 0, 1)


def plot_heatmaps(
    images: Any,
    rows: Mapping[str, Any] | Sequence[tuple[str, Any]],
    path: str | Path,
    titles: Sequence[str] | None = None,
    cell: float = 1.1,
    percentile: float = 99.5,
    transpose: bool = False,
) -> Path:
    """A grid: the input `images`, then one row per entry of `rows` (name -> N×C×H×W attributions; None leaves
    it blank), one column per image. With `transpose`, one row per image and one column per entry (the paper's
    randomization figure: image, original map, then each step). Heatmaps use ``rulelang.heatmap`` (red +,
    blue −)."""
    from .heatmap import heatmap

    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    imgs = _display(images)
    n = len(imgs)
    n_rows, n_cols = (n, len(items) + 1) if transpose else (len(items) + 1, n)
    label = 0.3 if transpose else 1.5
    width, height = label + 0.1 + cell * n_cols, 0.3 + (0.5 if transpose else 0) + cell * n_rows
    fig = _figure(width, height)
    grid = fig.add_gridspec(
        n_rows,
        n_cols,
        left=label / width,
        right=0.99,
        top=1 - (0.6 if transpose else 0.25) / height,
        bottom=0.01,
        wspace=0.04,
        hspace=0.04,
    )

    def cell_at(row: int, col: int) -> Any:  # (entry row, image column) in the untransposed layout
        ax = fig.add_subplot(grid[col, row] if transpose else grid[row, col])
        ax.set_axis_off()
        return ax

    for j in range(n):
        ax = cell_at(0, j)
        ax.imshow(imgs[j], interpolation="nearest")
        if titles is not None and j < len(titles):
            ax.set_title(titles[j], fontsize=6)
    for i, (name, att) in enumerate(items, start=1):
        for j in range(n):
            ax = cell_at(i, j)
            if att is not None and j < len(att):
                ax.imshow(heatmap(np.asarray(att[j]), percentile=percentile), interpolation="nearest")
            if transpose and j == 0:
                ax.set_title(name, fontsize=6, rotation=30, ha="left", va="bottom", loc="left")
            elif not transpose and j == 0:
                ax.text(-0.08, 0.5, name, transform=ax.transAxes, ha="right", va="center", fontsize=7)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- sanity
def plot_randomization(results: Mapping[str, Mapping[str, Any] | None], path: str | Path, title: str = "") -> Path:
    """SSIM (and Spearman) after each randomization step, median with its interval, one line per rule
    (``{rule: randomization.to_dict()}``)."""
    fig = _figure(14, 5.5)
    ax_ssim, ax_rank = fig.subplots(1, 2, sharey=True)
    steps_all: list[str] = []
    for i, (rule, res) in enumerate(results.items()):
        steps = (res or {}).get("steps") or []
        if not steps:
            continue
        labels = ["original"] + [str(s.get("layer")) for s in steps]
        steps_all = labels if len(labels) > len(steps_all) else steps_all
        st = _style(i)
        xs = np.arange(len(labels))
        for ax, key in ((ax_ssim, "ssim"), (ax_rank, "spearman")):
            med = np.array(
                [1.0] + [s.get(f"{key}_median") if s.get(f"{key}_median") is not None else np.nan for s in steps], float
            )
            ax.plot(xs, med, label=rule, linewidth=1.2, **st)
            iv = [s.get(f"{key}_interval") for s in steps]
            if all(v is not None and len(v) == 2 and None not in v for v in iv):
                lo = np.array([1.0] + [v[0] for v in iv])
                hi = np.array([1.0] + [v[1] for v in iv])
                ax.fill_between(xs, lo, hi, color=st["color"], alpha=0.15)
    for ax, name in ((ax_ssim, "SSIM"), (ax_rank, "Spearman rank correlation of |attribution|")):
        ax.set_xticks(np.arange(len(steps_all)))
        ax.set_xticklabels(steps_all, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.set_title(f"{name} to the original map (median, 99 % interval)", fontsize=10)
        ax.set_xlabel("randomized from the output down to")
    handles, labels = ax_ssim.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.91, 0.5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(right=0.9, wspace=0.08)
    return _save(fig, path)


def plot_random_logit(
    results: Mapping[str, Mapping[str, Any] | None],
    path: str | Path,
    scores: Mapping[str, Any] | None = None,
    title: str = "",
) -> Path:
    """Random-logit SSIM per rule: a boxplot of the per-image scores in `scores` (rule -> array) where given,
    and the median with its interval (``random_logit.to_dict()``) for every rule."""
    found: dict[str, Mapping[str, Any]] = {r: res for r, res in results.items() if res}
    rules = [r for r, res in found.items() if res.get("ssim_median") is not None]
    fig = _figure(max(6.0, 0.45 * len(rules) + 2), 5)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.arange(1, len(rules) + 1)
    scores = scores or {}
    box = [(x, np.asarray(scores[r], float)) for x, r in zip(xs, rules) if r in scores and len(scores[r])]
    if box:
        ax.boxplot(
            [b[1] for b in box],
            positions=[b[0] for b in box],
            widths=0.6,
            showfliers=True,
            flierprops={"markersize": 2},
        )
    med = np.array([float(found[r]["ssim_median"]) for r in rules])
    iv = [found[r].get("ssim_interval") for r in rules]
    lo = np.array([v[0] if v and v[0] is not None else m for v, m in zip(iv, med)], float)
    hi = np.array([v[1] if v and v[1] is not None else m for v, m in zip(iv, med)], float)
    ax.errorbar(
        xs,
        med,
        yerr=[med - lo, hi - med],
        fmt="o",
        color="tab:red",
        markersize=4,
        capsize=3,
        label="median, 99 % interval",
    )
    ax.set_xticks(xs)
    ax.set_xticklabels(rules, rotation=70, ha="right", fontsize=7)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("SSIM(map for the true class, map for a random class)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title or "random-logit test (near 1: the map ignores the class)", fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------- report
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "rule"


def write_figures(report: Any, out: str | Path) -> dict[str, str]:
    """Every figure of `report` into ``out/figures``; returns {figure name: path relative to `out`}."""
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    model = report.meta.get("model", "")

    def rel(p: Path) -> str:
        return p.relative_to(out).as_posix()

    cscs = {r.rule: r.csc for r in report.rules if r.csc}
    if cscs:
        injections: list[str] = []
        for c in cscs.values():
            injections += [k for k in (c.get("injections") or {}) if k not in injections]
        for inj in injections:
            p = plot_csc(
                cscs,
                fig_dir / f"csc-{_slug(inj)}.png",
                injection=inj,
                title=f"{model}: CSC, random probes injected at {inj}",
            )
            figures[f"CSC (injected at {inj})"] = rel(p)
    heat = {r.rule: r.artifacts.get("heatmaps") for r in report.rules if r.artifacts.get("heatmaps") is not None}
    images = report.artifacts.get("images")
    if heat and images is not None:
        labels = report.artifacts.get("labels") or []
        preds = report.artifacts.get("predictions") or []
        titles = [f"label {a}, pred {b}" for a, b in zip(labels, preds)] if labels else None
        p = plot_heatmaps(images, heat, fig_dir / "heatmaps.png", titles=titles)
        figures["heatmaps"] = rel(p)
    rnd = {r.rule: (r.sanity or {}).get("randomization") for r in report.rules}
    rnd = {k: v for k, v in rnd.items() if v}
    if rnd:
        figures["cascading randomization"] = rel(
            plot_randomization(rnd, fig_dir / "randomization.png", title=f"{model}: parameter randomization")
        )
    rl = {r.rule: (r.sanity or {}).get("random_logit") for r in report.rules}
    rl = {k: v for k, v in rl.items() if v}
    if rl:
        scores = {
            r.rule: r.artifacts["random_logit_scores"]
            for r in report.rules
            if r.artifacts.get("random_logit_scores") is not None
        }
        figures["random-logit test"] = rel(
            plot_random_logit(rl, fig_dir / "random-logit.png", scores, title=f"{model}: random-logit test")
        )
    for r in report.rules:
        maps = r.artifacts.get("randomization")
        if maps and images is not None:
            k = min(len(images), *(len(m) for _, m in maps))
            p = plot_heatmaps(
                images[:k],
                [(str(step), m[:k]) for step, m in maps],
                fig_dir / f"randomization-{_slug(r.rule)}.png",
                transpose=True,
            )
            figures[f"{r.rule}: maps per randomization step"] = rel(p)
    return figures
