"""The built-in digits data sets: scikit-learn's bundled handwritten digits (8×8, 1797 images), upsampled to
32×32, in a grey-scale (``"digits"``) and an RGB (``"digits-rgb"``) variant, with a fixed, seeded train/test split."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from ..lang.diagnostics import closest

__all__ = ["DATASETS", "SPLITS", "builtin_data", "colorize", "random_colors"]

#: dataset name -> one-line description
DATASETS: dict[str, str] = {
    "digits": "sklearn handwritten digits, 1×32×32, values in [0, 1] (0 = background)",
    "digits-rgb": "sklearn handwritten digits in seeded random colours, 3×32×32, values in [0, 1]",
}
SPLITS = ("train", "test", "all")
IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0
COLOR_SEED = 1234
#: the least luminance difference (values in [0, 1]) by which a digit's ink is brighter than its background
MIN_LUMINANCE_GAP = 0.4
_LUMA = np.array([0.299, 0.587, 0.114])


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    best = closest(name, choices)
    return f" (did you mean {best!r}?)" if best else ""


@functools.cache
def _grey_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 N×32×32 in [0, 1] and int64 labels (cached)."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # N×1×8×8 in [0, 1]
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    grey = images.clamp_(0.0, 1.0)[:, 0].numpy()
    return np.ascontiguousarray(grey), bunch.target.astype(np.int64)


@functools.cache
def _split_indices() -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, labels = _grey_digits()
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    return {"train": np.sort(train), "test": np.sort(test), "all": idx}


def random_colors(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` (foreground, background) RGB colour pairs, uniform in [0, 1]³ subject to the foreground (ink) being
    brighter than the background by at least `MIN_LUMINANCE_GAP` in luminance (rejection sampling)."""
    fg = np.empty((n, 3), np.float32)
    bg = np.empty((n, 3), np.float32)
    for i in range(n):
        while True:
            a, b = rng.random(3), rng.random(3)
            if (a - b) @ _LUMA >= MIN_LUMINANCE_GAP:
                break
        fg[i], bg[i] = a, b
    return fg, bg


def colorize(grey, fg, bg):
    """Paint grey-scale digits (N×H×W or N×1×H×W, ink in [0, 1]) as ``bg * (1 - ink) + fg * ink``.

    `fg`, `bg`: N×3 colours in [0, 1] (numpy or torch). Returns float32 N×3×H×W in [0, 1] (torch tensor).
    """
    import torch

    grey = torch.as_tensor(grey, dtype=torch.float32)
    if grey.dim() == 3:
        grey = grey[:, None]
    fg = torch.as_tensor(fg, dtype=torch.float32)[:, :, None, None]
    bg = torch.as_tensor(bg, dtype=torch.float32)[:, :, None, None]
    return bg * (1.0 - grey) + fg * grey


@functools.cache
def _rgb_digits() -> np.ndarray:
    grey, _ = _grey_digits()
    fg, bg = random_colors(len(grey), np.random.default_rng(COLOR_SEED))
    return np.ascontiguousarray(colorize(grey, fg, bg).numpy())


def builtin_data(name: str = "digits", split: str = "test"):
    """A built-in dataset as ``(images, labels)``: float32 N×C×32×32 and int64 N tensors.

    Both datasets come from ``sklearn.datasets.load_digits`` (bundled with scikit-learn, no download); the RGB
    variant gives the paper's per-pixel channel cosine similarity (Sixt et al. 2020, §3.1) something to measure.

    Args:
        name: ``"digits"``: 1×32×32 grey-scale; the 8×8 originals (ink 0..16) divided by 16 and upsampled
            bilinearly, values in [0, 1], 0 = background. ``"digits-rgb"``: 3×32×32; each digit painted as
            ``bg * (1 - ink) + fg * ink`` with its own seeded random foreground and background colour (the ink at
            least 0.4 brighter in luminance), values in [0, 1]. The built-in digits models take this input as is.
        split: ``"train"`` (1437 images), ``"test"`` (360) or ``"all"`` (1797): a fixed, stratified split
            (`train_test_split(random_state=0)`, 20 % test), identical on every machine.

    Returns:
        ``(images, labels)``, fresh copies of arrays cached in memory (callers may modify them).

    Raises:
        DataError: an unknown dataset (with a did-you-mean) or split.
    """
    import torch

    if name not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r}{_did_you_mean(name, list(DATASETS))}; available: {', '.join(DATASETS)}"
        )
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}: use one of {', '.join(SPLITS)}")
    grey, labels = _grey_digits()
    idx = _split_indices()[split]
    images = grey[idx][:, None] if name == "digits" else _rgb_digits()[idx]
    return torch.from_numpy(np.array(images, dtype=np.float32)), torch.from_numpy(labels[idx].copy())
