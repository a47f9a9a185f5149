"""The layer matrices in numbers (research/paper.md §2.1–2.5, §5.1 points 2, 4, 6).

`theory(explainer, x)` measures, at real inputs, the relevance map M_l = ∂R_in/∂R_out of every parametric node
(and adds / average pools), the accumulated product from the logits down to every node ("does the chain
collapse to rank 1?") and the inter-layer items S_l^{1/2} V_lᵀ U_{l+1} S_{l+1}^{1/2} of consecutive block maps
with their product, against the gradient's (§5.1 point 4; `interlayer_factors` for given matrices).
`simulate_chain(...)` is the paper's random-matrix simulation (§2.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    "InterLayer",
    "InterLayerItem",
    "interlayer_factors",
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
class InterLayerItem:
    """The inter-layer item S_a^{1/2} V_aᵀ U_b S_b^{1/2} between two consecutive block maps (research/paper.md
    §5.1 point 4): `lower` (a, M_a = U_a S_a V_aᵀ) sits directly below `upper` (b); M_a's columns and M_b's rows
    are both `lower`'s output, in the basis `basis`."""

    upper: str
    lower: str
    basis: str  # "units" | "channels" | "sketch": how `lower`'s output space is represented
    composition_error: float  # relative, normalised: M_a·M_b against the measured two-block map (nan: not tried)
    sigma1: float | None = None
    sigma2: float | None = None
    note: str = ""  # why no item was computed ("" when it was)

    @property
    def ratio(self) -> float | None:
        """σ1/σ2 of the item (None: not computed; inf: rank 1)."""
        if self.sigma1 is None or self.sigma2 is None:
            return None
        return self.sigma1 / self.sigma2 if self.sigma2 > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "upper": self.upper,
            "lower": self.lower,
            "basis": self.basis,
            "composition_error": self.composition_error,
            "sigma1": self.sigma1,
            "sigma2": self.sigma2,
            "sigma1_over_sigma2": self.ratio,
            "note": self.note,
        }


@dataclass
class InterLayer:
    """Inter-layer items along the chain of block maps from the logits down to the input, and their product.

    A block map is a measured node together with the unmeasured nodes below it (activations, pools, reshapes,
    dropout) down to the next measured node that every path to the input passes through, as the paper's Keras
    layers contain their ReLU. `product` is Π σ1/σ2 over the pairs that were computed (`computed` of `pairs`);
    `factor_error` is the relative error of U_1 S_1^{1/2} · Π items · S_L^{1/2} V_Lᵀ against the measured chain at
    the input (None when not every pair composes or the chain's columns are not unit vectors).

    Each block is one matrix throughout, its rows in the basis of the boundary below it, so an item also depends on
    that basis (units vs channel sums, set by `exact_limit`): compare products between runs with the same bases, as
    the gradient comparison does."""

    items: list[InterLayerItem] = field(default_factory=list)
    factor_error: float | None = None
    factor_note: str = ""

    @property
    def pairs(self) -> int:
        return len(self.items)

    @property
    def computed(self) -> int:
        return sum(1 for it in self.items if it.ratio is not None)

    @property
    def product(self) -> float:
        """Π σ1/σ2 over the computed items (nan when none was computed)."""
        return _product([it.ratio for it in self.items])

    def product_over(self, pairs: Sequence[tuple[str, str]]) -> float:
        """Π σ1/σ2 over the given (upper, lower) pairs (nan when one of them was not computed)."""
        by = {(it.upper, it.lower): it.ratio for it in self.items}
        vals = [by.get((p[0], p[1])) for p in pairs]
        return float("nan") if not vals or any(v is None for v in vals) else _product(vals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [it.to_dict() for it in self.items],
            "pairs": self.pairs,
            "computed": self.computed,
            "product": self.product,
            "log10_product": float(np.log10(self.product)) if self.product > 0 else float("nan"),
            "factor_error": self.factor_error,
            "factor_note": self.factor_note,
        }

    def __str__(self) -> str:
        lines = [
            "Inter-layer items S_a^½ V_aᵀ U_b S_b^½ of consecutive block maps (b upper, a lower; §5.1 point 4):",
            f"  {'upper':<16} {'lower':<16} {'basis':<9} {'σ1/σ2':>9} {'compose err':>12}  note",
        ]
        for it in self.items:
            r = "—" if it.ratio is None else f"{it.ratio:.3g}"
            lines.append(
                f"  {it.upper:<16} {it.lower:<16} {it.basis:<9} {r:>9} {it.composition_error:>12.1e}  {it.note}"
            )
        check = (
            f"factor product vs measured chain at the input: relative error {self.factor_error:.1e}"
            if self.factor_error is not None
            else f"factor product not checked ({self.factor_note})"
        )
        lines.append(f"  Π σ1/σ2 over {self.computed} of {self.pairs} pair(s): {self.product:.3g}; {check}")
        return "\n".join(lines)


