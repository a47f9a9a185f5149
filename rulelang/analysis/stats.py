"""Shared pieces of the measured analyses (`csc`, `theory`, `sanity`): the error type, device/dtype handling,
the rule's `final:` read out at any node, forward activations, the paper's random cosine baseline and pooled
|cos| statistics with bounded memory.
"""

from __future__ import annotations

import functools
import operator
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from ..errors import AnalysisError
from ..lang import ast as A

__all__ = [
    "AnalysisError",
    "PERCENTILES",
    "CosinePool",
    "activations",
    "ancestors",
    "explainer_device",
    "explainer_dtype",
    "output_op",
    "progress_bar",
    "random_baseline",
    "Readout",
]

#: the percentiles the paper stores per readout (research/paper.md §3.1 step 6)
PERCENTILES: tuple[int, ...] = (0, 1, 5, 10, 20, 50, 80, 95, 99, 100)


# ---------------------------------------------------------------------------------------------- environment
def explainer_dtype(explainer: Any, x: torch.Tensor | None = None) -> torch.dtype:
    """The floating dtype the explainer computes in: that of the model's first floating parameter or buffer,
    else that of `x`, else float32."""
    for t in list(explainer.model.parameters()) + list(explainer.model.buffers()):
        if t.is_floating_point():
            return t.dtype
    if x is not None and x.is_floating_point():
        return x.dtype
    return torch.float32


def explainer_device(explainer: Any, device: Any = None, x: torch.Tensor | None = None) -> torch.device:
    """`device` when given, else the device of the model's parameters, else that of `x`, else CPU."""
    if device is not None:
        return torch.device(device)
    for t in list(explainer.model.parameters()) + list(explainer.model.buffers()):
        return t.device
    return x.device if x is not None else torch.device("cpu")


def progress_bar(iterable: Iterable[Any], progress: bool | None, total: int | None = None, desc: str = "") -> Any:
    """tqdm over `iterable`; `progress=None` shows it only when stderr is a terminal."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(iterable, total=total, desc=desc, disable=not show, leave=False)


def check_images(x: Any, what: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 1:
        raise AnalysisError(f"{what} must be a batch of inputs (a tensor N×...), got {type(x).__name__}")
    return x


# ----------------------------------------------------------------------------------------------- the graph
def output_op(explainer: Any) -> Any:
    """The op producing the model output (the logits)."""
    g = explainer.graph
    op = g.by_out.get(g.output)
    return op if op is not None else g.ops[-1]


def resolve_op(explainer: Any, name: str) -> Any:
    """An op by node name, module path or fx name; "output" is the op producing the logits."""
    if name == "output":
        return output_op(explainer)
    try:
        return explainer.graph.op(name)
    except KeyError as e:
        raise AnalysisError(str(e.args[0])) from None


def ancestors(explainer: Any, op: Any) -> list[Any]:
    """`op` and every op that feeds it (directly or not), in reverse execution order (from `op` down)."""
    g = explainer.graph
    need = {op.out}
    out = []
    for o in reversed(g.ops):
        if o.out in need or o is op:
            out.append(o)
            need.update(o.inputs)
    return out


def activations(explainer: Any, x: torch.Tensor, ops: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Each op's output value on input `x` (the explainer's forward pass, model in eval mode, no grad)."""
    if hasattr(explainer, "activations"):
        return {k: v[1] for k, v in explainer.activations(x, [op.name for op in ops]).items()}
    from ..graph.trace import eval_mode  # older explainers: run the traced model

    g = explainer.graph
    wanted = {op.out: op.name for op in ops}
    values: dict[str, torch.Tensor] = {}

    class _Capture(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            v = super().run_node(n)
            if n in wanted:
                values[wanted[n]] = v
            return v

    with torch.no_grad(), eval_mode(g.gm):
        _Capture(g.gm).run(x)
    return values


# ----------------------------------------------------------------------------------------- final: readouts
_BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}
_FUNCS = {
    "abs": torch.abs,
    "sign": torch.sign,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "pos": lambda t: t.clamp(min=0),
    "neg": lambda t: t.clamp(max=0),
}


def _names(e: Any) -> set[str]:
    if isinstance(e, A.Name):
        return {e.id}
    if isinstance(e, A.Block):
        names = _names(e.result)
        for a in e.assigns:
            names |= _names(a.value)
        return names
    out: set[str] = set()
    for f in ("value", "left", "right", "operand", "index"):
        if hasattr(e, f):
            out |= _names(getattr(e, f))
    for a in getattr(e, "args", ()):
        out |= _names(a)
    return out


