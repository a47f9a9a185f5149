"""The sanity checks of Sixt et al. 2020 (research/paper.md §4.1, §4.2), scored exactly as their code does.

rulelang.analysis.random_logit(explainer, x, y)                         # true class vs a random other class
rulelang.analysis.randomization(model, "lrp-zplus", x, y)              # cascading parameter randomization

Scoring: each map is reduced to 2-D (channel sum, or max of |·| over channels for gradient-type rules), rescaled
by the paper's `normalize_sanity` (robust percentile p = 99.5, RectGrad 100), compared by scikit-image SSIM
(win_size 5, data_range 1), maximised over the sign flip of the second map (re-normalised); plus the Spearman
rank correlation of |reduced map| (as Quantus reports). Medians over images with 99 % bootstrap intervals
(10,000 resamples of the median, percentile method, seeded).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .stats import AnalysisError, check_images, explainer_device, explainer_dtype, progress_bar

__all__ = [
    "random_logit",
    "randomization",
    "RandomLogitResult",
    "RandomizationResult",
    "GRADIENT_FAMILY",
    "reduction_for",
    "percentile_for",
    "normalize_sanity",
    "ssim_flip",
    "score_maps",
]

#: rule files whose maps are gradients (reduced by max |·| over channels, as the paper's `abs.max`)
GRADIENT_FAMILY = ("gradient", "gradient-x-input", "guided-backprop", "deconvnet", "rectgrad", "smoothgrad")
N_RESAMPLES = 10_000
CONFIDENCE = 0.99


# ---------------------------------------------------------------------------------------------- reductions
def _family_names(rules: Any) -> list[str]:
    import os

    names = [rules.name] + [os.path.splitext(os.path.basename(str(e)))[0] for e in getattr(rules, "extends", ())]
    return names


def _init_is_target(rules: Any) -> bool:
    from ..lang import ast as A

    blocks = [b for _, b in rules.init]
    return bool(blocks) and all(
        not b.assigns and isinstance(b.result, A.Name) and b.result.id == "target" for b in blocks
    )


def reduction_for(rules: Any) -> str:
    """ "abs-max" for gradient-type rule files (`init:` is `target` and the file is, or extends, one of
    `GRADIENT_FAMILY`), else "sum" — the paper's 2-D reductions (research/paper.md §1.2)."""
    if _init_is_target(rules) and any(n in GRADIENT_FAMILY for n in _family_names(rules)):
        return "abs-max"
    return "sum"


def percentile_for(rules: Any) -> float:
    """The normalisation percentile: 100 for RectGrad (and files extending it), else 99.5 (paper §4.1)."""
    return 100.0 if "rectgrad" in _family_names(rules) else 99.5


def reduce_maps(a: torch.Tensor, how: str) -> np.ndarray:
    """N×C×H×W (or N×H×W) attributions -> N×H×W float64."""
    a = a.detach().to("cpu", torch.float64)
    if a.dim() == 3:
        return a.numpy()
    if a.dim() != 4:
        raise AnalysisError(f"sanity checks need image attributions N×C×H×W, got shape {list(a.shape)}")
    if how == "sum":
        return a.sum(1).numpy()
    if how == "abs-max":
        return a.abs().amax(1).numpy()
    raise AnalysisError(f"unknown reduction {how!r}: use 'sum' or 'abs-max'")