def _product(vals: Sequence[float | None]) -> float:
    v = [float(x) for x in vals if x is not None]
    if not v:
        return float("nan")
    if any(np.isinf(x) for x in v):
        return float("inf")
    return float(np.exp(np.sum(np.log(v))))


@dataclass
class TheoryResult:
    images: int
    linear: bool
    linearity_error: float
    nodes: list[NodeMap] = field(default_factory=list)
    chain: list[ChainRow] = field(default_factory=list)
    gradient: dict[str, Any] | None = None
    interlayer: InterLayer | None = None

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
            "interlayer": None if self.interlayer is None else self.interlayer.to_dict(),
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
        if self.interlayer is not None:
            lines.append(str(self.interlayer))
        if self.gradient:
            g = self.gradient
            lines.append(
                f"Gradient chain for comparison: σ2/σ1 at the input {g['chain_ratio_input']:.2e} "
                f"(this rule: {g['rule_chain_ratio_input']:.2e}); Π σ1/σ2 over node maps: "
                f"gradient {g['gradient_product']:.3g}, rule {g['rule_product']:.3g}"
            )
            if g.get("interlayer_pairs"):
                lines.append(
                    f"Inter-layer Π σ1/σ2 over the {len(g['interlayer_pairs'])} pair(s) both compute: rule "
                    f"{g['rule_interlayer_product']:.3g}, gradient {g['gradient_interlayer_product']:.3g} (ratio "
                    f"{g['interlayer_product_ratio']:.3g}, log10 {g['interlayer_log10_ratio']:+.2f})"
                )
            elif "interlayer_pairs" in g:
                lines.append("Inter-layer products: no pair composes for both the rule and the gradient")
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

    def run(
        self,
        op: Any,
        vectors: torch.Tensor,
        read: Sequence[str],
        final: bool,
        reduce: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """vectors (m, *op.shape[1:]); returns {node: (m, n_node)} ("input" = attribution). Raw relevance (streams
        summed) unless `final`, when the rule's final: is read out at every node as in CSC. `reduce` maps a node
        to a function applied to each chunk's (m, n_node) readout before it is kept."""
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
                t = t.reshape(m, -1)
                if reduce and r in reduce:
                    t = reduce[r](t)
                out[r].append(t.double())
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
    probe: _Probe,
    op: Any,
    exact_limit: int,
    columns: int,
    sketch: int,
    gen: torch.Generator,
    below: dict[str, tuple[str, tuple[int, ...]]] | None = None,
) -> tuple[NodeMap | None, _Block | None]:
    """The node's map statistics, and its block columns read at the nodes `below` ({node: (basis, shape)}, rows
    reduced to that basis on the fly)."""
    below = below or {}
    reducers = {b: _reducer(basis, shp) for b, (basis, shp) in below.items()}
    ex = probe.ex
    dev = probe.x1.device
    dtype = probe.x1.dtype
    shape = tuple(op.shape[1:])
    n_out = int(np.prod(shape))
    read = _input_names(ex, op)
    if not read:
        return None, None
    reads = list(dict.fromkeys([*read, *below]))
    on_the_fly = {b: f for b, f in reducers.items() if b not in read}  # direct inputs are needed whole

    def block(basis: str, res: dict[str, torch.Tensor]) -> _Block:
        return _Block(op.name, basis, {b: res[b] if b in on_the_fly else reducers[b](res[b]) for b in below})

    if n_out <= exact_limit:
        eye = torch.eye(n_out, dtype=dtype, device=dev).reshape(n_out, *shape)
        cols = probe.run(op, eye, reads, final=False, reduce=on_the_fly)
        m = torch.cat([cols[r] for r in read], 1).T  # (n_in, n_out)
        s1, s2 = _svals(m)
        node = NodeMap(op.name, _kind(op), "exact", m.shape[0], n_out, float(m.min()), float(m.max()), s1, s2)
        return node, block("units", cols)
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
        res = probe.run(op, ones.to(dev), reads, final=False, reduce=on_the_fly)
        blocks = []
        for r in read:
            t = res[r]
            in_shape = probe.x1.shape[1:] if r == "input" else tuple(ex.graph.op(r).shape[1:])
            t = t.reshape(c_out, *in_shape)
            blocks.append(t.flatten(2).sum(-1) if t.dim() > 2 else t)
        m = torch.cat(blocks, 1).T
        method, basis = "channels+columns", "channels"
    else:  # dense: Gaussian sketch M Ω
        omega = torch.randn(sketch, n_out, generator=gen, dtype=torch.float64).to(dtype)
        res = probe.run(op, omega.reshape(-1, *shape).to(dev), reads, final=False, reduce=on_the_fly)
        m = torch.cat([res[r] for r in read], 1).T
        method, basis = "sketch+columns", "sketch"
    s1, s2 = _svals(m)
    node = NodeMap(
        op.name, _kind(op), method, sampled.shape[1], n_out, float(sampled.min()), float(sampled.max()), s1, s2
    )
    return node, block(basis, res)


