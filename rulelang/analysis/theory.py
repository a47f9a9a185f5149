"""The layer matrices in numbers (research/paper.md §2.1–2.5, §5.1 points 2, 4, 6).

`theory(explainer, x)` measures, at real inputs, the relevance map M_l = ∂R_in/∂R_out of every parametric node
(and adds / average pools) and the accumulated product from the logits down to every node ("does the chain
collapse to rank 1?"). `simulate_chain(...)` is the paper's random-matrix simulation (§2.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .stats import (
    AnalysisError,
    Readout,
    activations,
    ancestors,
    check_images,
    explainer_device,
    explainer_dtype,
    output_op,
    progress_bar,
)

__all__ = [
    "theory",
    "TheoryResult",
    "simulate_chain",
    "ChainSimulation",
    "backward_shapes",
    "VGG16_BACKWARD",
    "FAMILIES",
]

#: the paper's simulated VGG-16 backward dimensions (logits -> RGB; fc1 reduced to 512): 16 matrices
VGG16_BACKWARD: tuple[int, ...] = (1000, 4096, 4096, 512, 512, 512, 512, 512, 512, 256, 256, 256, 128, 128, 64, 64, 3)
FAMILIES = ("vanilla", "relu", "positive", "non-neg", "stochastic", "alpha-beta")
_ROWS = 256  # unit vectors per propagate call


# ------------------------------------------------------------------------------------------------- results
@dataclass
class NodeMap:
    """Statistics of one node's relevance map M (rows: the node's input units, columns: its output units)."""

    node: str
    kind: str
    method: str  # "exact" | "channels+columns" | "sketch+columns"
    n_in: int
    n_out: int
    min: float
    max: float
    sigma1: float
    sigma2: float

    @property
    def ratio(self) -> float:
        return self.sigma2 / self.sigma1 if self.sigma1 > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "kind": self.kind,
            "method": self.method,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "min": self.min,
            "max": self.max,
            "sigma1": self.sigma1,
            "sigma2": self.sigma2,
            "sigma_ratio": self.ratio,
        }


@dataclass
class ChainRow:
    """The accumulated product C_l (readout at node l, one column per logit) at one readout node."""

    node: str
    sigma_ratio: float  # σ2/σ1 of C_l (median over images)
    median_cos: float  # median |cos| between columns of C_l ("theoretical CSC"), pooled over images
    min: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "sigma_ratio": self.sigma_ratio,
            "median_cos": self.median_cos,
            "min": self.min,
            "max": self.max,
        }


@dataclass
class TheoryResult:
    images: int
    linear: bool
    linearity_error: float
    nodes: list[NodeMap] = field(default_factory=list)
    chain: list[ChainRow] = field(default_factory=list)
    gradient: dict[str, Any] | None = None

    @property
    def nonnegative(self) -> bool:
        """Every measured entry of every node map is >= 0 (sampled entries for reduced nodes)."""
        return all(n.min >= 0 for n in self.nodes)

    def chain_at(self, node: str = "input") -> ChainRow:
        for r in self.chain:
            if r.node == node:
                return r
        raise AnalysisError(f"no chain readout at {node!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "linear": self.linear,
            "linearity_error": self.linearity_error,
            "nonnegative": self.nonnegative,
            "nodes": [n.to_dict() for n in self.nodes],
            "chain": [r.to_dict() for r in self.chain],
            "gradient": self.gradient,
        }

    def __str__(self) -> str:
        lines = [
            f"Layer maps at {self.images} image(s); rule is {'linear' if self.linear else 'NOT linear'} in R "
            f"(relative error {self.linearity_error:.1e})",
            f"  {'node':<24} {'kind':<8} {'method':<17} {'min':>10} {'max':>10} {'σ2/σ1':>9}",
        ]
        for n in self.nodes:
            lines.append(f"  {n.node:<24} {n.kind:<8} {n.method:<17} {n.min:>10.3g} {n.max:>10.3g} {n.ratio:>9.3g}")
        lines.append("Accumulated product from the logits down:")
        lines.append(f"  {'node':<24} {'σ2/σ1':>9} {'median|cos|':>12}")
        for r in self.chain:
            lines.append(f"  {r.node:<24} {r.sigma_ratio:>9.2e} {r.median_cos:>12.6f}")
        if self.gradient:
            g = self.gradient
            lines.append(
                f"Gradient chain for comparison: σ2/σ1 at the input {g['chain_ratio_input']:.2e} "
                f"(this rule: {g['rule_chain_ratio_input']:.2e}); Π σ1/σ2 over node maps: "
                f"gradient {g['gradient_product']:.3g}, rule {g['rule_product']:.3g}"
            )
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- measuring
class _Probe:
    """Batched propagate of given relevance vectors at one node, reading (flattened) relevance at some nodes."""

    def __init__(self, explainer: Any, x1: torch.Tensor, readout: Readout, reference: torch.Tensor | None) -> None:
        self.ex, self.x1, self.readout, self.reference = explainer, x1, readout, reference
        self._acts: dict[str, Any] = {}

    def _act(self, op: Any) -> tuple[dict, dict]:
        key = op.name
        if key not in self._acts:
            below = ancestors(self.ex, op)
            a = activations(self.ex, self.x1, below) if self.readout.needs_x else {}
            a0 = {}
            if self.readout.needs_x0:
                a0 = activations(self.ex, self.readout.reference(self.x1, self.reference), below)
            self._acts[key] = (a, a0)
        return self._acts[key]

    def run(self, op: Any, vectors: torch.Tensor, read: Sequence[str], final: bool) -> dict[str, torch.Tensor]:
        """vectors (m, *op.shape[1:]); returns {node: (m, n_node)} ("input" = attribution). Raw relevance (streams
        summed) unless `final`, when the rule's final: is read out at every node as in CSC."""
        out: dict[str, list[torch.Tensor]] = {r: [] for r in read}
        acts, acts0 = self._act(op) if final else ({}, {})
        for lo in range(0, vectors.shape[0], _ROWS):
            v = vectors[lo : lo + _ROWS]
            m = v.shape[0]
            xr = self.x1.expand(m, *self.x1.shape[1:])
            ref = self.reference
            res = self.ex.propagate(xr, at=op.name, relevance=v, keep="all", reference=ref)
            for r in read:
                if r == "input":
                    t = res.attribution
                else:
                    rel = res.relevances[r]
                    if final:
                        a, a0 = acts.get(r), acts0.get(r)
                        t = self.readout(
                            rel,
                            None if a is None else a.expand(m, *a.shape[1:]),
                            None if a0 is None else a0.expand(m, *a0.shape[1:]),
                        )
                    else:
                        t = sum(rel.values()) if isinstance(rel, dict) else rel
                out[r].append(t.reshape(m, -1).double())
        return {r: torch.cat(v) for r, v in out.items()}


