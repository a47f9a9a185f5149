"""Independent reference implementations of the methods no peer library implements (and of a few that zennit
does, to validate the oracle harness), written from the formulas of research/paper.md §1.4.

The reference knows nothing of rulelang. A small network is a list of nodes `(name, op, inputs)` (`SpecNet`,
an ordinary fx-traceable module). For the reference every linear op (conv, dense, avg-pool, flatten) becomes an
explicit matrix `W` (out × in, over flattened activations) and bias `b`, extracted with `torch.autograd.functional
.jacobian` at zero; a max-pool becomes its per-sample 0/1 switch matrix. Each rule is then a matrix formula over
one sample at a time, in float64 — no vjp, no conv-transpose, no hooks: a different code path from both
rulelang's compiler and zennit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

DTYPE = torch.float64
NEAR_ZERO = 1e-7  # deeplift.util.NEAR_ZERO_THRESHOLD


# ------------------------------------------------------------------------------------------------- the network
class SpecNet(torch.nn.Module):
    """Executes `spec = [(name, op, inputs)]` in order; `op` is a module or "add"; input "in" is the model input."""

    def __init__(self, spec: Sequence[tuple[str, object, Sequence[str]]]):
        super().__init__()
        self.spec = [(n, (op if isinstance(op, str) else None), tuple(i)) for n, op, i in spec]
        self.mods = torch.nn.ModuleDict({n: op for n, op, _ in spec if not isinstance(op, str)})

    def forward(self, x):
        acts = {"in": x}
        for name, op, inputs in self.spec:
            args = [acts[i] for i in inputs]
            acts[name] = args[0] + args[1] if op == "add" else self.mods[name](*args)
        return acts[self.spec[-1][0]]


def sequential(*mods: torch.nn.Module) -> SpecNet:
    spec, prev = [], "in"
    for k, m in enumerate(mods):
        spec.append((f"l{k}", m, [prev]))
        prev = f"l{k}"
    return SpecNet(spec)


@dataclass
class Node:
    name: str
    kind: str  # linear (conv/dense/BN) | avgpool | reshape | relu | maxpool | add | identity
    inputs: tuple[str, ...]
    W: torch.Tensor | None = None  # (out, in) for linear; per-sample list for maxpool
    b: torch.Tensor | None = None
    dense: bool = False  # an nn.Linear (not conv)
    first: bool = False
    last: bool = False
    S: list = field(default_factory=list)


def _kind(m) -> str:
    if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)):
        return "linear"
    if isinstance(m, (torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d)):
        return "avgpool"
    if isinstance(m, torch.nn.Flatten):
        return "reshape"
    if isinstance(m, torch.nn.ReLU):
        return "relu"
    if isinstance(m, (torch.nn.MaxPool2d,)):
        return "maxpool"
    if isinstance(m, (torch.nn.Dropout, torch.nn.Identity)):
        return "identity"
    raise NotImplementedError(type(m).__name__)


def analyse(net: SpecNet, x: torch.Tensor):
    """Forward pass (flattened activations per node) and the matrix form of every node."""
    acts = {"in": x}
    nodes: list[Node] = []
    for name, op, inputs in net.spec:
        args = [acts[i] for i in inputs]
        if op == "add":
            nodes.append(Node(name, "add", inputs))
            acts[name] = args[0] + args[1]
            continue
        m = net.mods[name]
        kind = _kind(m)
        y = m(args[0])
        node = Node(name, kind, inputs, dense=isinstance(m, torch.nn.Linear))
        if kind in ("linear", "avgpool", "reshape"):
            x0 = torch.zeros_like(args[0][:1])
            J = torch.autograd.functional.jacobian(lambda t: m(t), x0)
            node.W = J.reshape(y[0].numel(), args[0][0].numel())
            node.b = m(x0).reshape(-1)
        elif kind == "maxpool":
            node.S = [
                torch.autograd.functional.jacobian(lambda t: m(t), args[0][k : k + 1]).reshape(
                    y[0].numel(), args[0][0].numel()
                )
                for k in range(x.shape[0])
            ]
        nodes.append(node)
        acts[name] = y
    # positions: `first` consumes the model input (through shape ops), `last` produces the output
    for n in nodes:
        if n.kind == "linear" and "in" in n.inputs:
            n.first = True
    # `last` looks through shape ops and dropout, as rulelang's selector does
    for n in reversed(nodes):
        n.last = True
        if n.kind not in ("reshape", "identity"):
            break
    return {k: v.detach().reshape(v.shape[0], -1) for k, v in acts.items()}, nodes


# ------------------------------------------------------------------------------------------------ the backward
def stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


Rule = Callable[..., list]


def propagate(
    net: SpecNet,
    x: torch.Tensor,
    target: torch.Tensor,
    rules: dict[str, Rule],
    init: str = "target",
    final: Callable | None = None,
) -> torch.Tensor:
    """Generic single-stream backward: `rules[kind](node, k, xs, y, R) -> [R_in per input]` per sample k."""
    acts, nodes = analyse(net, x.detach())
    out = acts[nodes[-1].name]
    onehot = torch.nn.functional.one_hot(target, out.shape[1]).to(out)
    seed = onehot * out if init == "output" else onehot
    result = []
    for k in range(x.shape[0]):
        rel = {nodes[-1].name: seed[k]}
        for n in reversed(nodes):
            R = rel.pop(n.name, None)
            if R is None:
                continue
            xs = [acts[i][k] for i in n.inputs]
            rule = rules.get(n.name) or rules.get(n.kind) or GRADIENT[n.kind]
            rins = rule(n, k, xs, acts[n.name][k], R)
            for i, r in zip(n.inputs, rins):
                rel[i] = rel[i] + r if i in rel else r
        Rx = rel["in"]
        result.append(final(acts["in"][k], Rx) if final else Rx)
    return torch.stack(result).reshape(x.shape)


# gradient-type pieces
def g_linear(n, k, xs, y, R):
    return [n.W.T @ R]


def g_relu(n, k, xs, y, R):
    return [R * (xs[0] > 0)]


def g_maxpool(n, k, xs, y, R):
    return [n.S[k].T @ R]


def g_copy(n, k, xs, y, R):
    return [R for _ in xs]


GRADIENT = {
    "linear": g_linear,
    "avgpool": g_linear,
    "reshape": g_linear,
    "relu": g_relu,
    "maxpool": g_maxpool,
    "add": g_copy,
    "identity": g_copy,
}


def gradient(net, x, target):
    return propagate(net, x, target, GRADIENT)


def rectgrad(net, x, target, q: float = 98.0, interpolation: str = "linear"):
    """RectGrad (Kim et al. 2019; the paper's code): at every ReLU pass R only where y·R exceeds the q-th
    percentile of y·R over the sample's units (τ per sample, per layer)."""

    def relu(n, k, xs, y, R):
        a = y * R
        tau = torch.quantile(a, q / 100.0, interpolation=interpolation)
        return [torch.where(a > tau, R, torch.zeros_like(R))]

    return propagate(net, x, target, {**GRADIENT, "relu": relu})


# LRP pieces (per sample, matrix form: Z[j, i] = contribution of input i to output j)
def zplus_matrix(n, x):
    W = n.W
    Z = x.clamp(min=0)[None, :] * W.clamp(min=0) + x.clamp(max=0)[None, :] * W.clamp(max=0)
    return Z, n.b.clamp(min=0)


def lrp_from(Z, bias, R, eps):
    den = stab(Z.sum(1) + bias, eps)
    return (Z / den[:, None] * R[:, None]).sum(0)


def lrp_zplus(n, k, xs, y, R, eps=1e-6):
    Z, b = zplus_matrix(n, xs[0])
    return [lrp_from(Z, b, R, eps)]


def lrp_epsilon(n, k, xs, y, R, eps=1e-6):
    Z = xs[0][None, :] * n.W
    return [lrp_from(Z, n.b, R, eps)]


def lrp_wsquare(n, k, xs, y, R, eps=1e-6, bias=False):
    W2 = n.W**2
    return [lrp_from(W2, n.b**2 if bias else torch.zeros_like(n.b), R, eps)]


def lrp_zbox(lo, hi):
    def rule(n, k, xs, y, R, eps=1e-6):
        x = xs[0]
        l = torch.broadcast_to(lo, x.shape) if torch.is_tensor(lo) else torch.full_like(x, lo)
        h = torch.broadcast_to(hi, x.shape) if torch.is_tensor(hi) else torch.full_like(x, hi)
        W = n.W
        Z = x[None, :] * W - l[None, :] * W.clamp(min=0) - h[None, :] * W.clamp(max=0)
        return [lrp_from(Z, torch.zeros_like(n.b), R, eps)]

    return rule


def lrp_add_z(n, k, xs, y, R, eps=1e-6):
    return [xi * R / stab(y, eps) for xi in xs]


def dtd_bounded(net, x, target, lo, hi, eps=1e-6):
    """Bounded DTD (iNNvestigate `deep_taylor.bounded`, paper §1.4.5): zB on the first linear layer, w² (no bias)
    on a last dense layer, z+ (bias in the denominator) on the other linear layers; ReLU, pooling and adds use
    the gradient. Seeded with the logit value."""
    zb = lrp_zbox(lo, hi)

    def linear(n, k, xs, y, R):
        if n.first:
            return zb(n, k, xs, y, R, eps)
        if n.last and n.dense:
            return lrp_wsquare(n, k, xs, y, R, eps)
        return lrp_zplus(n, k, xs, y, R, eps)

    return propagate(net, x, target, {**GRADIENT, "linear": linear}, init="output")


# ---------------------------------------------------------------------------------------------------- DeepLIFT
def _pc(t):
    """deeplift.helper_functions.pseudocount_near_zero."""
    small = t.abs() < 0.5 * NEAR_ZERO
    return t + torch.where(small, torch.where(t >= 0, NEAR_ZERO, -NEAR_ZERO), 0.0).to(t)


def deeplift(
    net: SpecNet,
    x: torch.Tensor,
    target: torch.Tensor,
    mode: str = "rescale",
    baseline: torch.Tensor | None = None,
    cross: bool = True,
) -> torch.Tensor:
    """The kundajelab `deeplift` package (Shrikumar et al. 2017) on a SpecNet: linear layers in Linear mode
    (multipliers routed by the sign of the input difference; `cross=False` drops the paths through negative
    weights — the paper's ablation), ReLUs in Rescale or RevealCancel mode, max-pool by its switches, adds as a
    dense layer with kernel [1, 1]. Returns m⁺·Δx⁺ + m⁻·Δx⁻ at the input."""
    baseline = torch.zeros_like(x) if baseline is None else baseline
    acts, nodes = analyse(net, x.detach())
    refs, _ = analyse(net, baseline.detach())
    out = acts[nodes[-1].name]
    onehot = torch.nn.functional.one_hot(target, out.shape[1]).to(out)
    result = []
    for k in range(x.shape[0]):
        d = {n: acts[n][k] - refs[n][k] for n in acts}
        # forward: pos/neg contributions of every node output (only read by RevealCancel ReLUs)
        contribs = {"in": (d["in"].clamp(min=0), d["in"].clamp(max=0))}
        mats = {}
        for n in nodes:
            if n.kind in ("linear", "avgpool", "add"):
                if n.kind == "add":
                    ins = torch.cat([d[i] for i in n.inputs])
                    W = torch.cat([torch.eye(d[n.name].numel(), dtype=DTYPE)] * len(n.inputs), 1)
                else:
                    ins, W = d[n.inputs[0]], n.W
                mats[n.name] = (W, ins)
                p, q = ins.clamp(min=0), ins.clamp(max=0)
                Wp, Wn = W.clamp(min=0), W.clamp(max=0)
                contribs[n.name] = (Wp @ p + Wn @ q, Wn @ p + Wp @ q)
            elif n.kind == "relu" and mode == "reveal_cancel":
                ip, ineg = (_pc(t) for t in contribs[n.inputs[0]])
                r = refs[n.inputs[0]][k]
                f = torch.relu
                contribs[n.name] = (
                    0.5 * (f(r + ip) - f(r)) + 0.5 * (f(r + ineg + ip) - f(r + ineg)),
                    0.5 * (f(r + ineg) - f(r)) + 0.5 * (f(r + ip + ineg) - f(r + ip)),
                )
            elif n.kind in ("reshape", "identity"):
                contribs[n.name] = contribs[n.inputs[0]]
            else:
                contribs[n.name] = (d[n.name].clamp(min=0), d[n.name].clamp(max=0))
        mp = {nodes[-1].name: onehot[k]}
        mn = {nodes[-1].name: onehot[k]}

        def add(name, a, b):
            mp[name] = mp[name] + a if name in mp else a
            mn[name] = mn[name] + b if name in mn else b

        for n in reversed(nodes):
            if n.name not in mp:
                continue
            P, N = mp.pop(n.name), mn.pop(n.name)
            if n.kind in ("linear", "avgpool", "add"):
                W, ins = mats[n.name]
                Wp, Wn = W.clamp(min=0), W.clamp(max=0)
                if cross:
                    m = torch.where(
                        ins > 0, Wp.T @ P + Wn.T @ N, torch.where(ins < 0, Wn.T @ P + Wp.T @ N, W.T @ (0.5 * (P + N)))
                    )
                else:
                    m = torch.where(ins > 0, Wp.T @ P, torch.where(ins < 0, Wp.T @ N, W.T @ (0.5 * (P + N))))
                sizes = [d[i].numel() for i in n.inputs]
                for i, part in zip(n.inputs, torch.split(m, sizes)):
                    add(i, part, part)
            elif n.kind == "relu":
                xi = n.inputs[0]
                if mode == "rescale":
                    dx = d[xi]
                    near = dx.abs() < NEAR_ZERO
                    grad_ref = (refs[n.name][k] > 0).to(dx)  # gradient at the reference ("default") activation
                    s = torch.where(near, grad_ref, d[n.name] / torch.where(near, 1.0, dx))
                    add(xi, P * s, N * s)
                else:
                    ip, ineg = contribs[xi]
                    op, on = contribs[n.name]
                    add(xi, P * op / _pc(ip), N * on / _pc(ineg))
            elif n.kind == "maxpool":
                S = n.S[k]
                add(n.inputs[0], S.T @ P, S.T @ N)
            elif n.kind == "reshape":
                add(n.inputs[0], n.W.T @ P, n.W.T @ N)
            else:
                add(n.inputs[0], P, N)
        dx = d["in"]
        result.append(mp["in"] * dx.clamp(min=0) + mn["in"] * dx.clamp(max=0))
    return torch.stack(result).reshape(x.shape)


# ---------------------------------------------------------------------------------- PatternNet / Attribution
def fit_patterns(net: SpecNet, data: torch.Tensor) -> dict[str, torch.Tensor]:
    """iNNvestigate 1.0.8's PatternComputer, pattern_type="relu" (ReLUPositivePattern), for the dense layers: per
    output unit j, with y = w_j x (no bias) and the mask m_j = [the following ReLU's output > 0] (all ones when no
    ReLU follows — the logit layer), E_m[x] and E_m[x y] average over the masked samples and E[y] over all
    samples; cov_j = E_m[x y_j] - E_m[x] E[y_j] and A_j = cov_j / (w_j . cov_j). Returned as (out, in)."""
    acts, nodes = analyse(net, data)
    consumers = {i: n for n in nodes for i in n.inputs}
    out = {}
    for n in nodes:
        if n.kind != "linear" or not n.dense:
            continue
        X = acts[n.inputs[0]]  # (N, in)
        Y = X @ n.W.T  # (N, out), without bias
        nxt = consumers.get(n.name)
        if nxt is not None and nxt.kind == "relu":
            mask = (acts[nxt.name] > 0).to(X)
        else:
            mask = torch.ones_like(Y)
        count = mask.sum(0).clamp_min(1)
        mean_x = X.T @ mask / count  # (in, out)
        mean_xy = X.T @ (Y * mask) / count
        mean_y = Y.mean(0)
        cov = mean_xy - mean_x * mean_y
        wcov = (n.W.T * cov).sum(0)
        A = cov / (wcov + (wcov == 0).to(wcov))
        out[n.name] = A.T.contiguous()
    return out


def pattern_method(
    net: SpecNet, x: torch.Tensor, target: torch.Tensor, patterns: dict[str, torch.Tensor], attribution: bool
) -> torch.Tensor:
    """PatternNet (kernel -> pattern) or PatternAttribution (kernel -> w * pattern) backward, ReLU masks and
    pooling switches as the gradient, seeded with the logit value."""

    def linear(n, k, xs, y, R):
        P = patterns[n.name] * n.W if attribution else patterns[n.name]
        return [P.T @ R]

    return propagate(net, x, target, {**GRADIENT, "linear": linear}, init="output")