# ------------------------------------------------------------------------------------- inter-layer items
_COMPOSE_TOL = 1e-4  # relative error below which two measured block maps count as composing


@dataclass
class _Block:
    """One block's columns (injected at `top`'s output in `basis`), read at the nodes below in their bases:
    {node: (k, rows)}."""

    top: str
    basis: str  # "units" (unit vectors) | "channels" (a unit channel vector at every position) | "sketch"
    cols: dict[str, torch.Tensor]


def interlayer_factors(maps: Sequence[Any]) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """The factors of a matrix chain through the inter-layer items (research/paper.md §5.1 point 4).

    Parameters
    ----------
    maps : matrices M_1, ..., M_L (array-likes) whose product M_1 M_2 ⋯ M_L is the chain (M_l's columns are
        M_{l+1}'s rows). In `theory`'s convention (rows: a node's input units, columns: its output units) that is
        the bottom block first: the chain R_input = M_1 ⋯ M_L R_logits.

    Returns
    -------
    factors : [U_1 S_1^{1/2}, S_1^{1/2} V_1ᵀ U_2 S_2^{1/2}, ..., S_{L-1}^{1/2} V_{L-1}ᵀ U_L S_L^{1/2}, S_L^{1/2} V_Lᵀ]
        with the thin SVDs M_l = U_l S_l V_lᵀ; their product is M_1 ⋯ M_L.
    items : (σ1, σ2) of each of the L − 1 inter-layer items (σ2 = 0 for an item of rank < 2). They do not depend
        on the choice of singular vectors (signs, rotations within repeated singular values).
    """
    mats = [np.asarray(torch.as_tensor(m).detach().cpu().double().numpy()) for m in maps]
    if not mats or any(m.ndim != 2 for m in mats):
        raise AnalysisError("interlayer_factors needs a non-empty list of 2-D matrices")
    for k in range(len(mats) - 1):
        if mats[k].shape[1] != mats[k + 1].shape[0]:
            raise AnalysisError(
                f"matrix {k} has {mats[k].shape[1]} columns but matrix {k + 1} has {mats[k + 1].shape[0]} rows"
            )
    return _factors([np.linalg.svd(m, full_matrices=False) for m in mats])


_Svd = tuple[np.ndarray, np.ndarray, np.ndarray]


def _item(lower: _Svd, upper: _Svd) -> np.ndarray:
    """S_a^{1/2} V_aᵀ U_b S_b^{1/2} from the thin SVDs of M_a (lower) and M_b (upper)."""
    return (np.sqrt(lower[1])[:, None] * lower[2]) @ (upper[0] * np.sqrt(upper[1]))


def _top2(m: np.ndarray) -> tuple[float, float]:
    sv = np.linalg.svd(m, compute_uv=False)
    return (float(sv[0]) if sv.size else 0.0, float(sv[1]) if sv.size > 1 else 0.0)


def _factors(svds: Sequence[_Svd]) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    items = [_item(svds[k], svds[k + 1]) for k in range(len(svds) - 1)]
    first = svds[0][0] * np.sqrt(svds[0][1])
    last = np.sqrt(svds[-1][1])[:, None] * svds[-1][2]
    return [first, *items, last], [_top2(it) for it in items]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a/‖a‖ − b/‖b‖‖: equality up to a positive scale (channel sums scale a product by the positions)."""
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return 0.0 if na == nb else float("inf")
    return float((a / na - b / nb).norm())


def _cut_nodes(explainer: Any, candidates: Sequence[Any]) -> list[Any]:
    """The candidates every path from the output down to the input passes through (top-down order)."""
    g = explainer.graph
    top = output_op(explainer)
    parents = {o.name: [g.by_out[n].name if n in g.by_out else "input" for n in o.inputs if n in g.by_out or n is g.input]
               for o in ancestors(explainer, top)}  # fmt: skip
    cuts = []
    for c in candidates:
        if c is top:
            continue
        seen, stack, hit = {c.name}, [top.name], False
        while stack and not hit:
            for p in parents.get(stack.pop(), []):
                if p == "input":
                    hit = True
                    break
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        if not hit:
            cuts.append(c)
    return cuts


def _basis(op: Any, exact_limit: int) -> str:
    """How a node's output space is represented in its block map: the same choice as `_node_map` makes."""
    shape = tuple(op.shape[1:])
    if int(np.prod(shape)) <= exact_limit:
        return "units"
    return "channels" if len(shape) >= 2 else "sketch"


