"""SmoothGrad and Integrated Gradients wrappers (rulelang.compiler.wrappers) around compiled explainers."""

import pytest
import torch

from rulelang.compiler.wrappers import integrated, smoothgrad
from rulelang.errors import ExplainError
from tests.helpers import rule_oracles as O
from tests.helpers import toy_nets


@pytest.fixture(scope="module")
def toy():
    import rulelang

    net = toy_nets.cnn(seed=5)
    x = toy_nets.inputs(3, seed=5)
    t = O.labels(net, x)
    return net, x, t, rulelang.compile(net, "gradient", example_input=x)


def _grad(net, x, t):
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xx).gather(1, t[:, None]).sum(), xx)
    return g


def test_smoothgrad_without_noise_is_the_explainer(toy):
    net, x, t, g = toy
    torch.testing.assert_close(smoothgrad(g, x, t, n=4, sigma=0.0), g(x, target=t))


def test_smoothgrad_is_the_mean_over_noisy_copies(toy):
    net, x, t, g = toy
    n, sigma = 6, 0.2
    out = smoothgrad(g, x, t, n=n, sigma=sigma, generator=torch.Generator().manual_seed(0))
    noise = torch.randn((n,) + tuple(x.shape), generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    rng = (x.flatten(1).max(1).values - x.flatten(1).min(1).values).reshape(-1, 1, 1, 1)
    expect = torch.stack([_grad(net, x + sigma * rng * noise[k], t) for k in range(n)]).mean(0)
    torch.testing.assert_close(out, expect)
    chunked = smoothgrad(g, x, t, n=n, sigma=sigma, generator=torch.Generator().manual_seed(0), batch_size=4)
    torch.testing.assert_close(chunked, out)


def test_smoothgrad_target_none_uses_the_clean_prediction(toy):
    net, x, t, g = toy
    a = smoothgrad(g, x, None, n=3, sigma=0.1, generator=torch.Generator().manual_seed(1))
    b = smoothgrad(g, x, t, n=3, sigma=0.1, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_integrated_gradients_matches_captum(toy):
    """captum IntegratedGradients with its Riemann-right points equals ours with method="right"."""
    from captum.attr import IntegratedGradients

    net, x, t, g = toy
    ours = integrated(g, x, t, steps=16, method="right")
    theirs = IntegratedGradients(net).attribute(x, target=t, n_steps=16, method="riemann_right")
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("method", ["right", "left", "middle", "trapezoid"])
def test_integrated_gradients_is_complete(toy, method):
    """Completeness: the attributions add up to f(x) - f(baseline) as the number of steps grows."""
    net, x, t, g = toy
    base = 0.1 * torch.ones_like(x)
    a = integrated(g, x, t, steps=400, baseline=base, method=method, batch_size=300)
    with torch.no_grad():
        delta = (net(x) - net(base)).gather(1, t[:, None]).squeeze(1)
    torch.testing.assert_close(a.flatten(1).sum(1), delta, rtol=2e-2, atol=2e-2)


def test_integrated_gradients_of_a_linear_model_is_exact():
    import rulelang

    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    g = rulelang.compile(lin, "gradient", example_input=x)
    t = torch.tensor([0, 2])
    w = lin[1].weight[t].reshape(x.shape).detach()
    torch.testing.assert_close(integrated(g, x, t, steps=3), x * w)
    torch.testing.assert_close(
        integrated(g, x, 1, steps=3, baseline=1.0), (x - 1) * lin[1].weight[1].reshape(1, 3, 2, 2).detach()
    )


def test_wrappers_reject_bad_counts(toy):
    net, x, t, g = toy
    with pytest.raises(ExplainError, match="n >= 1"):
        smoothgrad(g, x, t, n=0)
    with pytest.raises(ExplainError, match="steps >= 1"):
        integrated(g, x, t, steps=0)
    with pytest.raises(ExplainError, match="unknown Riemann method"):
        integrated(g, x, t, method="simpson")
