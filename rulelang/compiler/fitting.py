"""Statistics fitted from data in one pass (`fit:` in a rule file): PatternNet's signal patterns.

The `linear` and `relu` estimators of Kindermans et al. (2018) as iNNvestigate computes them: per output
unit j of a dense/conv layer, with y = w·x (no bias) and a mask m_j (all ones for `linear`; for `relu` the
following ReLU's output > 0, or ones when no ReLU follows),

    cov_j = E_m[x y_j] - E_m[x] E[y_j],      a_j = cov_j / (w_j · cov_j)

where E_m averages over the masked samples (conv: every spatial position is a sample) and E over all.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import CompileError, RulelangError
from ..graph.ir import Op


class _Stats:
    """Running sums for one (fitted name, op)."""

    def __init__(self, weight: torch.Tensor) -> None:
        out, d = weight.shape[0], weight[0].numel()
        self.w = weight.reshape(out, d).double()
        self.count = torch.zeros(out, dtype=torch.float64)
        self.sx = torch.zeros(out, d, dtype=torch.float64)
        self.sxy = torch.zeros(out, d, dtype=torch.float64)
        self.sy = torch.zeros(out, dtype=torch.float64)
        self.n = 0

    def update(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        """x: (samples, d) inputs; mask: (samples, out) booleans."""
        x = x.double()
        y = x @ self.w.T
        m = mask.double()
        self.count += m.sum(0)
        self.sx += m.T @ x
        self.sxy += (m * y).T @ x
        self.sy += y.sum(0)
        self.n += x.shape[0]

    def pattern(self, shape: torch.Size) -> torch.Tensor:
        count = self.count.clamp_min(1)[:, None]
        cov = self.sxy / count - (self.sx / count) * (self.sy / max(self.n, 1))[:, None]
        denom = (self.w * cov).sum(1, keepdim=True)
        a = torch.where(denom.abs() > 1e-30, cov / torch.where(denom == 0, 1.0, denom), torch.zeros_like(cov))
        return a.reshape(shape)


def _samples(op: Op, x: torch.Tensor, z: torch.Tensor, hyper: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, d) layer inputs and (samples, out) outputs of a dense or conv op."""
    if op.kind == "dense":
        return x.reshape(-1, x.shape[-1]), z.reshape(-1, z.shape[-1])
    if hyper["dim"] != 2 or hyper["groups"] != 1 or isinstance(hyper["padding"], str):
        raise CompileError(
            f"fitting patterns supports 2-d convolutions with groups=1 and numeric padding; node "
            f"{op.name} has {hyper['dim']}-d, groups={hyper['groups']}, padding={hyper['padding']!r}"
        )
    k = hyper["kernel"]
    cols = F.unfold(x, k, dilation=hyper["dilation"], padding=hyper["padding"], stride=hyper["stride"])
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]), z.flatten(2).transpose(1, 2).reshape(-1, z.shape[1])


def fit(
    explainer_or_rules: Any,
    model: Any = None,
    data: Iterable[Any] | None = None,
    *,
    max_batches: int | None = None,
    progress: bool = True,
    **params: Any,
):
    """Estimates the rule file's `fit:` statistics in one pass over `data` and returns the explainer.

    `rulelang.fit(explainer, data)` or `rulelang.fit("pattern-net", model, data)`; `data` yields input
    tensors or (input, label) pairs.
    """
    from .explainer import Explainer
    from .explainer import compile as compile_

    if isinstance(explainer_or_rules, Explainer):
        explainer = explainer_or_rules
        if data is None and not isinstance(model, torch.nn.Module):
            data, model = model, None
    else:
        if not isinstance(model, torch.nn.Module) or data is None:
            raise RulelangError("usage: rulelang.fit(explainer, data) or rulelang.fit(rules, model, data)")
        first = _first_input(data)
        explainer = compile_(model, explainer_or_rules, example_input=first, **params)
    if data is None:
        raise RulelangError("rulelang.fit needs data: an iterable of input tensors or (input, label) pairs")
    specs = explainer.fit_targets()
    if not specs:
        raise RulelangError(f"rule file {explainer.rules.name!r} declares nothing to fit (no `fit:` section)")
    ops = {op.name: op for _, op in specs}
    weights = explainer._eager_params(list(ops))
    hypers = {name: explainer._hyper(op) for name, op in ops.items()}
    relu_after = explainer._followed_by_relu()
    stats = {(f.name, op.name): _Stats(weights[op.name]["w"]) for f, op in specs}
    batches = list(data) if max_batches is None else [b for b, _ in zip(data, range(max_batches))]
    for batch in tqdm(batches, desc=f"fitting {explainer.rules.name}", disable=not progress, leave=False):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        acts = explainer._activations(x, list(ops))
        for f, op in specs:
            xin, z = acts[op.name]
            xs, zs = _samples(op, xin, z, hypers[op.name])
            if f.estimator == "relu" and relu_after.get(op.name, False):
                mask = zs > 0
            else:
                mask = torch.ones_like(zs, dtype=torch.bool)
            stats[(f.name, op.name)].update(xs, mask)
    fitted = {key: s.pattern(weights[key[1]]["w"].shape).to(weights[key[1]]["w"].dtype) for key, s in stats.items()}
    explainer.set_fitted(fitted)
    return explainer


def _first_input(data: Iterable[Any]) -> torch.Tensor:
    for batch in data:
        return batch[0] if isinstance(batch, (tuple, list)) else batch
    raise RulelangError("rulelang.fit got empty data")


def save_fitted(fitted: dict[tuple[str, str], torch.Tensor], rules: str, path: str | Path) -> None:
    torch.save(
        {"rulelang_fit": 1, "rules": rules, "fitted": {f"{k[0]}/{k[1]}": v.detach().cpu() for k, v in fitted.items()}},
        path,
    )


def load_fitted(path: str | Path) -> dict[tuple[str, str], torch.Tensor]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RulelangError(f"fitted statistics file not found: {path}") from None
    except Exception as e:
        raise RulelangError(f"cannot read fitted statistics from {path}: {e}") from None
    if not isinstance(blob, dict) or blob.get("rulelang_fit") != 1:
        raise RulelangError(f"{path} is not a rulelang fitted-statistics file (save one with explainer.save_fitted)")
    return {tuple(k.split("/", 1)): v for k, v in blob["fitted"].items()}  # type: ignore[misc]
