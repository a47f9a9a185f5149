"""Numerical Jacobians of relevance maps (test helper): propagate unit vectors through an explainer, batched."""

from __future__ import annotations

from typing import Any

import torch


def _streams(r: Any) -> list[torch.Tensor]:
    return list(r.values()) if isinstance(r, dict) else [r]


def jacobians(ex: Any, x: torch.Tensor, at: str, max_rows: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """{node: J} where J[k] is the relevance kept at the node's output (all streams stacked) when a unit vector
    is injected at `at`'s output, for the single sample `x` (1, ...): every unit vector, or `max_rows` of them
    drawn at random when the output is larger."""
    shape = ex.graph.op(at).shape[1:]
    n = int(torch.tensor(shape).prod()) if shape else 1
    rows = (
        torch.arange(n)
        if n <= max_rows
        else torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows]
    )
    k = len(rows)
    xs = x.expand(k, *x.shape[1:]).clone()
    eye = torch.zeros(k, n, dtype=x.dtype)
    eye[torch.arange(k), rows] = 1.0
    eye = eye.reshape(k, *shape)
    out = ex.propagate(xs, at=at, relevance=eye, keep="all")
    return {n: torch.stack(_streams(r)).transpose(0, 1).reshape(k, -1) for n, r in out.relevances.items()}


def worst_negative(j: torch.Tensor) -> float:
    """The most negative entry relative to the largest magnitude (0 when all entries are >= 0)."""
    j = j[torch.isfinite(j)]
    if j.numel() == 0:
        return 0.0
    scale = j.abs().max()
    return 0.0 if scale == 0 else float((j.min() / scale).clamp(max=0))


def _amax(t: torch.Tensor, ok: torch.Tensor) -> float:
    t = t[ok]
    return float(t.abs().max()) if t.numel() else 0.0


def linearity_error(ex: Any, x: torch.Tensor, at: str, seed: int = 0) -> float:
    """max |f(aR1 + bR2) - a f(R1) - b f(R2)| / max |f| over every kept relevance, for random R1, R2 at `at`."""
    g = torch.Generator().manual_seed(seed)
    shape = (x.shape[0], *ex.graph.op(at).shape[1:])
    r1 = torch.randn(shape, generator=g, dtype=x.dtype)
    r2 = torch.randn(shape, generator=g, dtype=x.dtype)
    a, b = 0.7, -1.3
    f = [ex.propagate(x, at=at, relevance=r, keep="all").relevances for r in (r1, r2, a * r1 + b * r2)]
    err, scale = 0.0, 0.0
    for n in f[2]:
        for u, v, w in zip(_streams(f[0][n]), _streams(f[1][n]), _streams(f[2][n])):
            ok = torch.isfinite(u) & torch.isfinite(v) & torch.isfinite(w)
            err = max(err, _amax(w - a * u - b * v, ok))
            scale = max(scale, _amax(w, ok), _amax(u, ok), _amax(v, ok))
    return err / scale if scale > 0 else 0.0


def ancestors(ex: Any, name: str) -> set[str]:
    """Names of the ops whose outputs `name` depends on."""
    by_out = ex.graph.by_out
    out: set[str] = set()
    todo = list(ex.graph.op(name).inputs)
    while todo:
        n = todo.pop()
        if n in by_out and by_out[n].name not in out:
            out.add(by_out[n].name)
            todo.extend(by_out[n].inputs)
    return out


def isolated_inputs(ex: Any, name: str) -> list[str]:
    """Producers of `name`'s inputs whose kept relevance, when injecting at `name`, is `name`'s own map only."""
    op = ex.graph.op(name)
    anc = ancestors(ex, name)
    users = ex.graph.consumers()
    out = []
    for n in dict.fromkeys(op.inputs):
        if n not in ex.graph.by_out:
            continue  # the network input: not kept
        others = [u for u in users.get(n, []) if u.name != name]
        if not any(u.name in anc for u in others):
            out.append(ex.graph.by_out[n].name)
    return out


def node_map(ex: Any, x: torch.Tensor, name: str) -> torch.Tensor | None:
    """The Jacobian of one node's relevance map (rows: unit vectors at its output; columns: its inputs'
    relevance entries), or None when no input can be isolated."""
    inputs = isolated_inputs(ex, name)
    if not inputs:
        return None
    j = jacobians(ex, x, name)
    return torch.cat([j[n] for n in inputs], dim=1)


def node_linearity_error(ex: Any, x: torch.Tensor, name: str, seed: int = 0) -> float | None:
    """Like `linearity_error`, restricted to one node's map (its isolated inputs); None when none is."""
    inputs = isolated_inputs(ex, name)
    if not inputs:
        return None
    g = torch.Generator().manual_seed(seed)
    shape = (x.shape[0], *ex.graph.op(name).shape[1:])
    r1 = torch.randn(shape, generator=g, dtype=x.dtype)
    r2 = torch.randn(shape, generator=g, dtype=x.dtype)
    a, b = 0.7, -1.3
    f = [ex.propagate(x, at=name, relevance=r, keep="all").relevances for r in (r1, r2, a * r1 + b * r2)]
    err, scale = 0.0, 0.0
    for n in inputs:
        for u, v, w in zip(_streams(f[0][n]), _streams(f[1][n]), _streams(f[2][n])):
            ok = torch.isfinite(u) & torch.isfinite(v) & torch.isfinite(w)
            err = max(err, _amax(w - a * u - b * v, ok))
            scale = max(scale, _amax(w, ok), _amax(u, ok), _amax(v, ok))
    return err / scale if scale > 0 else 0.0


def input_gradient(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """torch.autograd's gradient of the summed logit `target` with respect to the input (the gradient rule's oracle)."""
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[:, target].sum(), xg)
    return g


def assert_output_and_gradient(
    explainer: Any,
    model: torch.nn.Module,
    x: torch.Tensor,
    target: int,
    rtol: float,
    atol: float = 1e-12,
    output_rtol: float | None = None,
) -> None:
    """A gradient-rule explainer's forward output equals the model's (to `output_rtol`, default `rtol`), and its
    attribution equals autograd's (to `rtol`)."""
    with torch.no_grad():
        out = explainer.explain(x, target).output
        torch.testing.assert_close(out, model(x), rtol=rtol if output_rtol is None else output_rtol, atol=atol)
    torch.testing.assert_close(explainer(x, target), input_gradient(model, x, target), rtol=rtol, atol=atol)
