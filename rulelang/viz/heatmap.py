"""Attribution heatmaps with the paper's visual normalisation (research/paper.md §4.1, ``normalize_visual``).

rgb = rulelang.heatmap(attribution[0])            # H×W×3 float in [0, 1], red = positive, blue = negative
rgbs = rulelang.heatmap(attribution)              # a batch: N×H×W×3, one picture per sample
"""

from __future__ import annotations

import numpy as np

from ..errors import RulelangError

__all__ = ["heatmap", "normalize_visual", "reduce_channels"]


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().float().numpy()
    return np.asarray(a, dtype=np.float64)


def reduce_channels(attribution, reduce: str = "sum") -> np.ndarray:
    """One attribution (H×W, C×H×W or 1×C×H×W) -> H×W, channels reduced by `reduce` ("sum", "mean",
    "abs-sum", "norm"). For a batch, index it first or call `heatmap` (one picture per sample)."""
    a = _to_numpy(attribution)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        return a
    if a.ndim != 3:
        raise RulelangError(
            f"heatmap needs one attribution of shape H×W or C×H×W, got shape {list(a.shape)} "
            f"(index a batch first: attribution[i])"
        )
    if reduce == "sum":
        return a.sum(0)
    if reduce == "mean":
        return a.mean(0)
    if reduce == "abs-sum":
        return np.abs(a).sum(0)
    if reduce == "norm":
        return np.sqrt((a**2).sum(0))
    raise RulelangError(f"unknown channel reduction {reduce!r}: use sum, mean, abs-sum or norm")


def normalize_visual(a, percentile: float = 99.5) -> np.ndarray:
    """Scale a 2-D map into [-1, 1], positive and negative parts separately.

    The positive part is divided by the `percentile`-th percentile of the positive values, the negative part by
    that of the magnitudes of the negative values; both are clipped to 1. So the strongest positive and the
    strongest negative evidence both reach full colour even when one sign is much larger than the other, and a
    few extreme pixels (above the percentile) do not wash out the rest. A part that is all zero stays zero.
    """
    a = np.asarray(a, dtype=np.float64)
    if not 0 < percentile <= 100:
        raise RulelangError(f"percentile must be in (0, 100], got {percentile}")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    out = np.zeros_like(a)
    for sign in (1.0, -1.0):
        part = np.clip(sign * a, 0.0, None)
        values = part[part > 0]
        if values.size:
            scale = np.percentile(values, percentile)
            out += sign * np.clip(part / scale, 0.0, 1.0)
    return out


def heatmap(
    attribution,
    cmap: str = "bwr",
    percentile: float = 99.5,
    reduce: str = "sum",
    image=None,
    alpha: float = 0.0,
    dtype: str = "float",
) -> np.ndarray:
    """An RGB picture of one attribution, normalised as in Sixt et al. 2020 (research/paper.md §4.1,
    ``normalize_visual``): positive and negative parts scaled separately by their `percentile`-th percentile.

    Args:
        attribution: H×W or C×H×W (torch or numpy; a leading batch dimension of 1 is dropped). A batch
            (N×C×H×W with N > 1) gives one picture per sample, each normalised on its own.
        cmap: matplotlib colormap with 0 at its centre; with "bwr"/"seismic" positive is red, negative blue and
            zero white.
        percentile: the percentile of each sign's magnitudes that maps to full colour (values clipped to [-1, 1]).
        reduce: how channels are reduced to one map: "sum", "mean", "abs-sum" or "norm".
        image: H×W×3 or 3×H×W in [0, 1] (or a batch of N) blended underneath when ``alpha > 0``:
            ``alpha * grey(image) + (1 - alpha) * heat``.
        alpha: weight of `image` in the blend.
        dtype: "float" (float64 in [0, 1]) or "uint8".

    Returns:
        H×W×3 (or N×H×W×3) RGB array. Non-finite values are drawn as zero (see `normalize_visual`).

    Raises:
        RulelangError: an attribution of unusable shape (or an empty batch), an unknown `reduce`.
    """
    import matplotlib

    batch = _to_numpy(attribution)
    if batch.ndim == 4 and batch.shape[0] != 1:
        if batch.shape[0] == 0:
            raise RulelangError("heatmap got an empty batch (shape [0, ...])")
        imgs = None if image is None else _to_numpy(image)
        per_sample = imgs is not None and imgs.ndim == 4
        if per_sample and len(imgs) != len(batch):  # type: ignore[arg-type]
            raise RulelangError(f"{len(imgs)} images for a batch of {len(batch)} attributions")  # type: ignore[arg-type]
        return np.stack(
            [
                heatmap(a, cmap, percentile, reduce, imgs[i] if per_sample else imgs, alpha, dtype)  # type: ignore[index]
                for i, a in enumerate(batch)
            ]
        )
    a = normalize_visual(reduce_channels(batch, reduce), percentile)
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise RulelangError(f"unknown matplotlib colormap {cmap!r}") from None
    rgb = colormap((a + 1.0) / 2.0)[..., :3]
    if image is not None and alpha > 0:
        img = _to_numpy(image)
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = img.transpose(1, 2, 0)
        grey = img.mean(-1, keepdims=True) if img.ndim == 3 else img[..., None]
        if grey.shape[:2] != rgb.shape[:2]:
            raise RulelangError(
                f"image size {list(grey.shape[:2])} differs from the attribution's {list(rgb.shape[:2])}"
            )
        rgb = alpha * np.clip(grey, 0, 1) + (1 - alpha) * rgb
    rgb = np.clip(rgb, 0.0, 1.0)
    if dtype == "uint8":
        return (rgb * 255 + 0.5).astype(np.uint8)
    if dtype != "float":
        raise RulelangError(f"dtype must be 'float' or 'uint8', got {dtype!r}")
    return rgb
