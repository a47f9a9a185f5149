"""Natural photos bundled with scikit-image, resized and ImageNet-normalised for torchvision models."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from ..lang.diagnostics import closest

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SAMPLE_IMAGES", "denormalize", "sample_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: photos bundled with scikit-image (`skimage.data.<name>`), in the default order of `sample_images()`
SAMPLE_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")


def _hint(name: str) -> str:
    best = closest(name, SAMPLE_IMAGES)
    return f" (did you mean {best!r}?)" if best else ""


def _load_sample(name: str) -> np.ndarray:
    import skimage.data

    if name not in SAMPLE_IMAGES:
        extra = getattr(skimage.data, name, None)
        if not callable(extra):
            raise DataError(
                f"unknown sample image {name!r}{_hint(name)}; "
                f"available: {', '.join(SAMPLE_IMAGES)} (or another skimage.data RGB image)"
            )
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


@functools.lru_cache(maxsize=32)
def _resized_sample(name: str, size: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    image = _load_sample(name)
    out = resize(image, size, order=1, anti_aliasing=True, preserve_range=True) / 255.0
    return np.clip(out, 0.0, 1.0).astype(np.float32).transpose(2, 0, 1)  # 3×H×W in [0, 1]


def sample_images(names: Sequence[str] | None = None, size: int | tuple[int, int] = 224, normalize: bool = True):
    """Natural photos bundled with scikit-image as ``(images, names)``.

    `names` defaults to :data:`SAMPLE_IMAGES` (astronaut, coffee, chelsea, rocket); `size` is an int (square) or
    (H, W); images are resized whole (no crop, like the paper's 224×224 ImageNet inputs). With `normalize`
    (default) the RGB values in [0, 1] are standardised with the ImageNet mean/std that torchvision models
    expect; with ``normalize=False`` they stay in [0, 1]. Returns a float32 N×3×H×W tensor and the list of names.
    """
    import torch

    names = list(SAMPLE_IMAGES if names is None else ([names] if isinstance(names, str) else names))
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    batch = torch.from_numpy(np.stack([_resized_sample(n, hw) for n in names]))
    if normalize:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        batch = (batch - mean) / std
    return batch, names


def denormalize(images, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """Undo the ImageNet normalisation of :func:`sample_images` (for display): values back in [0, 1]."""
    import torch

    images = torch.as_tensor(images)
    shape = (1, -1, 1, 1) if images.dim() == 4 else (-1, 1, 1)
    return (images * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)).clamp(0.0, 1.0)
