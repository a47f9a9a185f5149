"""Built-in data: the sklearn digits (grey and RGB) and the scikit-image sample photos."""

import numpy as np
import pytest
import torch

import rulelang
from rulelang.data import IMAGENET_MEAN, IMAGENET_STD, builtin_data, denormalize, sample_images
from rulelang.errors import RulelangError


@pytest.mark.parametrize("name,channels", [("digits", 1), ("digits-rgb", 3)])
def test_shapes_dtypes_range(name, channels):
    x, y = builtin_data(name, split="test")
    assert x.shape == (360, channels, 32, 32) and x.dtype == torch.float32
    assert y.shape == (360,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.max() > 0.9  # real ink, not a blank tensor
    assert sorted(y.unique().tolist()) == list(range(10))
    assert torch.bincount(y).min() >= 34  # stratified: every class ~36 times


def test_split_sizes_disjoint_and_deterministic():
    xtr, ytr = builtin_data("digits", "train")
    xte, yte = builtin_data("digits", "test")
    xall, yall = builtin_data("digits", "all")
    assert len(xtr) == 1437 and len(xte) == 360 and len(xall) == 1797
    # no test image also appears in train
    tr = {bytes(a.numpy().tobytes()) for a in xtr}
    assert sum(bytes(a.numpy().tobytes()) in tr for a in xte) <= 2  # (sklearn has a few duplicates)
    x2, y2 = builtin_data("digits", "test")
    assert torch.equal(xte, x2) and torch.equal(yte, y2)
    # upsampled from sklearn's 8x8 originals: down-sampling back approximately recovers them
    from sklearn.datasets import load_digits

    orig = torch.from_numpy(load_digits().images / 16.0).float()
    back = torch.nn.functional.avg_pool2d(xall, 4)[:, 0]
    assert torch.corrcoef(torch.stack([back.flatten(), orig.flatten()]))[0, 1] > 0.95
    assert torch.equal(yall, torch.from_numpy(load_digits().target))


def test_rgb_is_a_colouring_of_the_grey_digits():
    grey, y1 = builtin_data("digits", "test")
    rgb, y2 = builtin_data("digits-rgb", "test")
    assert torch.equal(y1, y2)
    # every pixel is bg * (1 - ink) + fg * ink: each channel is an affine function of the grey image
    for i in range(0, 360, 37):
        g = grey[i, 0].flatten()
        for c in range(3):
            ch = rgb[i, c].flatten()
            slope, intercept = np.polyfit(g.numpy(), ch.numpy(), 1)
            assert np.allclose(slope * g.numpy() + intercept, ch.numpy(), atol=1e-4)
    # colours differ between images and between channels (channel cosine similarity is meaningful)
    corners = rgb[:, :, 0, 0]  # background colour of each image
    assert corners.std(0).min() > 0.1
    assert not torch.allclose(rgb[:, 0], rgb[:, 1])
    # ink is brighter than background in luminance
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    lum = (rgb * luma).sum(1)
    g = grey[:, 0].flatten(1)
    darkest, brightest = g.argmin(1), g.argmax(1)
    gap = lum.flatten(1).gather(1, brightest[:, None]) - lum.flatten(1).gather(1, darkest[:, None])
    ink = g.max(1).values - g.min(1).values
    assert (gap[:, 0] >= 0.4 * ink - 1e-4).all()


def test_cached_but_returns_copies():
    x, _ = builtin_data("digits-rgb", "test")
    x.zero_()
    x2, _ = builtin_data("digits-rgb", "test")
    assert x2.abs().sum() > 0


def test_public_api_and_errors():
    assert rulelang.builtin_data is builtin_data and rulelang.sample_images is sample_images
    with pytest.raises(RulelangError, match="did you mean 'digits'"):
        builtin_data("digit")
    with pytest.raises(RulelangError, match="unknown split"):
        builtin_data("digits", split="validation")


def test_sample_images():
    x, names = sample_images()
    assert names == ["astronaut", "coffee", "chelsea", "rocket"]
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    # ImageNet-normalised: undoing it gives values in [0, 1] that are not all the same
    raw, _ = sample_images(normalize=False)
    assert 0 <= raw.min() and raw.max() <= 1 and raw.std() > 0.1
    expected = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)
    assert torch.allclose(denormalize(x), raw, atol=1e-5)
    # the astronaut photo: her suit is brighter than the dark space background on the left
    assert raw[0].mean() > 0.2
    small, n2 = sample_images(["chelsea"], size=(64, 96))
    assert small.shape == (1, 3, 64, 96) and n2 == ["chelsea"]
    with pytest.raises(RulelangError, match="did you mean 'coffee'"):
        sample_images(["cofee"])