def _reducer(basis: str, shape: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """(k, n_units) readout -> (k, rows) in the basis of the block below (channel sums over positions)."""
    if basis == "channels":
        return lambda t: t.reshape(t.shape[0], shape[0], -1).sum(-1)
    return lambda t: t


def _interlayer_image(
    bounds: list[str], blocks: dict[str, _Block], chain_input: torch.Tensor | None
) -> tuple[list[InterLayerItem], float | None, str]:
    """Items of one image's chain of blocks (bounds: output op, cut nodes top-down, "input")."""
    basis = {b: blocks[b].basis for b in bounds[:-1]}
    basis["input"] = "units"
    mats = [blocks[b].cols[bounds[j + 1]].T for j, b in enumerate(bounds[:-1])]  # (rows, columns)
    svds: dict[int, _Svd] = {}

    def svd(j: int) -> _Svd:  # each block's SVD once
        if j not in svds:
            svds[j] = np.linalg.svd(mats[j].cpu().double().numpy(), full_matrices=False)
        return svds[j]

    items = []
    for j in range(len(bounds) - 2):
        up, lo, bottom = bounds[j], bounds[j + 1], bounds[j + 2]
        m_up, m_lo = mats[j], mats[j + 1]
        composite = blocks[up].cols[bottom].T
        err = _rel_err(m_lo @ m_up, composite)
        it = InterLayerItem(up, lo, basis[lo], err)
        if "sketch" in (basis[up], basis[lo]):
            it.note = "sketched map (dense output > exact_limit): no basis to compose"
        elif not err <= _COMPOSE_TOL:
            it.note = (
                "channel sums do not compose: the maps are not one channel mixing at every position"
                if "channels" in (basis[up], basis[lo], basis[bottom])
                else "block maps do not compose (relevance streams or a non-linear rule)"
            )
        else:
            it.sigma1, it.sigma2 = _top2(_item(svd(j + 1), svd(j)))
        items.append(it)
    if any(it.ratio is None for it in items):
        return items, None, "not every pair composes"
    if basis[bounds[0]] != "units" or chain_input is None:
        return items, None, "the chain's columns are not unit vectors at the logits"
    factors, _ = _factors([svd(j) for j in reversed(range(len(mats)))])
    prod = factors[0]
    for f in factors[1:]:
        prod = prod @ f
    return items, _rel_err(torch.from_numpy(prod), chain_input), ""


def _pool_interlayer(per_image: list[tuple[list[InterLayerItem], float | None, str]]) -> InterLayer:
    """Per pair: the image with the median σ1/σ2 when every image composes, else the first failing image's note."""
    out = InterLayer()
    for k, first in enumerate(per_image[0][0]):
        its = [img[0][k] for img in per_image]
        err = float(max(it.composition_error for it in its))
        bad = [it for it in its if it.ratio is None]
        if bad:
            out.items.append(InterLayerItem(first.upper, first.lower, first.basis, err, note=bad[0].note))
            continue
        ratios = np.array([it.ratio for it in its], dtype=float)
        med = its[int(np.argmin(np.abs(ratios - np.median(ratios))))]
        out.items.append(InterLayerItem(first.upper, first.lower, first.basis, err, med.sigma1, med.sigma2))
    errs = [img[1] for img in per_image if img[1] is not None]
    if len(errs) == len(per_image):
        out.factor_error = float(max(errs))
    else:
        out.factor_note = next(img[2] for img in per_image if img[1] is None)
    return out


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
) -> tuple[list[NodeMap], list[ChainRow], float, InterLayer | None]:
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
    # block boundaries for the inter-layer items: the output op, the measured nodes every path passes, the input
    top = output_op(explainer)
    bounds = [top.name] + [o.name for o in _cut_nodes(explainer, chosen[::-1])] + ["input"] if chosen else []
    by_name = {o.name: o for o in ops}
    basis = {b: _basis(by_name[b], exact_limit) for b in bounds[:-1]}
    basis["input"] = "units"
    shapes = {b: tuple(by_name[b].shape[1:]) for b in bounds[:-1]}
    below = {b: {n: (basis[n], shapes.get(n, ())) for n in bounds[j + 1 : j + 3]} for j, b in enumerate(bounds[:-1])}
    blocks: dict[int, dict[str, _Block]] = {}
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
            blocks[i] = {}
            top_measured = top.name in {o.name for o in chosen}
            if bounds and not top_measured:  # the top block starts at the logits even when they are not measured
                gen = torch.Generator().manual_seed(seed * 7919 + 1)
                tb = _node_map(p, top, exact_limit, columns, sketch, gen, below[top.name])[1]
                if tb is not None:
                    blocks[i][top.name] = tb
        gen = torch.Generator().manual_seed(seed * 7919 + len(per_node.get(op.name, [])))
        nm, blk = _node_map(probes[i], op, exact_limit, columns, sketch, gen, below.get(op.name))
        if nm is not None:
            per_node.setdefault(op.name, []).append(nm)
        if blk is not None and op.name in below:
            blocks[i][op.name] = blk
    inter = None
    if len(bounds) > 2 and all(b in blk for blk in blocks.values() for b in bounds[:-1]):
        unit_columns = int(np.prod(top.shape[1:])) <= 64  # _chain injects unit vectors at the logits
        per_image = [
            _interlayer_image(bounds, blocks[i], chains["input"][i] if unit_columns else None)
            for i in range(x.shape[0])
        ]
        inter = _pool_interlayer(per_image)
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
    return nodes, chain, lin_err, inter


