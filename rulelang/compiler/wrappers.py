"""SmoothGrad and Integrated Gradients around any explainer, built only on its public call
`explainer(x, target=...)`.

Both evaluate the explainer on many inputs at once: the copies are stacked along the batch axis and sent in
chunks of `batch_size` rows (default: all at once), instead of a Python loop over samples.

    from rulelang.compiler.wrappers import smoothgrad, integrated
    g = rulelang.compile(model, "gradient", example_input=x)
    sg = smoothgrad(g, x, target, n=50, sigma=0.15)          # the paper's SmoothGrad setting
    ig = integrated(g, x, target, steps=32)                   # Sundararajan et al. 2017
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import ExplainError
from ..types import Target
from .guards import normalize_target

Explainer = Callable[..., torch.Tensor]


def _targets(explainer: Any, x: torch.Tensor, target: Any) -> torch.Tensor:
    """The explained class per sample as a long tensor of shape (batch,); None means the model's argmax at x.

    Targets are checked like the explainer's own (`guards.normalize_target`): integers only, negative ones
    counting from the end; anything else is an ExplainError."""
    if target is None:
        return explainer.explain(x, None).output.argmax(1)
    classes = getattr(explainer, "num_classes", None)
    if classes is None:
        classes = explainer.explain(x[:1], None).output.shape[1]
    t = normalize_target(target, x.shape[0], classes)
    if isinstance(t, int):
        return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    return t.to(x.device).clone()  # type: ignore[union-attr]


def _batched(explainer: Explainer, xs: torch.Tensor, ts: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    step = xs.shape[0] if not batch_size else max(1, int(batch_size))
    parts = [explainer(xs[i : i + step], target=ts[i : i + step]) for i in range(0, xs.shape[0], step)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def smoothgrad(
    explainer: Explainer,
    x: torch.Tensor,
    target: Target = None,
    *,
    n: int = 50,
    sigma: float = 0.15,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"): the mean of the
    explanations of `n` noisy copies of each sample.

    Works with any explainer, so "smoothed LRP" is ``smoothgrad(rulelang.compile(model, "lrp-epsilon", ...), x)``.

    Args:
        explainer: a compiled explainer (``rulelang.compile``).
        x: the input batch, N×... .
        target: the class(es) to explain (see :data:`rulelang.types.Target`); None explains the class the model
            predicts for the clean input (the same class for every noisy copy).
        n: number of noisy copies per sample (the paper: 50).
        sigma: noise standard deviation relative to each sample's input range, ``sigma * (max(x_k) - min(x_k))``
            (the paper: 0.15).
        batch_size: at most this many noisy rows per explainer call (None: all at once).
        generator: a torch generator, to make the noise reproducible.

    Returns:
        The averaged attribution, same shape as `x`.

    Raises:
        ExplainError: ``n < 1``, or a bad target or input (as the explainer raises them).
    """
    if n < 1:
        raise ExplainError(f"smoothgrad needs n >= 1 noisy samples, got {n}")
    t = _targets(explainer, x, target)
    b = x.shape[0]
    flat = x.reshape(b, -1)
    scale = (sigma * (flat.max(1).values - flat.min(1).values)).reshape((1, b) + (1,) * (x.dim() - 1))
    noise = torch.randn(
        (n,) + tuple(x.shape),
        generator=generator,
        dtype=x.dtype,
        device=x.device if generator is None else generator.device,
    ).to(x.device)
    xs = (x.unsqueeze(0) + scale * noise).reshape((n * b,) + tuple(x.shape[1:]))
    ts = t.repeat(n)
    out = _batched(explainer, xs, ts, batch_size)
    return out.reshape((n, b) + tuple(out.shape[1:])).mean(0)


def integrated(
    explainer: Explainer,
    x: torch.Tensor,
    target: Target = None,
    *,
    steps: int = 32,
    baseline: torch.Tensor | float | None = None,
    method: str = "right",
    batch_size: int | None = None,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017, "Axiomatic attribution for deep networks"):
    ``(x - baseline) * mean_k explainer(baseline + a_k (x - baseline))``, a Riemann sum over `steps` points a_k of
    [0, 1].

    Use it with a gradient-type explainer whose `final:` is `R` (e.g. "gradient"); wrapping one that already
    multiplies by its input (gradient-x-input) would multiply twice.

    Args:
        explainer: a compiled explainer (``rulelang.compile``).
        x: the input batch, N×... .
        target: the class(es) to explain (see :data:`rulelang.types.Target`); None explains the class predicted
            at `x`.
        steps: number of points on the path.
        baseline: a tensor like `x`, a number, or None (zeros).
        method: where the points lie: "right" (a_k = k / steps, zennit's choice), "left", "middle" or
            "trapezoid" (both ends, half weight).
        batch_size: at most this many path points × samples per explainer call (None: all at once).

    Returns:
        The attribution, same shape as `x`.

    Raises:
        ExplainError: ``steps < 1``, an unknown `method`, or a bad target or input.
    """
    if steps < 1:
        raise ExplainError(f"integrated needs steps >= 1, got {steps}")
    t = _targets(explainer, x, target)
    base = (
        torch.zeros_like(x)
        if baseline is None
        else torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    )
    k = torch.arange(steps + (1 if method == "trapezoid" else 0), dtype=x.dtype, device=x.device)
    if method == "right":
        alphas, weights = (k + 1) / steps, torch.full_like(k, 1.0 / steps)
    elif method == "left":
        alphas, weights = k / steps, torch.full_like(k, 1.0 / steps)
    elif method == "middle":
        alphas, weights = (k + 0.5) / steps, torch.full_like(k, 1.0 / steps)
    elif method == "trapezoid":
        alphas = k / steps
        weights = torch.full_like(k, 1.0 / steps)
        weights[0] = weights[-1] = 0.5 / steps
    else:
        raise ExplainError(f"unknown Riemann method {method!r}; use right, left, middle or trapezoid")
    m, b = alphas.shape[0], x.shape[0]
    shape = (m, 1) + (1,) * (x.dim() - 1)
    xs = (base.unsqueeze(0) + alphas.reshape(shape) * (x - base).unsqueeze(0)).reshape((m * b,) + tuple(x.shape[1:]))
    out = _batched(explainer, xs, t.repeat(m), batch_size)
    avg = (out.reshape((m, b) + tuple(out.shape[1:])) * weights.reshape(shape)).sum(0)
    return (x - base) * avg
