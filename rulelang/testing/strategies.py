"""Hypothesis strategies for testing rules: small random traceable models, their inputs, and rule parameters.

A model is described by a `ModelSpec` (a tuple of blocks over a C×H×W feature map, a head that flattens, and
dense layers), from which `ModelSpec.source()` writes a small runnable `nn.Module` class; the model *is* that
code, executed, so a counterexample prints exactly the model that failed. Blocks use every call form on purpose:
modules, functions, tensor methods, in-place ops, a module called twice.

- `models()` draws eval-mode models (float64 by default), `model_specs()` their descriptions;
- `inputs(model)` draws input batches: Gaussian, all zeros, large, tiny, positive, and "dead" inputs that make
  every unit of the first ReLU zero;
- `params(rules)` draws parameter overrides that satisfy the rule file's `require:`;
- `models_and_inputs()` draws (model, input) pairs (used by the compiler's own property tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from .models import randomize_

#: Block kinds of the feature-map part of a model (each with its call forms, see `FORMS`).
BLOCKS = ("conv", "bn", "act", "pool", "res2", "res3", "cat", "twice", "dropout")

FORMS: dict[str, tuple[str, ...]] = {
    "conv": ("module", "functional"),
    "bn": ("module",),
    "act": (
        "relu",
        "relu_inplace",
        "F.relu",
        "torch.relu",
        "method_relu",
        "sigmoid",
        "tanh",
        "F.silu",
        "F.elu",
        "leaky_relu",
        "nn.Softplus",
    ),
    "pool": ("maxpool", "F.max_pool2d", "avgpool", "F.avg_pool2d", "adaptive_avg", "adaptive_max"),
    "res2": ("plus", "iadd", "torch.add"),
    "res3": ("plus",),
    "cat": ("torch.cat",),
    "twice": ("module",),
    "dropout": ("module",),
}

#: Ways to go from a feature map to a vector.
HEADS = ("flatten", "view", "reshape", "mean", "adaptive", "nn.Flatten")

#: Activation forms with f(0) != 0: a constant share of relevance, like a bias (not drawn for bias-free models).
BIASED_ACTIVATIONS = ("sigmoid", "nn.Softplus")

#: Activation forms whose op kind is `relu` (the others are `activation`).
RELU_FORMS = ("relu", "relu_inplace", "F.relu", "torch.relu", "method_relu")

Block = tuple[Any, ...]


@dataclass(frozen=True)
class ModelSpec:
    """What a random model is made of (readable in hypothesis' output; `source()` is its Python code).

    `blocks` act on the feature map, e.g. `("conv", "module", 3)` (form, output channels), `("act", "tanh")`,
    `("pool", "maxpool")`; `tail` are the dense layers after `head`: `("dense", form, width)` or `("act", form)`.
    `bias=False` makes every conv/dense bias-free and every BatchNorm shift-free (mean 0, beta 0).
    """

    channels: int = 1
    size: int = 4
    blocks: tuple[Block, ...] = ()
    head: str = "flatten"
    tail: tuple[Block, ...] = ()
    classes: int = 2
    bias: bool = True
    seed: int = 0

    def source(self, name: str = "Net") -> str:
        """The model as a runnable `nn.Module` class definition."""
        return _generate(self, name)[0]

    def code(self, dtype: torch.dtype = torch.float64, name: str = "model") -> str:
        """Runnable code building the model (imports, class, seeded construction), assigned to `name`."""
        return (
            "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
            "from rulelang.testing.models import randomize_\n\n\n"
            f"{self.source()}\n\n"
            f"torch.manual_seed({self.seed})\n"
            f"{name} = randomize_(Net(), seed={self.seed}, bias={self.bias}).to({_dtype_name(dtype)}).eval()\n"
        )

    def build(self, dtype: torch.dtype = torch.float64) -> nn.Module:
        """The eval-mode model (same weights as running `code()`)."""
        src, _ = _generate(self, "Net")
        namespace: dict[str, Any] = {}
        exec(compile(src, f"<rulelang.testing model seed={self.seed}>", "exec"), _exec_globals(), namespace)
        torch.manual_seed(self.seed)
        model = randomize_(namespace["Net"](), seed=self.seed, bias=self.bias).to(dtype).eval()
        model.spec = self  # type: ignore[assignment]
        return model


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype)  # "torch.float64"


def _exec_globals() -> dict[str, Any]:
    import torch.nn.functional as F

    return {"torch": torch, "nn": nn, "F": F, "__name__": "rulelang_testing_model"}


@dataclass
class _Gen:
    init: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    k: int = 0

    def layer(self, ctor: str) -> str:
        name = f"l{self.k}"
        self.k += 1
        self.init.append(f"self.{name} = {ctor}")
        return f"self.{name}"


def _act(form: str, t: str) -> str:
    return {
        "F.relu": f"F.relu({t})",
        "torch.relu": f"torch.relu({t})",
        "method_relu": f"{t}.relu()",
        "sigmoid": f"torch.sigmoid({t})",
        "tanh": f"{t}.tanh()",
        "F.silu": f"F.silu({t})",
        "F.elu": f"F.elu({t})",
        "leaky_relu": f"F.leaky_relu({t}, 0.1)",
    }[form]


def _generate(spec: ModelSpec, name: str) -> tuple[str, tuple[int, int]]:
    g = _Gen()
    c, s = spec.channels, spec.size
    bias = "" if spec.bias else ", bias=False"

    def act(form: str) -> None:
        if form == "relu_inplace" and not g.body:
            form = "relu"  # never overwrite the caller's input tensor
        if form in ("relu", "relu_inplace", "nn.Softplus"):
            ctor = {"relu": "nn.ReLU()", "relu_inplace": "nn.ReLU(inplace=True)", "nn.Softplus": "nn.Softplus()"}
            g.body.append(f"x = {g.layer(ctor[form])}(x)")
        else:
            g.body.append(f"x = {_act(form, 'x')}")

    for block in spec.blocks:
        kind, form = block[0], block[1]
        if kind == "conv":
            out = block[2]
            m = g.layer(f"nn.Conv2d({c}, {out}, 3, padding=1{bias})")
            if form == "module":
                g.body.append(f"x = {m}(x)")
            else:
                g.body.append(f"x = F.conv2d(x, {m}.weight, {m}.bias, padding=1)")
            c = out
        elif kind == "bn":
            g.body.append(f"x = {g.layer(f'nn.BatchNorm2d({c})')}(x)")
        elif kind == "act":
            act(form)
        elif kind == "pool":
            if s < 2:
                continue  # nothing left to pool
            t = s // 2
            ctor = {
                "maxpool": "nn.MaxPool2d(2)",
                "avgpool": "nn.AvgPool2d(2)",
                "adaptive_max": f"nn.AdaptiveMaxPool2d({t})",
            }
            if form in ctor:
                g.body.append(f"x = {g.layer(ctor[form])}(x)")
            elif form == "adaptive_avg":
                g.body.append(f"x = F.adaptive_avg_pool2d(x, {t})")
            else:
                g.body.append(f"x = {form}(x, 2)")
            s = t
        elif kind == "res2":
            m = g.layer(f"nn.Conv2d({c}, {c}, 3, padding=1{bias})")
            if form == "plus":
                g.body.append(f"x = x + {m}(x)")
            elif form == "iadd":
                g.body += [f"y = {m}(x)", "y += x  # in place on the conv output", "x = y"]
            else:
                g.body.append(f"x = torch.add(x, torch.relu({m}(x)))")
        elif kind == "res3":
            a = g.layer(f"nn.Conv2d({c}, {c}, 3, padding=1{bias})")
            b = g.layer(f"nn.Conv2d({c}, {c}, 1{bias})")
            g.body.append(f"x = x + {a}(x) + torch.relu({b}(x))")
        elif kind == "cat":
            m = g.layer(f"nn.Conv2d({c}, {c}, 1{bias})")
            g.body.append(f"x = torch.cat([x, torch.relu({m}(x))], 1)")
            c *= 2
        elif kind == "twice":
            m = g.layer(f"nn.Conv2d({c}, {c}, 3, padding=1{bias})")
            g.body.append(f"x = {m}(F.relu({m}(x)))  # one module, called twice")
        elif kind == "dropout":
            g.body.append(f"x = {g.layer('nn.Dropout(0.5)')}(x)")
    head = spec.head
    width = c * s * s
    if head == "flatten":
        g.body.append("x = torch.flatten(x, 1)")
    elif head == "view":
        g.body.append("x = x.view(x.size(0), -1)")
    elif head == "reshape":
        g.body.append("x = x.reshape(x.shape[0], -1)")
    elif head == "mean":
        g.body.append("x = x.mean((2, 3))")
        width = c
    elif head == "adaptive":
        g.body.append("x = F.adaptive_avg_pool2d(x, 1).flatten(1)")
        width = c
    else:
        g.body.append(f"x = {g.layer('nn.Flatten()')}(x)")
    for block in spec.tail:
        if block[0] == "dense":
            m = g.layer(f"nn.Linear({width}, {block[2]}{bias})")
            g.body.append(f"x = {m}(x)" if block[1] == "module" else f"x = F.linear(x, {m}.weight, {m}.bias)")
            width = block[2]
        else:
            act(block[1])
    m = g.layer(f"nn.Linear({width}, {spec.classes}{bias})")
    g.body.append(f"x = {m}(x)")
    lines = [f"class {name}(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    lines += [f"        {line}" for line in g.init]
    lines += ["", "    def forward(self, x):"] + [f"        {line}" for line in g.body] + ["        return x"]
    return "\n".join(lines) + "\n", (c, s)


# ------------------------------------------------------------------------------------------------- strategies
@st.composite
def _block(draw: st.DrawFn, kinds: tuple[str, ...], acts: tuple[str, ...], pools: tuple[str, ...]) -> Block:
    kind = draw(st.sampled_from(kinds))
    forms = acts if kind == "act" else pools if kind == "pool" else FORMS[kind]
    form = draw(st.sampled_from(forms))
    if kind == "conv":
        return (kind, form, draw(st.integers(1, 4)))
    return (kind, form)


@st.composite
def model_specs(
    draw: st.DrawFn,
    max_blocks: int = 6,
    blocks: tuple[str, ...] = BLOCKS,
    activations: tuple[str, ...] = FORMS["act"],
    pools: tuple[str, ...] = FORMS["pool"],
    heads: tuple[str, ...] = HEADS,
    bias: bool | None = None,
) -> ModelSpec:
    """`ModelSpec`s: 0-`max_blocks` feature-map blocks of the given kinds, a head, 0-2 hidden dense layers.

    `activations`, `pools` and `heads` restrict the forms drawn (e.g. `RELU_FORMS` for rules without an
    `activation` rule); `bias=None` draws biased and bias-free models; bias-free models (`bias=False`) have no
    activation with f(0) != 0 either (`BIASED_ACTIVATIONS`).
    """
    acts = tuple(activations) or RELU_FORMS
    if bias is False:  # f(0) != 0 acts as a bias: sigmoid and softplus are left out of bias-free models
        acts = tuple(a for a in acts if a not in BIASED_ACTIVATIONS) or RELU_FORMS
    kinds = tuple(k for k in blocks if k != "pool" or pools)
    n_tail = draw(st.integers(0, 2))
    tail: list[Block] = []
    for _ in range(n_tail):
        tail.append(("dense", draw(st.sampled_from(("module", "functional"))), draw(st.integers(1, 6))))
        tail.append(("act", draw(st.sampled_from(acts))))
    return ModelSpec(
        channels=draw(st.integers(1, 3)),
        size=draw(st.sampled_from([4, 6, 8])),
        blocks=tuple(draw(st.lists(_block(kinds, acts, tuple(pools)), max_size=max_blocks))) if kinds else (),
        head=draw(st.sampled_from(heads)),
        tail=tuple(tail),
        classes=draw(st.integers(2, 4)),
        bias=draw(st.booleans()) if bias is None else bias,
        seed=draw(st.integers(0, 2**16)),
    )


def models(dtype: torch.dtype = torch.float64, **spec_options: Any) -> st.SearchStrategy[nn.Module]:
    """Eval-mode random models (`model.spec` is their `ModelSpec`); options as `model_specs`."""
    return model_specs(**spec_options).map(lambda spec: spec.build(dtype))


#: Kinds of input batches `inputs()` draws.
INPUT_KINDS = ("normal", "zeros", "dead", "large", "tiny", "positive")


@dataclass(frozen=True)
class InputSpec:
    """How an input batch is made: `make(model)` is deterministic (seeded); `code()` prints it exactly."""

    kind: str = "normal"
    batch: int = 2
    seed: int = 0
    bounds: tuple[float, float] | None = None

    def make(self, model: nn.Module, dtype: torch.dtype | None = None) -> torch.Tensor:
        spec: ModelSpec | None = getattr(model, "spec", None)
        dtype = dtype or next(model.parameters()).dtype
        if spec is not None:
            shape: tuple[int, ...] = (self.batch, spec.channels, spec.size, spec.size)
        else:
            sample: Any = model.input_shape  # a user model declares the shape of one sample
            shape = (self.batch, *sample)
        return make_input(model, shape, self.kind, self.seed, dtype, self.bounds)


def make_input(
    model: nn.Module,
    shape: tuple[int, ...],
    kind: str,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    bounds: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One input batch of `kind` (see `INPUT_KINDS`), clipped to `bounds` when given."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "zeros":
        x = torch.zeros(shape, dtype=torch.float64)
    elif kind == "large":
        x = 100.0 * x
    elif kind == "tiny":
        x = 1e-4 * x
    elif kind == "positive":
        x = x.abs()
    elif kind == "dead":
        x = dead_input(model, shape)
    if bounds is not None:
        x = x.clamp(float(bounds[0]), float(bounds[1]))
    return x.to(dtype)


def dead_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """An input that makes every unit of the model's first ReLU zero (pre-activation -1), when the map from the
    input to that ReLU is affine and onto; otherwise all zeros (then only biases decide)."""
    import torch.fx as fx

    zeros = torch.zeros(shape, dtype=torch.float64)
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 (untraceable user model: no dead input)
        return zeros
    relu = next((n for n in gm.graph.nodes if _is_relu(gm, n)), None)
    if relu is None or not isinstance(relu.args[0], fx.Node):
        return zeros
    pre = relu.args[0]
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        env[n] = graph.node_copy(n, lambda a: env[a])
        if n is pre:
            break
    graph.output(env[pre])
    sub = fx.GraphModule(gm, graph)  # shares the model's modules: nothing here may convert or modify them
    dtype = next((p.dtype for p in model.parameters()), torch.float64)
    one = torch.zeros((1, *shape[1:]), dtype=dtype)
    try:
        with torch.no_grad():
            f0 = sub(one).reshape(-1).double()
        jac = torch.autograd.functional.jacobian(lambda t: sub(t).reshape(-1), one).reshape(f0.numel(), -1).double()
        sol = torch.linalg.lstsq(jac, (-1.0 - f0)[:, None], driver="gelsd").solution[:, 0]
        x = sol.reshape(one.shape)
        with torch.no_grad():
            ok = bool((sub(x.to(dtype)) <= 0).all()) and bool(torch.isfinite(x).all()) and float(x.abs().max()) < 1e4
    except Exception:  # noqa: BLE001 (a map the jacobian cannot handle: no dead input)
        return zeros
    return x.expand(shape).clone() if ok else zeros


def _is_relu(gm: Any, n: Any) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), nn.ReLU)
    if n.op == "call_function":
        import torch.nn.functional as F

        return n.target in (torch.relu, F.relu, torch.relu_)
    return n.op == "call_method" and n.target in ("relu", "relu_")


def input_specs(
    batch: int = 2, kinds: tuple[str, ...] = INPUT_KINDS, bounds: tuple[float, float] | None = None
) -> st.SearchStrategy[InputSpec]:
    """`InputSpec`s (the kind shrinks towards "normal")."""
    return st.builds(
        InputSpec,
        kind=st.sampled_from(kinds),
        batch=st.just(batch),
        seed=st.integers(0, 2**16),
        bounds=st.just(bounds),
    )


def inputs(
    model: nn.Module,
    batch: int = 2,
    kinds: tuple[str, ...] = INPUT_KINDS,
    bounds: tuple[float, float] | None = None,
) -> st.SearchStrategy[torch.Tensor]:
    """Input batches for `model` (built by `models()`, or any model with an `input_shape` attribute, the shape
    of one sample): Gaussian, all zeros, large (×100), tiny (×1e-4), positive, and dead (every unit of the
    first ReLU zero); clipped to `bounds` when given."""
    return input_specs(batch, kinds, bounds).map(lambda s: s.make(model))


# ------------------------------------------------------------------------------------------------- parameters
def params(rules: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Parameter overrides for a rule file (name, path or `RuleFile`) that satisfy its `require:`.

    Each parameter is drawn around its default (log-uniformly within ×/÷ 10 for positive values, ±2 around a
    zero default), then equality requirements are solved for one of their parameters; a draw that still
    violates a requirement falls back to the defaults. The defaults themselves are drawn first when shrinking.
    """
    from ..lang.loader import load

    rf = rules if hasattr(rules, "require") else load(rules)
    defaults = dict(rf.params)
    scalar = {k: v for k, v in defaults.items() if isinstance(v, float)}
    if not scalar:
        return st.just({})

    @st.composite
    def draw_params(draw: st.DrawFn) -> dict[str, Any]:
        if draw(st.booleans()):
            return {}
        values = dict(defaults)
        for name, default in scalar.items():
            if not draw(st.booleans()):
                continue
            if default > 0:
                values[name] = default * 10 ** draw(st.floats(-1, 1))
            elif default < 0:
                values[name] = default * 10 ** draw(st.floats(-0.5, 0.5))
            else:
                values[name] = draw(st.floats(0, 2))
        repaired = _repair(rf, values)
        return {k: v for k, v in repaired.items() if v != defaults[k]} if repaired is not None else {}

    return draw_params()


def satisfies(rules: Any, values: dict[str, Any]) -> bool:
    """Whether bound parameter `values` (all of them) satisfy the rule file's `require:`."""
    from ..errors import RuleError
    from ..lang.params import check_requires

    try:
        check_requires(list(rules.require), values)
    except RuleError:
        return False
    return True


def _repair(rf: Any, values: dict[str, Any]) -> dict[str, Any] | None:
    """Solve each `a == b` requirement for its last scalar parameter (secant: exact when linear)."""
    from ..lang.ast import Binary
    from ..lang.params import evaluate
    from ..lang.visit import names

    for req in rf.require:
        if not (isinstance(req, Binary) and req.op == "=="):
            continue
        free = [n for n in sorted(names(req)) if isinstance(values.get(n), float)]
        if not free:
            continue
        p = free[-1]

        def gap(v: float, p: str = p, req: Binary = req) -> float:
            env = {**values, p: v}
            return float(evaluate(req.left, env)) - float(evaluate(req.right, env))

        try:
            a, b = values[p], values[p] + 1.0
            ga, gb = gap(a), gap(b)
            if ga == gb:
                return None
            values[p] = a - ga * (b - a) / (gb - ga)
        except Exception:  # noqa: BLE001 (a requirement that cannot be evaluated at these values)
            return None
        if not math.isfinite(values[p]):
            return None
    return values if satisfies(rf, values) else None


# ------------------------------------------------------------------------------------------ the older helpers
@st.composite
def models_and_inputs(
    draw: st.DrawFn, batch: int = 3, dtype: torch.dtype = torch.float64, max_blocks: int = 6
) -> tuple[nn.Module, torch.Tensor]:
    """(eval-mode model, Gaussian input batch) pairs."""
    spec = draw(model_specs(max_blocks=max_blocks))
    model = spec.build(dtype)
    return model, InputSpec("normal", batch, spec.seed + 1).make(model, dtype)