def normalize_sanity(x: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """The paper's `normalize_sanity` as written: vmin = P_p(x), vmax = P_{100−p}(x),
    clip((x − vmin) / (vmax − vmin), 0, 1) — a robust min-max rescale with inverted polarity. A constant map
    (vmax == vmin) gives zeros."""
    vmin = np.percentile(x, percentile)
    vmax = np.percentile(x, 100 - percentile)
    if vmax == vmin:
        return np.zeros_like(x, dtype=np.float64)
    return np.clip((x - vmin) / (vmax - vmin), 0.0, 1.0)


def ssim_flip(a: np.ndarray, b: np.ndarray, percentile: float = 99.5) -> float:
    """max(SSIM(n(a), n(b)), SSIM(n(a), n(−b))) with skimage's structural_similarity(win_size=5, data_range=1)."""
    from skimage.metrics import structural_similarity

    na = normalize_sanity(a, percentile)
    return max(
        float(structural_similarity(na, normalize_sanity(b, percentile), win_size=5, data_range=1.0)),
        float(structural_similarity(na, normalize_sanity(-b, percentile), win_size=5, data_range=1.0)),
    )


def spearman_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of |a| and |b| (flattened); NaN when either is constant."""
    from scipy.stats import spearmanr

    x, y = np.abs(a).ravel(), np.abs(b).ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def score_maps(a: np.ndarray, b: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image (N×H×W pairs): sign-flip SSIM and Spearman of |·|."""
    ssim = np.array([ssim_flip(p, q, percentile) for p, q in zip(a, b, strict=True)])
    rho = np.array([spearman_abs(p, q) for p, q in zip(a, b, strict=True)])
    return ssim, rho


def median_interval(values: np.ndarray, seed: int) -> tuple[float, list[float]]:
    """Median and its 99 % bootstrap interval (10,000 resamples, percentile method); NaNs dropped."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), [float("nan"), float("nan")]
    med = float(np.median(v))
    if v.size < 2 or np.ptp(v) == 0:
        return med, [med, med]
    res = bootstrap(
        (v,),
        np.median,
        n_resamples=N_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return med, [float(ci.low), float(ci.high)]


# ------------------------------------------------------------------------------------------------- results
@dataclass
class Scores:
    ssim: np.ndarray
    spearman: np.ndarray
    seed: int

    def summary(self) -> dict[str, Any]:
        sm, si = median_interval(self.ssim, self.seed)
        rm, ri = median_interval(self.spearman, self.seed)
        return {"ssim_median": sm, "ssim_interval": si, "spearman_median": rm, "spearman_interval": ri}


@dataclass
class RandomLogitResult:
    """SSIM/Spearman between the true-class map and a random other class's map, per image and summarised."""

    scores: Scores
    targets: np.ndarray
    random_targets: np.ndarray
    reduction: str
    percentile: float
    examples: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.scores.ssim.size)

    def to_dict(self) -> dict[str, Any]:
        return {**self.scores.summary(), "n": self.n, "reduction": self.reduction, "percentile": self.percentile}

    def __str__(self) -> str:
        d = self.to_dict()
        return (
            f"Random-logit test ({self.n} images, reduction {self.reduction}, percentile {self.percentile:g}): "
            f"SSIM median {d['ssim_median']:.3f} [{d['ssim_interval'][0]:.3f}, {d['ssim_interval'][1]:.3f}], "
            f"Spearman |a| median {d['spearman_median']:.3f} "
            f"[{d['spearman_interval'][0]:.3f}, {d['spearman_interval'][1]:.3f}] (99 % bootstrap)"
        )