class Readout:
    """What a measured analysis reads at a node: the rule's `final:` block evaluated there.

    At the input this is the attribution itself. At any other node, `x`/`x0` are that node's output activation
    on the input and on the rule's reference input, and the stream names its relevance — so an LRP or gradient
    file (`final: R`) reads the relevance as is, a DeepLIFT file the contributions (x − x0)·m (RevealCancel:
    (x − x0)⁺·m⁺ + (x − x0)⁻·m⁻, the paper's m⁺Δ⁺ + m⁻Δ⁻ with the difference split by sign). A `final:` that
    uses anything else (a function outside abs sign exp log sqrt pos neg) falls back to the sum of the streams
    (`mode == "streams"`).
    """

    def __init__(self, explainer: Any) -> None:
        self.explainer = explainer
        rf = explainer.rules
        self.block = rf.final
        self.streams = tuple(rf.streams)
        self.params = {k: v for k, v in rf.params if isinstance(v, (int, float))}
        names = _names(self.block)
        self.needs_x = "x" in names
        self.needs_x0 = "x0" in names
        self.mode = "final"
        if not self._supported(self.block):
            self.mode = "streams"
            self.needs_x = self.needs_x0 = False
        self.identity = (
            self.mode == "final"
            and not self.block.assigns
            and isinstance(self.block.result, A.Name)
            and self.block.result.id in self.streams
            and len(self.streams) == 1
        )

    def _supported(self, e: Any) -> bool:
        if isinstance(e, A.Block):
            return all(self._supported(a.value) for a in e.assigns) and self._supported(e.result)
        if isinstance(e, A.Num | A.Name):
            return True
        if isinstance(e, A.Attr):
            return e.attr in ("pos", "neg", "abs") and self._supported(e.value)
        if isinstance(e, A.Unary):
            return e.op in ("-", "+") and self._supported(e.operand)
        if isinstance(e, A.Binary):
            return e.op in ("+", "-", "*", "/", "**") and self._supported(e.left) and self._supported(e.right)
        if isinstance(e, A.Call):
            return e.func in _FUNCS and not e.kwargs and len(e.args) == 1 and self._supported(e.args[0])
        return False

    def reference(self, x: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        from ..compiler.prims import reference_input

        kind = self.explainer.rules.reference
        if kind is None:
            return torch.zeros_like(x)
        try:
            return reference_input(x, reference, kind)
        except ValueError as e:
            raise AnalysisError(str(e)) from None

    def __call__(self, rel: Any, act: torch.Tensor | None = None, act0: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(rel, torch.Tensor):
            rel = {self.streams[0]: rel}
        if self.mode == "streams":
            return sum(rel.values())
        if self.identity:
            return rel[self.streams[0]]
        env: dict[str, Any] = dict(self.params)
        env.update(rel)
        if act is not None:
            env["x"] = act
        if act0 is not None:
            env["x0"] = act0
        for a in self.block.assigns:
            env[a.name] = self._eval(a.value, env)
        out = self._eval(self.block.result, env)
        ref = next(iter(rel.values()))
        return out if isinstance(out, torch.Tensor) else torch.full_like(ref, float(out))

    def _eval(self, e: Any, env: dict[str, Any]) -> Any:
        if isinstance(e, A.Num):
            return e.value
        if isinstance(e, A.Name):
            if e.id not in env:
                raise AnalysisError(f"cannot read `{e.id}` of the rule's final: block at an inner node")
            return env[e.id]
        if isinstance(e, A.Attr):
            v = self._eval(e.value, env)
            return {"pos": lambda t: t.clamp(min=0), "neg": lambda t: t.clamp(max=0), "abs": abs}[e.attr](v)
        if isinstance(e, A.Unary):
            v = self._eval(e.operand, env)
            return -v if e.op == "-" else v
        if isinstance(e, A.Binary):
            a, b = self._eval(e.left, env), self._eval(e.right, env)
            return _BINARY[e.op](a, b)
        if isinstance(e, A.Call):
            return _FUNCS[e.func](self._eval(e.args[0], env))
        raise AnalysisError(f"unsupported expression in final: {e!r}")


# ------------------------------------------------------------------------------------------------ baselines
@functools.lru_cache(maxsize=256)
def random_baseline(channels: int, seed: int = 0, n: int = 1000) -> float:
    """The paper's random cosine baseline for `channels`-dimensional vectors (research/paper.md §3.1 step 8):
    `n` = 1000 vectors u and 1000 vectors v ~ N(0, I_C) (seeded), the n×n |cos| matrix between them, the median
    over its lower triangle including the diagonal. ≈ 0.6745/√C for large C; exactly 1 for C = 1."""
    if channels < 1:
        raise AnalysisError(f"channels must be >= 1, got {channels}")
    rng = np.random.default_rng([seed, channels])
    gram = np.zeros((n, n))
    nu = np.zeros(n)
    nv = np.zeros(n)
    step = max(1, 2**22 // (2 * n))  # columns per chunk: bounded memory for wide dense layers
    for lo in range(0, channels, step):
        c = min(step, channels - lo)
        u = rng.standard_normal((n, c))
        v = rng.standard_normal((n, c))
        gram += u @ v.T
        nu += (u * u).sum(1)
        nv += (v * v).sum(1)
    cos = np.abs(gram / np.sqrt(nu)[:, None] / np.sqrt(nv)[None, :])
    return float(np.median(cos[np.tril_indices(n)]))


# ------------------------------------------------------------------------------------ pooled |cos| statistics
def _edges() -> np.ndarray:
    """Bin edges on d = 1 − |cos|: 0, then 2000 log-spaced bins per decade from 1e-16 to 0.1, then linear bins
    of width 1e-5 up to 1 (so |cos| < 0.9 is resolved to 1e-5 and 1 − |cos| < 0.1 to 0.12 % of itself)."""
    log = 10.0 ** np.linspace(-16, -1, 15 * 2000 + 1)
    lin = np.linspace(0.1, 1.0, 90000 + 1)[1:]
    return np.concatenate([[0.0], log, lin])


_EDGES = _edges()


class CosinePool:
    """|cos| values pooled over positions × pairs × images with bounded memory.

    Values are kept exactly (as d = 1 − |cos| in float32, computed in float64, so values near 1 keep their
    precision) while there are at most `exact_limit`; percentiles are then numpy's (linear interpolation). Beyond
    that the exact values are dropped and percentiles come from a fixed histogram on d (see `_edges`), linearly
    interpolated within a bin. Count, mean, minimum and maximum are always exact.
    """

    def __init__(self, exact_limit: int = 2**22) -> None:
        self.exact_limit = exact_limit
        self.chunks: list[np.ndarray] | None = []
        self.kept = 0
        self.counts = np.zeros(len(_EDGES) + 1, dtype=np.int64)
        self.n = 0
        self.total = 0.0
        self.lo = np.inf
        self.hi = -np.inf

    def add(self, d: torch.Tensor) -> None:
        """Adds values d = 1 − |cos| (any shape, NaNs already dropped; float64 preferred)."""
        d = d.reshape(-1)
        if d.numel() == 0:
            return
        self.n += d.numel()
        self.total += float((1.0 - d).sum())
        self.lo = min(self.lo, float(1.0 - d.max()))
        self.hi = max(self.hi, float(1.0 - d.min()))
        edges = torch.as_tensor(_EDGES, dtype=d.dtype, device=d.device)
        idx = torch.bucketize(d, edges, right=True)
        self.counts += torch.bincount(idx, minlength=len(_EDGES) + 1).cpu().numpy()
        if self.chunks is not None:
            if self.kept + d.numel() <= self.exact_limit:
                self.chunks.append(d.float().cpu().numpy())
                self.kept += d.numel()
            else:
                self.chunks = None

    @property
    def exact(self) -> bool:
        return self.chunks is not None

    def percentiles(self, qs: Sequence[float] = PERCENTILES) -> dict[str, float]:
        """{"q": |cos| percentile}; NaN for every q when no value was added."""
        if self.n == 0:
            return {str(q): float("nan") for q in qs}
        if self.chunks is not None:
            vals = np.percentile(np.concatenate(self.chunks).astype(np.float64), [100 - q for q in qs])
            return {str(q): float(1.0 - v) for q, v in zip(qs, vals, strict=True)}
        out = {}
        cum = np.cumsum(self.counts)
        for q in qs:
            rank = (100 - q) / 100 * (self.n - 1)  # 0-based rank in ascending d
            b = int(np.searchsorted(cum, rank, side="right"))
            below = cum[b - 1] if b > 0 else 0
            frac = (rank - below + 0.5) / max(self.counts[b], 1)
            lo = _EDGES[b - 1] if b > 0 else 0.0
            hi = _EDGES[b] if b < len(_EDGES) else 1.0
            d: float
            if b == 1:  # d == 0 exactly
                d = 0.0
            elif 0 < lo < 0.1 and hi <= 0.1:
                d = float(lo * (hi / lo) ** min(max(frac, 0.0), 1.0))
            else:
                d = float(lo + (hi - lo) * min(max(frac, 0.0), 1.0))
            out[str(q)] = float(1.0 - d)
        out[str(qs[0])] = self.lo if qs[0] == 0 else out[str(qs[0])]
        out[str(qs[-1])] = self.hi if qs[-1] == 100 else out[str(qs[-1])]
        return out

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")


def pair_cosines(v: torch.Tensor) -> torch.Tensor:
    """|cos| between the K probe vectors of every (image, position): `v` is (B, K, P, C); returns
    (B, P, K·(K−1)/2) in float64, NaN where a vector is zero."""
    v = v.double()
    u = v / v.norm(dim=-1, keepdim=True)  # NaN for zero vectors
    k = v.shape[1]
    gram = torch.einsum("bkpc,blpc->bpkl", u, u)  # (B, P, K, K)
    i, j = torch.triu_indices(k, k, offset=1, device=v.device)
    return gram[:, :, i, j].abs().clamp(max=1.0)
