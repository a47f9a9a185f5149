"""Inputs of the `rulelang explain` pictures: picture files read and resized, built-in data for a model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["load_folder", "load_image", "prepare_inputs", "read_picture", "resize_crop"]


def load_image(path: str | os.PathLike, size: tuple[int, int]):
    """A picture file -> float32 3×H×W tensor in [0, 1] at `size` (grey is repeated, alpha dropped)."""
    import torch
    from skimage.transform import resize

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"image file not found: {path}")
    img = resize(read_picture(path), size, order=1, anti_aliasing=True)
    return torch.from_numpy(np.clip(img, 0, 1).astype(np.float32).transpose(2, 0, 1))


def prepare_inputs(info, images: Sequence[str] | None, data: str | None, n: int):
    """-> (model input N×C×H×W, display images N×3×H×W in [0, 1], column names, labels or None)."""
    import torch

    from . import IMAGENET_MEAN, IMAGENET_STD, builtin_data, sample_images

    c, h, w = info.input_shape
    labels = None
    if images:
        display = torch.stack([load_image(p, (h, w)) for p in images])
        names = [Path(p).name for p in images]
    else:
        if n < 1:
            raise UsageError(f"-n must be at least 1, got {n}")
        if data in ("digits", "digits-rgb"):
            if info.data is None or not info.data.startswith("digits"):
                raise UsageError(
                    f"--data {data} needs a digits model (digits-cnn, digits-resnet), "
                    f"not {info.name}; use --data samples or --image"
                )
            x, y = builtin_data(info.data, "test")
            if n > len(x):
                raise UsageError(f"-n {n} is more than the {len(x)} test digits")
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def read_picture(path: Path) -> np.ndarray:
    """A picture file -> H×W×3 float64 in [0, 1] (grey is repeated, alpha dropped)."""
    try:
        import skimage.io

        img = np.asarray(skimage.io.imread(str(path)))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot read image {path}: {msg}") from None
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    elif img.ndim == 3 and img.shape[-1] in (2, 4):  # grey+alpha, RGBA
        img = img[..., :-1]
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, -1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise UsageError(f"cannot use image {path}: shape {list(img.shape)} is not a 2-D grey or RGB picture")
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
        raise UsageError(f"image folder not found: {folder}")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UsageError(f"no pictures in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    c, h, w = info.input_shape
    imgs = np.stack([resize_crop(read_picture(p), (h, w)) for p in files]).transpose(0, 3, 1, 2)
    x = torch.from_numpy(imgs.astype(np.float32))
    if c == 1:
        x = x.mean(1, keepdim=True)
    if info.normalize == "imagenet":
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x.contiguous(), [p.name for p in files]