@dataclass
class RandomizationResult:
    """Per step (layer name): SSIM/Spearman between the original and the randomized model's maps."""

    mode: str
    layers: list[str]
    scores: list[Scores]
    reduction: str
    percentile: float
    examples: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reduction": self.reduction,
            "percentile": self.percentile,
            "n": int(self.scores[0].ssim.size) if self.scores else 0,
            "steps": [{"layer": name, **s.summary()} for name, s in zip(self.layers, self.scores, strict=True)],
        }

    def __str__(self) -> str:
        d = self.to_dict()
        lines = [
            f"{self.mode.capitalize()} parameter randomization ({d['n']} images, reduction {self.reduction}, "
            f"percentile {self.percentile:g}); medians with 99 % bootstrap intervals:",
            f"  {'layer':<24} {'SSIM':>7} {'interval':>17} {'Spearman':>9} {'interval':>17}",
        ]
        for s in d["steps"]:
            si, ri = s["ssim_interval"], s["spearman_interval"]
            lines.append(
                f"  {s['layer']:<24} {s['ssim_median']:>7.3f} [{si[0]:>6.3f}, {si[1]:>6.3f}] "
                f"{s['spearman_median']:>9.3f} [{ri[0]:>6.3f}, {ri[1]:>6.3f}]"
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- running
def _attribute(
    explainer: Any, x: torch.Tensor, target: torch.Tensor, dev: torch.device, batch_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(attributions on CPU, outputs on CPU), in batches."""
    dtype = explainer_dtype(explainer, x)
    bs = batch_size or x.shape[0]
    maps, outs = [], []
    for lo in range(0, x.shape[0], bs):
        xb = x[lo : lo + bs].to(device=dev, dtype=dtype)
        r = explainer.explain(xb, target[lo : lo + bs].to(dev))
        maps.append(r.attribution.detach().cpu())
        outs.append(r.output.detach().cpu())
    return torch.cat(maps), torch.cat(outs)


def _labels(y: Any, n: int) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.dim() == 0:
        y = y.expand(n)
    if y.shape != (n,) or y.is_floating_point():
        raise AnalysisError(f"y must hold one integer class per image ({n}), got shape {list(y.shape)}")
    return y.long()


def _settings(rules: Any, reduce: str | None, percentile: float | None) -> tuple[str, float]:
    how = reduce or reduction_for(rules)
    if how not in ("sum", "abs-max"):
        raise AnalysisError(f"unknown reduction {how!r}: use 'sum' or 'abs-max'")
    return how, float(percentile if percentile is not None else percentile_for(rules))


def random_logit(
    explainer: Any,
    x: torch.Tensor,
    y: Any,
    *,
    seed: int = 0,
    reduce: str | None = None,
    percentile: float | None = None,
    batch_size: int | None = None,
    device: Any = None,
    examples: int = 4,
) -> RandomLogitResult:
    """The random-logit test (research/paper.md §4.2): for each image a class drawn uniformly from the other
    classes (seeded), its map compared with the map of the true class `y`.

    `reduce` ("sum" | "abs-max") and `percentile` override the rule file's defaults (`reduction_for`,
    `percentile_for`). `examples` maps of the first images are kept (`.examples`: ("true", maps), ("random",
    maps)) for heatmap grids.
    """
    x = check_images(x)
    y = _labels(y, x.shape[0])
    how, pct = _settings(explainer.rules, reduce, percentile)
    dev = explainer_device(explainer, device, x)
    true_maps, out = _attribute(explainer, x, y, dev, batch_size)
    classes = out.shape[1]
    if classes < 2:
        raise AnalysisError("the random-logit test needs a model with at least 2 outputs")
    if int(y.max()) >= classes or int(y.min()) < 0:
        raise AnalysisError(f"labels must lie in [0, {classes - 1}]")
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, classes - 1, size=x.shape[0])
    r = torch.as_tensor(draw + (draw >= y.numpy()), dtype=torch.long)
    rand_maps, _ = _attribute(explainer, x, r, dev, batch_size)
    ssim, rho = score_maps(reduce_maps(true_maps, how), reduce_maps(rand_maps, how), pct)
    return RandomLogitResult(
        Scores(ssim, rho, seed),
        y.numpy(),
        r.numpy(),
        how,
        pct,
        [("true", true_maps[:examples]), ("random", rand_maps[:examples])],
    )


def _parametric_steps(explainer: Any) -> list[tuple[str, list[torch.nn.Module]]]:
    """(step name, modules re-initialised) for every dense/conv/affine op, from the output down; a folded
    BatchNorm belongs to its layer's step."""
    steps = []
    gm = explainer.model
    for op in reversed(explainer.graph.ops):
        kind = str(getattr(op.kind, "value", op.kind))
        if kind not in ("dense", "conv", "affine"):
            continue
        mods = []
        for node in (op.node, op.fold):
            if node is not None and node.op == "call_module":
                mods.append(gm.get_submodule(node.target))
        if not mods:
            raise AnalysisError(
                f"layer {op.name} is not a module call (functional op with external weights): it cannot be "
                "re-initialised; pass layers=[...] without it"
            )
        steps.append((op.name, mods))
    return steps


def _reinit(mods: Sequence[torch.nn.Module], seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in mods:
            if not hasattr(m, "reset_parameters"):
                raise AnalysisError(f"{type(m).__name__} has no reset_parameters(): cannot re-initialise it")
            m.reset_parameters()  # type: ignore[operator]


def randomization(
    model: torch.nn.Module,
    rule: Any,
    x: torch.Tensor,
    y: Any,
    *,
    mode: str = "cascading",
    seed: int = 0,
    layers: Sequence[str] | None = None,
    reduce: str | None = None,
    percentile: float | None = None,
    batch_size: int | None = None,
    device: Any = None,
    progress: bool | None = None,
    examples: int = 4,
    **compile_kwargs: Any,
) -> RandomizationResult:
    """Parameter randomization (research/paper.md §4.1) on a deep copy of `model` (never on `model` itself).

    The rule (library name, path, RuleFile, or an Explainer whose rules and fitted statistics are reused) is
    compiled on the copy (`compile_kwargs` go to
    `rulelang.compile`, e.g. `fitted=` for pattern rules, parameters). Steps are the dense/conv/affine layers
    from the output down in execution order (or `layers`, node names or module paths, taken top-down as
    given); each step re-initialises its layer (and a BatchNorm folded into it) with the module's own
    `reset_parameters()` under `torch.manual_seed(seed + step)` (the caller's RNG state is left alone).
    `mode="cascading"`: randomisation accumulates from the top; `"independent"`: only that layer is random.
    The explained class is `y` (the paper: the true label). `.examples` holds ("original" | layer, first
    `examples` maps) per step.
    """
    from ..compiler.explainer import compile as compile_

    if mode not in ("cascading", "independent"):
        raise AnalysisError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    x = check_images(x)
    y = _labels(y, x.shape[0])
    if hasattr(rule, "rules") and isinstance(getattr(rule, "fitted", None), torch.nn.Module):  # an Explainer
        fitted = {tuple(k.split("__", 1)): v for k, v in rule.fitted.named_buffers()}
        if fitted and "fitted" not in compile_kwargs:
            compile_kwargs["fitted"] = fitted
        rule = rule.rules
    work = copy.deepcopy(model)
    dev = torch.device(device) if device is not None else None
    if dev is not None:
        work = work.to(dev)
    example = x[:1]
    for t in list(work.parameters()) + list(work.buffers()):
        example = example.to(device=t.device, dtype=t.dtype if t.is_floating_point() else example.dtype)
        break
    explainer = compile_(work, rule, example_input=example, **compile_kwargs)
    how, pct = _settings(explainer.rules, reduce, percentile)
    dev = explainer_device(explainer, device, x)
    all_steps = _parametric_steps(explainer)
    if layers is not None:
        by_name = {}
        for name, mods in all_steps:
            op = explainer.graph.op(name)
            by_name[name] = (name, mods)
            if op.module:
                by_name[op.module] = (name, mods)
        missing = [n for n in layers if n not in by_name]
        if missing:
            raise AnalysisError(
                f"no parametric layer named {missing[0]!r} (layers: {', '.join(n for n, _ in all_steps)})"
            )
        steps = [by_name[n] for n in layers]
    else:
        steps = all_steps
    original, _ = _attribute(explainer, x, y, dev, batch_size)
    reduced0 = reduce_maps(original, how)
    gm = explainer.model  # shares the copy's modules; the explainer reads its parameters at every call
    snapshot = {k: v.detach().clone() for k, v in gm.state_dict().items()} if mode == "independent" else None
    names, scores = [], []
    shots = [("original", original[:examples])]
    for k, (name, mods) in enumerate(progress_bar(steps, progress, total=len(steps), desc=f"{mode} randomization")):
        if snapshot is not None:
            gm.load_state_dict(snapshot)
        _reinit(mods, seed + k)
        explainer.refresh()
        maps, _ = _attribute(explainer, x, y, dev, batch_size)
        ssim, rho = score_maps(reduced0, reduce_maps(maps, how), pct)
        names.append(name)
        scores.append(Scores(ssim, rho, seed))
        shots.append((name, maps[:examples]))
    return RandomizationResult(mode, names, scores, how, pct, shots)