def _kind(op: Any) -> str:
    return str(getattr(op.kind, "value", op.kind))


def _svals(m: torch.Tensor) -> tuple[float, float]:
    s = torch.linalg.svdvals(m.double())
    s1 = float(s[0]) if s.numel() else 0.0
    s2 = float(s[1]) if s.numel() > 1 else 0.0
    return s1, s2


def _input_names(explainer: Any, op: Any) -> list[str]:
    g = explainer.graph
    names = []
    for n in op.inputs:
        if n is g.input:
            names.append("input")
        elif n in g.by_out:
            names.append(g.by_out[n].name)
    return list(dict.fromkeys(names))


def _node_map(
    probe: _Probe, op: Any, exact_limit: int, columns: int, sketch: int, gen: torch.Generator
) -> NodeMap | None:
    ex = probe.ex
    dev = probe.x1.device
    dtype = probe.x1.dtype
    shape = tuple(op.shape[1:])
    n_out = int(np.prod(shape))
    read = _input_names(ex, op)
    if not read:
        return None
    if n_out <= exact_limit:
        eye = torch.eye(n_out, dtype=dtype, device=dev).reshape(n_out, *shape)
        cols = probe.run(op, eye, read, final=False)
        m = torch.cat([cols[r] for r in read], 1).T  # (n_in, n_out)
        s1, s2 = _svals(m)
        return NodeMap(op.name, _kind(op), "exact", m.shape[0], n_out, float(m.min()), float(m.max()), s1, s2)
    idx = torch.randperm(n_out, generator=gen)[:columns]
    unit = torch.zeros(len(idx), n_out, dtype=dtype)
    unit[torch.arange(len(idx)), idx] = 1
    cols = probe.run(op, unit.reshape(-1, *shape).to(dev), read, final=False)
    sampled = torch.cat([cols[r] for r in read], 1)
    if len(shape) >= 2:  # spatial: channel transfer matrix, positions summed on both sides
        c_out = shape[0]
        ones = torch.zeros(c_out, *shape, dtype=dtype)
        for c in range(c_out):
            ones[c, c] = 1
        res = probe.run(op, ones.to(dev), read, final=False)
        blocks = []
        for r in read:
            t = res[r]
            in_shape = probe.x1.shape[1:] if r == "input" else tuple(ex.graph.op(r).shape[1:])
            t = t.reshape(c_out, *in_shape)
            blocks.append(t.flatten(2).sum(-1) if t.dim() > 2 else t)
        m = torch.cat(blocks, 1).T
        method = "channels+columns"
    else:  # dense: Gaussian sketch M Ω
        omega = torch.randn(sketch, n_out, generator=gen, dtype=torch.float64).to(dtype)
        res = probe.run(op, omega.reshape(-1, *shape).to(dev), read, final=False)
        m = torch.cat([res[r] for r in read], 1).T
        method = "sketch+columns"
    s1, s2 = _svals(m)
    return NodeMap(
        op.name, _kind(op), method, sampled.shape[1], n_out, float(sampled.min()), float(sampled.max()), s1, s2
    )


