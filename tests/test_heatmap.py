"""rulelang.heatmap: channel reduction, the separate positive/negative percentile scaling, colours."""

import matplotlib
import numpy as np
import pytest
import torch

import rulelang
from rulelang.errors import RulelangError
from rulelang.viz.heatmap import heatmap, normalize_visual, reduce_channels

RED = np.array(matplotlib.colormaps["bwr"](1.0)[:3])
BLUE = np.array(matplotlib.colormaps["bwr"](0.0)[:3])
WHITE = np.array(matplotlib.colormaps["bwr"](0.5)[:3])


def test_public_api():
    assert rulelang.heatmap is heatmap


def test_shape_range_and_dtype():
    a = torch.randn(3, 20, 30, generator=torch.Generator().manual_seed(0))
    h = heatmap(a)
    assert h.shape == (20, 30, 3) and h.dtype == np.float64
    assert h.min() >= 0 and h.max() <= 1
    u = heatmap(a, dtype="uint8")
    assert u.dtype == np.uint8 and u.shape == (20, 30, 3)
    assert np.abs(u.astype(float) / 255 - h).max() < 1 / 255 + 1e-9
    assert heatmap(a[None]).shape == (20, 30, 3)  # a batch of one is accepted
    assert heatmap(a.numpy()[0]).shape == (20, 30, 3)  # H×W numpy


def test_channels_are_summed():
    a = torch.zeros(3, 4, 4)
    a[0, 0, 0], a[1, 0, 0], a[2, 0, 0] = 2.0, -1.0, -0.5  # sums to +0.5: positive
    a[0, 1, 1], a[1, 1, 1] = 1.0, -3.0  # sums to -2: negative
    r = reduce_channels(a)
    assert r[0, 0] == pytest.approx(0.5) and r[1, 1] == pytest.approx(-2.0)
    h = heatmap(a)
    assert np.allclose(h[0, 0], RED) and np.allclose(h[1, 1], BLUE) and np.allclose(h[2, 2], WHITE)


def test_positive_and_negative_scaled_separately():
    rng = np.random.default_rng(0)
    a = np.zeros((40, 40))
    a[:20] = rng.uniform(0, 1000, (20, 40))  # huge positive evidence
    a[20:] = -rng.uniform(0, 1, (20, 40))  # tiny negative evidence
    n = normalize_visual(a, 99.5)
    assert n.max() == pytest.approx(1.0) and n.min() == pytest.approx(-1.0)
    # a joint scaling would squash the negatives to ~-0.001; separately, they span [-1, 0]
    assert np.median(n[20:]) < -0.3 and np.median(n[:20]) > 0.3
    assert np.all(np.sign(n) == np.sign(a))


def test_percentile_clips_outliers():
    a = np.linspace(0.01, 1, 10000).reshape(100, 100)
    a[0, 0] = 1e6  # one extreme pixel
    n = normalize_visual(a, 99.5)
    assert n[0, 0] == 1.0
    assert n[50, 50] == pytest.approx(a[50, 50] / np.percentile(a, 99.5), rel=1e-6)
    assert n[50, 50] > 0.4  # not washed out by the outlier
    assert normalize_visual(a, 100)[50, 50] < 1e-5 + a[50, 50] / 1e6
    # with p = 100 the largest value maps exactly to 1
    assert normalize_visual(np.array([[1.0, 2.0, -4.0, -1.0]]), 100).tolist() == [[0.5, 1.0, -1.0, -0.25]]


def test_all_zero_and_one_sign_maps():
    assert np.allclose(heatmap(np.zeros((5, 5))), WHITE)
    h = heatmap(np.abs(np.random.default_rng(1).normal(size=(8, 8))) + 0.1)
    assert np.all(h[..., 0] >= h[..., 2])  # all reddish, nothing blue
    assert np.isfinite(heatmap(np.array([[np.nan, 1.0], [-np.inf, -1.0]]))).all()


def test_other_colormap_and_overlay():
    a = np.array([[1.0, -1.0]])
    h = heatmap(a, cmap="seismic")
    assert np.allclose(h[0, 0], matplotlib.colormaps["seismic"](1.0)[:3])
    img = np.zeros((1, 2, 3))
    o = heatmap(a, image=img, alpha=0.5)
    assert np.allclose(o, 0.5 * heatmap(a))


def test_errors():
    with pytest.raises(RulelangError, match="C×H×W"):
        heatmap(np.zeros((2, 2, 3, 4, 5)))
    with pytest.raises(RulelangError, match="empty batch"):
        heatmap(np.zeros((0, 3, 4, 5)))
    with pytest.raises(RulelangError, match="3 images for a batch of 2"):
        heatmap(np.zeros((2, 3, 4, 5)), image=np.zeros((3, 3, 4, 5)), alpha=0.5)
    with pytest.raises(RulelangError, match="colormap"):
        heatmap(np.zeros((4, 4)), cmap="no-such-map")
    with pytest.raises(RulelangError, match="percentile"):
        heatmap(np.zeros((4, 4)), percentile=0)


def test_a_batch_gives_one_picture_per_sample():
    """`rulelang.heatmap(attribution)` on a batch N×C×H×W: N×H×W×3, each sample normalised on its own."""
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, 3, 8, 9))
    batch[1] *= 1000.0  # a sample with a much larger scale does not wash out the others
    out = heatmap(batch)
    assert out.shape == (3, 8, 9, 3)
    for i in range(3):
        assert np.allclose(out[i], heatmap(batch[i]))
    images = rng.uniform(size=(3, 3, 8, 9))
    blended = heatmap(batch, image=images, alpha=0.5, dtype="uint8")
    assert blended.shape == (3, 8, 9, 3) and blended.dtype == np.uint8
    assert np.array_equal(blended[2], heatmap(batch[2], image=images[2], alpha=0.5, dtype="uint8"))