def theory(
    explainer: Any,
    x: torch.Tensor,
    *,
    kinds: Sequence[str] | None = ("linear", "add", "avgpool"),
    exact_limit: int = 512,
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

    Inter-layer items (§5.1 point 4; `interlayer`): the chain from the logits down is cut at the measured nodes
    every path to the input passes through; each block map M_l runs from one such node's output to the next one's
    (so it contains the ReLUs, pools and reshapes in between, as the paper's Keras layers contain their ReLU),
    read in the same propagate calls as the node maps. With M_l = U_l S_l V_lᵀ the chain factors as
    U_1 S_1^{1/2} · Π S_l^{1/2} V_lᵀ U_{l+1} S_{l+1}^{1/2} · S_L^{1/2} V_Lᵀ (`interlayer_factors`); per consecutive
    pair: σ1/σ2 of the item, and Π σ1/σ2 over the pairs computed. A block is exact ("units") where its top node is
    within `exact_limit`, else a channel transfer matrix ("channels"; rows summed over positions where the block
    below is one) or a sketch (never composed). A channel transfer matrix composes honestly only where the maps act
    as one channel mixing at every position (1×1 convs with position-independent coefficients; exactly:
    A·M_a·(I − Π)·M_b·B = 0 with A the position sum, B the broadcast, Π the projection onto position-constant
    fields), so every pair is checked: the product of the two measured blocks against the two-block map measured
    directly (relative error ≤ 1e-4, up to the positive scale the channel sums introduce); pairs that fail get a
    note and no number. `factor_error` checks the whole factor product against the measured chain at the input.
    The gradient comparison adds the rule's and the gradient's products over the pairs both compute (ratio, log10).
    """
    x = check_images(x)
    nodes, chain, lin, inter = _measure(
        explainer, x, kinds, exact_limit, columns, sketch, seed, device, progress, reference
    )
    res = TheoryResult(images=x.shape[0], linear=lin < 1e-4, linearity_error=lin, nodes=nodes, chain=chain)
    res.interlayer = inter
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
    g_nodes, g_chain, _, g_inter = _measure(grad, x, kinds, exact_limit, columns, sketch, seed, device, False, None)

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
        **_interlayer_comparison(res.interlayer, g_inter),
    }


def _interlayer_comparison(rule: InterLayer | None, grad: InterLayer | None) -> dict[str, Any]:
    """The rule's inter-layer product against the gradient's, over the pairs both compute (§5.1 point 4)."""
    if rule is None or grad is None:
        return {}
    ok = {(it.upper, it.lower) for it in grad.items if it.ratio is not None}
    pairs = [(it.upper, it.lower) for it in rule.items if it.ratio is not None and (it.upper, it.lower) in ok]
    out: dict[str, Any] = {"interlayer": grad.to_dict(), "interlayer_pairs": [list(p) for p in pairs]}
    if pairs:
        r, g = rule.product_over(pairs), grad.product_over(pairs)
        ratio = r / g if g > 0 else float("nan")
        out.update(
            rule_interlayer_product=r,
            gradient_interlayer_product=g,
            interlayer_product_ratio=ratio,
            interlayer_log10_ratio=float(np.log10(ratio)) if ratio > 0 else float("nan"),
        )
    return out


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