def _chain(probe: _Probe, explainer: Any, sketch: int, gen: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    top = output_op(explainer)
    shape = tuple(top.shape[1:])
    n_out = int(np.prod(shape))
    dtype, dev = probe.x1.dtype, probe.x1.device
    if n_out <= 64:
        v = torch.eye(n_out, dtype=dtype, device=dev).reshape(n_out, *shape)
    else:
        v = torch.randn(sketch, n_out, generator=gen, dtype=torch.float64).to(dtype).reshape(-1, *shape).to(dev)
    read = [o.name for o in ancestors(explainer, top)] + ["input"]
    res = probe.run(top, v, read, final=True)
    return [(r, res[r].T) for r in read]  # (n_l, columns)


def _column_cos(m: torch.Tensor) -> torch.Tensor:
    u = m / m.norm(dim=0, keepdim=True)
    c = (u.T @ u).abs().clamp(max=1)
    i, j = torch.triu_indices(c.shape[0], c.shape[0], offset=1)
    c = c[i, j]
    return c[~torch.isnan(c)]


def _linearity(probe: _Probe, explainer: Any) -> float:
    top = output_op(explainer)
    shape = tuple(top.shape[1:])
    g = torch.Generator().manual_seed(12345)
    a = torch.randn(1, *shape, generator=g, dtype=torch.float64).to(probe.x1.dtype).to(probe.x1.device)
    b = torch.randn(1, *shape, generator=g, dtype=torch.float64).to(probe.x1.dtype).to(probe.x1.device)
    res = probe.run(top, torch.cat([a, b, a + 2 * b]), ["input"], final=False)["input"]
    err = (res[2] - res[0] - 2 * res[1]).norm() / res[2].norm().clamp_min(1e-30)
    return float(err)


def _measure(
    explainer: Any,
    x: torch.Tensor,
    kinds: Sequence[str] | None,
    exact_limit: int,
    columns: int,
    sketch: int,
    seed: int,
    device: Any,
    progress: bool | None,
    reference: torch.Tensor | None,
) -> tuple[list[NodeMap], list[ChainRow], float]:
    dev = explainer_device(explainer, device, x)
    dtype = explainer_dtype(explainer, x)
    readout = Readout(explainer)
    ops = ancestors(explainer, output_op(explainer))[::-1]
    kinds_set = None if kinds is None else {str(k) for k in kinds}
    linear_kinds = {"dense", "conv", "affine"}
    if kinds_set is not None and "linear" in kinds_set:
        kinds_set |= linear_kinds
    chosen = [o for o in ops if kinds_set is None or _kind(o) in kinds_set]
    per_node: dict[str, list[NodeMap]] = {}
    chains: dict[str, list[torch.Tensor]] = {}
    lin_err = 0.0
    ref = reference.to(device=dev, dtype=dtype) if reference is not None else None
    steps = [(i, o) for i in range(x.shape[0]) for o in chosen]
    bar = progress_bar(steps, progress, total=len(steps), desc="layer maps")
    probes: dict[int, _Probe] = {}
    for i, op in bar:
        if i not in probes:
            x1 = x[i : i + 1].to(device=dev, dtype=dtype)
            probes[i] = p = _Probe(explainer, x1, readout, ref)
            lin_err = max(lin_err, _linearity(p, explainer))
            for name, m in _chain(p, explainer, sketch, torch.Generator().manual_seed(seed)):
                chains.setdefault(name, []).append(m)
        gen = torch.Generator().manual_seed(seed * 7919 + len(per_node.get(op.name, [])))
        nm = _node_map(probes[i], op, exact_limit, columns, sketch, gen)
        if nm is not None:
            per_node.setdefault(op.name, []).append(nm)
    if not chosen:  # still measure the chain
        for i in range(x.shape[0]):
            p = _Probe(explainer, x[i : i + 1].to(device=dev, dtype=dtype), readout, ref)
            lin_err = max(lin_err, _linearity(p, explainer))
            for name, m in _chain(p, explainer, 64, torch.Generator().manual_seed(seed)):
                chains.setdefault(name, []).append(m)
    nodes = []
    for name, maps in per_node.items():
        f = maps[0]
        ratios = [m.sigma2 / m.sigma1 if m.sigma1 > 0 else float("nan") for m in maps]
        k = int(np.nanargmin(np.abs(np.array(ratios) - np.nanmedian(ratios)))) if not np.all(np.isnan(ratios)) else 0
        nodes.append(
            NodeMap(
                name,
                f.kind,
                f.method,
                f.n_in,
                f.n_out,
                min(m.min for m in maps),
                max(m.max for m in maps),
                maps[k].sigma1,
                maps[k].sigma2,
            )
        )
    chain = []
    for name, ms in chains.items():
        ratios, coss = [], []
        for m in ms:
            s1, s2 = _svals(m)
            ratios.append(s2 / s1 if s1 > 0 else float("nan"))
            coss.append(_column_cos(m).cpu().numpy())
        c = np.concatenate(coss)
        chain.append(
            ChainRow(
                name,
                float(np.nanmedian(ratios)) if not np.all(np.isnan(ratios)) else float("nan"),
                float(np.median(c)) if c.size else float("nan"),
                float(min(float(m.min()) for m in ms)),
                float(max(float(m.max()) for m in ms)),
            )
        )
    return nodes, chain, lin_err


def theory(
    explainer: Any,
    x: torch.Tensor,
    *,
    kinds: Sequence[str] | None = ("linear", "add", "avgpool"),
    exact_limit: int = 256,
    columns: int = 32,
    sketch: int = 32,
    compare_gradient: bool | None = None,
    seed: int = 0,
    device: Any = None,
    progress: bool | None = None,
    reference: torch.Tensor | None = None,
) -> TheoryResult:
    """The rule's actual layer maps and their accumulated product at real inputs.

    Parameters
    ----------
    explainer : a compiled `rulelang.Explainer`.
    x : one or a few images (N×...); each is measured separately and the statistics pooled (min of minima, max
        of maxima, the image with the median σ2/σ1).
    kinds : op kinds whose maps are measured (default: linear layers, adds, average pools; None = every node).
    exact_limit : a node whose output has at most this many units gets its full map from batched unit vectors
        ("exact"); larger nodes are reduced: the exact columns of `columns` seeded random output units give the
        min/max entries (a sample, so the true min is at most the reported one), and σ1, σ2 come from the channel
        transfer matrix (conv: unit channel vectors, positions summed on both sides; "channels+columns") or from
        a Gaussian sketch M·Ω with `sketch` columns (dense; "sketch+columns").
    compare_gradient : also measure the gradient's chain and node maps on the same model (default: when some
        node map has a negative entry, i.e. the chain is signed — research/paper.md §2.4.4, §5.1 point 4).

    Node maps read raw relevance (streams summed); the first layer's map reads the attribution (`final:`). The
    chain injects one unit vector per logit (a Gaussian sketch for >64 outputs) and reads the rule's `final:` at
    every node, as `csc` does: per node σ2/σ1 of C_l and the median |cos| between its columns.
    For rules that are not linear in R (guided backprop, RectGrad, RevealCancel) the maps are the responses to
    those unit vectors, not a matrix of the rule; `linear` says whether R -> attribution passed a superposition
    check (relative error < 1e-4).
    """
    x = check_images(x)
    nodes, chain, lin = _measure(explainer, x, kinds, exact_limit, columns, sketch, seed, device, progress, reference)
    res = TheoryResult(images=x.shape[0], linear=lin < 1e-4, linearity_error=lin, nodes=nodes, chain=chain)
    signed = any(n.min < 0 for n in nodes)
    if compare_gradient or (compare_gradient is None and signed):
        res.gradient = _gradient_comparison(explainer, x, kinds, exact_limit, columns, sketch, seed, device, res)
    return res


def _gradient_comparison(
    explainer: Any,
    x: torch.Tensor,
    kinds: Any,
    exact_limit: int,
    columns: int,
    sketch: int,
    seed: int,
    device: Any,
    res,
) -> dict[str, Any]:
    from ..compiler.explainer import compile as compile_

    dev = explainer_device(explainer, device, x)
    grad = compile_(explainer.model, "gradient", example_input=x[:1].to(device=dev, dtype=explainer_dtype(explainer)))
    g_nodes, g_chain, _ = _measure(grad, x, kinds, exact_limit, columns, sketch, seed, device, False, None)

    def product(ns: list[NodeMap]) -> float:
        vals = [n.sigma1 / n.sigma2 for n in ns if n.sigma2 > 0]
        return float(np.exp(np.sum(np.log(vals)))) if vals else float("nan")

    return {
        "chain": [r.to_dict() for r in g_chain],
        "nodes": [n.to_dict() for n in g_nodes],
        "chain_ratio_input": g_chain[-1].sigma_ratio,
        "rule_chain_ratio_input": res.chain[-1].sigma_ratio,
        "gradient_product": product(g_nodes),
        "rule_product": product(res.nodes),
    }


# ----------------------------------------------------------------------------------------------- simulation
@dataclass
class ChainSimulation:
    """Median (over repetitions) mean |cos| of the start vectors after each multiplication, and a 99 % band."""

    family: str
    alpha: float | None
    dims: tuple[int, ...]
    curve: list[float]
    band: list[tuple[float, float]]
    threshold: float
    include_diagonal: bool

    @property
    def layers_to_threshold(self) -> int | None:
        """Multiplications needed for the median mean |cos| to reach `threshold` (None: not within the chain)."""
        for k, c in enumerate(self.curve, 1):
            if c >= self.threshold:
                return k
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "alpha": self.alpha,
            "beta": None if self.alpha is None else self.alpha - 1,
            "dims": list(self.dims),
            "curve": self.curve,
            "band": [list(b) for b in self.band],
            "threshold": self.threshold,
            "layers_to_threshold": self.layers_to_threshold,
            "include_diagonal": self.include_diagonal,
        }

    def __str__(self) -> str:
        name = self.family if self.alpha is None else f"α{self.alpha:g}β{self.alpha - 1:g}"
        cells = " ".join(f"{c:.4f}" for c in self.curve)
        return f"{name}: mean |cos| after each layer: {cells}; layers to {self.threshold}: {self.layers_to_threshold}"


