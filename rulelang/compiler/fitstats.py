"""PatternNet's signal-pattern statistics (`fit:` in a rule file), as pure tensor code: running sums, the
estimator, and the file format of saved statistics. Knows nothing of explainers (`fitting.fit` drives it).

The `linear` and `relu` estimators of Kindermans et al. (2018) as iNNvestigate computes them: per output
unit j of a dense/conv layer, with y = w·x (no bias) and a mask m_j (all ones for `linear`; for `relu` the
following ReLU's output > 0, or ones when no ReLU follows),

    cov_j = E_m[x y_j] - E_m[x] E[y_j],      a_j = cov_j / (w_j · cov_j)

where E_m averages over the masked samples (conv: every spatial position is a sample) and E over all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import RulelangError


class PatternStats:
    """Running sums for one (fitted name, op), over layer inputs x and outputs y = layer(x, w, b=0).

    A conv's sums over positions are vector-Jacobian products of the layer w.r.t. its weight:
    sum_p g_jp patch_p = d/dw_j <g, layer(x, w)>, so no unfolded patches are materialised.
    """

    def __init__(self, weight: torch.Tensor, unit_dim: int = 1) -> None:
        out, d = weight.shape[0], weight[0].numel()
        self.unit_dim = unit_dim  # the output's axis of units: 1 for conv (N, C, ...), -1 for dense (..., C)
        self.shape = weight.shape
        self.w = weight.detach().double()
        self.count = torch.zeros(out, dtype=torch.float64)
        self.sx = torch.zeros(out, d, dtype=torch.float64)
        self.sxy = torch.zeros(out, d, dtype=torch.float64)
        self.sy = torch.zeros(out, dtype=torch.float64)
        self.n = 0

    def update(
        self, layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, mask: torch.Tensor | None
    ) -> None:
        """One batch: `layer(t, w)` the op without bias, `x` its input; `mask` (like the output, bool) or None."""
        x = x.detach().double()
        with torch.enable_grad():
            y, pullback = torch.func.vjp(lambda w: layer(x, w), self.w)[:2]
        m = torch.ones_like(y) if mask is None else mask.to(y.dtype)
        out = y.shape[1]
        per_unit = lambda t: t.movedim(self.unit_dim, 0).reshape(out, -1).sum(1)  # noqa: E731
        self.count += per_unit(m)
        self.sy += per_unit(y)
        self.sx += pullback(m)[0].reshape(out, -1)
        self.sxy += pullback(m * y)[0].reshape(out, -1)
        self.n += y.numel() // out

    def pattern(self) -> torch.Tensor:
        count = self.count.clamp_min(1)[:, None]
        cov = self.sxy / count - (self.sx / count) * (self.sy / max(self.n, 1))[:, None]
        w = self.w.reshape(cov.shape)
        denom = (w * cov).sum(1, keepdim=True)
        a = torch.where(denom.abs() > 1e-30, cov / torch.where(denom == 0, 1.0, denom), torch.zeros_like(cov))
        return a.reshape(self.shape)


def save_fitted(fitted: dict[tuple[str, str], torch.Tensor], rules: str, path: str | Path) -> None:
    """Writes {(name, node): tensor} statistics fitted for rule file `rules` to `path`."""
    torch.save(
        {"rulelang_fit": 1, "rules": rules, "fitted": {f"{k[0]}/{k[1]}": v.detach().cpu() for k, v in fitted.items()}},
        path,
    )


def load_fitted(path: str | Path) -> dict[tuple[str, str], torch.Tensor]:
    """Reads statistics written by `save_fitted`."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RulelangError(f"fitted statistics file not found: {path}") from None
    except Exception as e:
        text = str(e).strip()
        raise RulelangError(
            f"cannot read fitted statistics from {path}: {text.splitlines()[0] if text else e}"
        ) from None
    if not isinstance(blob, dict) or blob.get("rulelang_fit") != 1:
        raise RulelangError(f"{path} is not a rulelang fitted-statistics file (save one with explainer.save_fitted)")
    out: dict[tuple[str, str], torch.Tensor] = {}
    for k, v in blob["fitted"].items():
        name, node = k.split("/", 1)
        out[(name, node)] = v
    return out
