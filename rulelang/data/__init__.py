"""Built-in data that ships with the dependencies (nothing is downloaded).

- :func:`builtin_data` — scikit-learn's bundled handwritten digits (8×8, 1797 images), upsampled to 32×32, in a
  grey-scale (``"digits"``) and an RGB (``"digits-rgb"``) variant, with a fixed, seeded train/test split.
- :func:`sample_images` — natural photos bundled with scikit-image, resized and ImageNet-normalised for
  torchvision models.
"""

from __future__ import annotations

from ..errors import DataError
from .digits import DATASETS, builtin_data, colorize, random_colors
from .images import IMAGENET_MEAN, IMAGENET_STD, SAMPLE_IMAGES, denormalize, sample_images

__all__ = [
    "DATASETS",
    "DataError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAMPLE_IMAGES",
    "builtin_data",
    "colorize",
    "denormalize",
    "random_colors",
    "sample_images",
]