def _matrix(family: str, alpha: float, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal((rows, cols), dtype=np.float32)
    if family in ("vanilla", "relu"):
        return w
    if family == "positive":
        return np.abs(w, out=w)
    if family == "non-neg":
        return np.maximum(w, 0, out=w)
    if family == "stochastic":
        np.abs(w, out=w)
        return np.divide(w, w.sum(0, keepdims=True), out=w)
    # alpha-beta: alpha W+ + beta W- with beta = alpha - 1 (W- <= 0), in place
    if alpha == 1:
        return np.maximum(w, 0, out=w)
    return np.multiply(w, np.where(w > 0, np.float32(alpha), np.float32(alpha - 1)), out=w)


def simulate_chain(
    family: str = "alpha-beta",
    *,
    alpha: float = 1.0,
    dims: Sequence[int] = VGG16_BACKWARD,
    starts: int = 32,
    reps: int = 20,
    seed: int = 0,
    threshold: float = 0.99,
    include_diagonal: bool = True,
) -> ChainSimulation:
    """The paper's convergence simulation (research/paper.md §2.5, `convergence_simulation.ipynb`).

    `starts` N(0, 1) row vectors of dimension dims[0] are multiplied by random matrices of shapes
    (dims[k], dims[k+1]) of the family: "vanilla" N(0,1); "relu" N(0,1) with the product clipped at 0 after every
    multiplication but the first; "positive" |N|; "non-neg" max(0, N); "stochastic" |N| with columns summing to 1;
    "alpha-beta" α·W⁺ + β·W⁻ with β = α − 1. After each multiplication: the mean |cos| over the pairs of start
    vectors — the lower triangle *including the diagonal* as the paper's code (`np.tri`), or distinct pairs only
    with `include_diagonal=False` (the table of §2.5) — NaNs removed; the median over `reps` repetitions (band:
    0.5th–99.5th percentile). Default dims: the VGG-16 backward shapes; see `backward_shapes(explainer)`.
    """
    if family not in FAMILIES:
        raise AnalysisError(f"unknown matrix family {family!r}: use one of {', '.join(FAMILIES)}")
    dims = tuple(int(d) for d in dims)
    if len(dims) < 2 or min(dims) < 1:
        raise AnalysisError(f"dims must list at least two positive sizes, got {list(dims)}")
    if starts < 2 or reps < 1:
        raise AnalysisError("simulate_chain needs starts >= 2 and reps >= 1")
    if family == "alpha-beta" and alpha < 1:
        raise AnalysisError(f"alpha-beta needs alpha >= 1 (beta = alpha - 1 >= 0), got {alpha}")
    rng = np.random.default_rng(seed)
    tri = np.tril_indices(starts, 0 if include_diagonal else -1)
    curves = np.zeros((reps, len(dims) - 1))
    for r in range(reps):
        v = rng.standard_normal((starts, dims[0]), dtype=np.float32)
        for k in range(len(dims) - 1):
            v = v @ _matrix(family, alpha, dims[k], dims[k + 1], rng)  # float32 products, float64 cosines
            if family == "relu" and k > 0:
                v = np.maximum(v, 0)
            v64 = v.astype(np.float64)
            norm = np.linalg.norm(v64, axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                u = v64 / norm
                c = np.abs(u @ u.T)[tri]
            c = np.minimum(c[~np.isnan(c)], 1.0)
            curves[r, k] = c.mean() if c.size else np.nan
            v = (v64 / np.where(norm > 0, norm, 1)).astype(np.float32)  # rescale: cosines are scale-free
    med = np.nanmedian(curves, 0)
    lo = np.nanpercentile(curves, 0.5, 0)
    hi = np.nanpercentile(curves, 99.5, 0)
    return ChainSimulation(
        family,
        alpha if family == "alpha-beta" else None,
        dims,
        [float(c) for c in med],
        [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)],
        threshold,
        include_diagonal,
    )


def backward_shapes(explainer: Any) -> tuple[int, ...]:
    """The model's backward dimensions as the paper's simulation uses them: the logits' size, then the input
    channels of every dense/conv node from the top down (a conv's centre tap is C_in × C_out; a dense layer after
    a flatten counts the channels of the spatial tensor it flattens, as the paper reduces VGG's fc1 to 512)."""
    g = explainer.graph
    lin = [o for o in ancestors(explainer, output_op(explainer)) if _kind(o) in ("dense", "conv")]
    if not lin:
        raise AnalysisError("the model has no dense or conv node")
    dims = [int(lin[0].shape[1])]
    for o in lin:
        node = o.inputs[0]
        while True:
            shape = tuple(node.meta["tensor_meta"].shape)
            if len(shape) > 2 or node is g.input or node not in g.by_out:
                break
            prev = g.by_out[node]
            if _kind(prev) not in ("reshape", "dropout", "identity") or not prev.inputs:
                break
            node = prev.inputs[0]
        dims.append(int(shape[1]))
    return tuple(dims)
