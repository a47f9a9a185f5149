"""The direct vjps of routing ops, element-wise products and activations equal the generic torch.func replay bit
for bit.

rulelang/compiler/impls/reshape.py gives view/reshape/flatten/unflatten/squeeze/unsqueeze, permute, transpose,
movedim, expand, getitem (basic indexing), narrow and chunk/split/unbind direct vjps; products.py gives `mul`
(two activations, or one and a constant; division by a constant) one; activation.py GELU, SiLU, sigmoid, tanh,
hardswish, hardsigmoid and Mish ones. `generic_vjps()` swaps the generic vjp
back in for both, so each test compares the optimized lowering with the generic one (float64, `torch.equal`):
- one op at a time (hypothesis over shapes, permutations, dims, index patterns, split sizes), gradient rule;
- whole models: a small torchvision ViT and the built-in digits-vit, attn-lrp and cp-lrp, every relevance.
`separate_parts()` switches off `lower.JOIN_PARTS` (all parts of one split summed as one stack/cat), compared bit for
bit (float64 and float32) on single splits (hypothesis: joined forms and the ones left alone) and the same models.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import rulelang
from rulelang.compiler import lower, prims
from rulelang.compiler.impls import activation, base, products, reshape
from rulelang.testing.models import randomize_

D = torch.float64


@contextlib.contextmanager
def generic_vjps() -> Iterator[None]:
    """Routing ops, products and activations lowered with the generic vjp (a torch.func replay), as before."""
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(reshape.Reshape, "vjp", base.Generic.vjp)
        mp.setattr(products.Mul, "vjp", base.Generic.vjp)
        mp.setattr(activation.Activation, "vjp", base.Generic.vjp)
        yield
    finally:
        mp.undo()


class OpModel(nn.Module):
    """`fn(x)` times a random tensor, flattened, through a random dense layer (3 classes)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], seed: int) -> None:
        super().__init__()
        self.fn = fn
        g = torch.Generator().manual_seed(seed)
        out = fn(torch.zeros((2, *shape), dtype=D))
        self.register_buffer("scale", torch.randn(out.shape[1:], dtype=D, generator=g))
        self.register_buffer("w", torch.randn(3, max(1, out[0].numel()), dtype=D, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fn(x) * self.scale
        return F.linear(y.reshape(y.shape[0], -1), self.w)


def _explain(model: nn.Module, rule: str, x: torch.Tensor, eps: dict[str, float]) -> Any:
    ex = rulelang.compile(model, rule, example_input=x, **eps)
    return ex.code, ex.explain(x, target=1, keep=True)


def assert_direct_equals_generic(model: nn.Module, rule: str, x: torch.Tensor, **eps: float) -> str:
    """Both lowerings give the same attribution and relevances, exactly; returns the optimized code."""
    code, new = _explain(model, rule, x, eps)
    with generic_vjps():
        old_code, old = _explain(model, rule, x, eps)
    assert "rulelang_vjp_" in old_code  # the generic path really ran
    assert torch.equal(new.output, old.output)
    assert torch.equal(new.attribution, old.attribution), (new.attribution - old.attribution).abs().max()
    assert new.relevances.keys() == old.relevances.keys()
    for k, v in new.relevances.items():
        assert torch.equal(v, old.relevances[k]), f"relevance at {k} differs"
    return code


# ----------------------------------------------------------------------------------------- one op at a time
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def _neg(draw: Any, d: int, rank: int) -> int:
    """`d` or the same dim counted from the end."""
    return d - rank if draw(st.booleans()) else d


@st.composite
def permutes(draw: Any) -> tuple[Callable, tuple[int, ...]]:
    shape = draw(shapes)
    rank = len(shape) + 1
    perm = (0, *draw(st.permutations(range(1, rank))))
    dims = tuple(_neg(draw, d, rank) for d in perm)
    form = draw(st.sampled_from(["varargs", "tuple", "torch"]))
    fn = {
        "varargs": lambda x: x.permute(*dims),
        "tuple": lambda x: x.permute(dims),
        "torch": lambda x: torch.permute(x, dims),
    }[form]
    return fn, shape


@st.composite
def transposes(draw: Any) -> tuple[Callable, tuple[int, ...]]:
    shape = draw(shapes)
    rank = len(shape) + 1
    a, b = (_neg(draw, draw(st.integers(1, rank - 1)), rank) for _ in range(2))
    form = draw(st.sampled_from(["method", "torch", "swapaxes", "movedim"]))
    fn = {
        "method": lambda x: x.transpose(a, b),
        "torch": lambda x: torch.transpose(x, a, b),
        "swapaxes": lambda x: x.swapaxes(a, b),
        "movedim": lambda x: x.movedim(a, b),
    }[form]
    return fn, shape


@st.composite
def reshapes(draw: Any) -> tuple[Callable, tuple[int, ...]]:
    shape = draw(shapes)
    rank = len(shape) + 1
    k = draw(st.integers(1, rank - 1))
    form = draw(
        st.sampled_from(["view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze", "contiguous", "module"])
    )
    fn = {
        "view": lambda x: x.view(x.shape[0], -1),
        "reshape": lambda x: torch.reshape(x, (-1, *reversed(shape))),
        "flatten": lambda x: torch.flatten(x, k),
        "unflatten": lambda x: x.unflatten(k, (1, shape[k - 1])),
        "unsqueeze": lambda x: torch.unsqueeze(x, k),
        "squeeze": lambda x: x.squeeze(),
        "contiguous": lambda x: x.transpose(1, -1).contiguous(),
        "module": nn.Flatten(),
    }[form]
    return fn, shape


@st.composite
def indexes(draw: Any) -> tuple[Callable, tuple[int, ...]]:
    shape = draw(shapes)
    parts: list[Any] = [slice(None)]  # the batch dim stays
    for n in shape:
        choice = draw(st.sampled_from(["int", "slice", "all", "none"]))
        if choice == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        elif choice == "slice":
            start = draw(st.integers(0, n - 1))
            parts.append(slice(start, draw(st.integers(start + 1, n)), draw(st.integers(1, 2))))
        elif choice == "none":
            parts += [None, slice(None)]
        else:
            parts.append(slice(None))
    if draw(st.booleans()) and len(parts) > 2:
        parts = [parts[0], Ellipsis, *parts[2:]]  # `...` standing for one full dim
    index = tuple(parts)
    return (lambda x: x[index]), shape


@st.composite
def parts(draw: Any) -> tuple[Callable, tuple[int, ...]]:
    shape = draw(shapes)
    rank = len(shape) + 1
    d = draw(st.integers(1, rank - 1))
    n = shape[d - 1]
    dim = _neg(draw, d, rank)
    form = draw(st.sampled_from(["chunk", "torch.chunk", "split", "split_list", "unbind", "narrow", "two"]))
    chunks = draw(st.integers(1, 3))
    sizes = [1, n - 1] if n > 1 else [1]
    start = draw(st.integers(0, n - 1))
    # how many outputs the call has (the pick is a plain int at trace time)
    count = {"chunk": len(torch.zeros(n).chunk(chunks)), "split": n, "split_list": len(sizes), "unbind": n}
    k = draw(st.integers(0, 5)) % count.get(form.replace("torch.", ""), 1)
    fn: Callable = {
        "chunk": lambda x: x.chunk(chunks, dim)[k],
        "torch.chunk": lambda x: torch.chunk(x, chunks, dim=dim)[k],
        "split": lambda x: x.split(1, dim)[k],
        "split_list": lambda x: torch.split(x, sizes, dim)[k],
        "unbind": lambda x: x.unbind(dim)[k],
        "narrow": lambda x: x.narrow(dim, start, n - start),
        "two": lambda x: (lambda t: t[0] * 2.0 + t[-1])(x.split(1, dim)),  # two picks of one split, summed
    }[form]
    return fn, shape


@st.composite
def expands(draw: Any) -> tuple[Callable, tuple[int, ...]]:
    shape = draw(shapes)
    k = draw(st.integers(2, 3))
    form = draw(st.sampled_from(["new_dim", "size_one", "expand_as"]))
    fn = {
        "new_dim": lambda x: x.unsqueeze(1).expand(-1, k, *shape),
        "size_one": lambda x: x[:, :1].expand(x.shape),
        "expand_as": lambda x: x[:, :1].expand_as(x),
    }[form]
    return fn, shape


@st.composite
def products_(draw: Any) -> tuple[Callable, tuple[int, ...]]:
    shape = draw(shapes)
    c = draw(st.sampled_from([0.25, -3.0, 0.1767766952966369, 7]))
    form = draw(st.sampled_from(["x*c", "c*x", "x/c", "torch.mul", "x.mul", "x*x", "a*b", "broadcast", "const"]))
    const = torch.linspace(-1.0, 2.0, shape[-1], dtype=D)
    fn = {
        "x*c": lambda x: x * c,
        "c*x": lambda x: c * x,
        "x/c": lambda x: x / c,
        "torch.mul": lambda x: torch.mul(x, c),
        "x.mul": lambda x: x.mul(c),
        "x*x": lambda x: x * x,
        "a*b": lambda x: x.unsqueeze(1) * x.unsqueeze(2),  # an outer product: both factors broadcast
        "broadcast": lambda x: x[:, :1] * x,  # the first factor's vjp sums over the broadcast dim
        "const": lambda x: x * const,  # a constant tensor (traced as a buffer-free constant)
    }[form]
    return fn, shape


ACTIVATIONS: dict[str, Callable] = {
    "F.gelu": F.gelu,
    "gelu-tanh": lambda x: F.gelu(x, approximate="tanh"),
    "nn.GELU": nn.GELU(),
    "nn.GELU-tanh": nn.GELU(approximate="tanh"),
    "F.silu": F.silu,
    "nn.SiLU": nn.SiLU(),
    "torch.sigmoid": torch.sigmoid,
    "x.sigmoid": lambda x: x.sigmoid(),
    "nn.Sigmoid": nn.Sigmoid(),
    "torch.tanh": torch.tanh,
    "x.tanh": lambda x: x.tanh(),
    "nn.Tanh": nn.Tanh(),
    "F.hardswish": F.hardswish,
    "nn.Hardswish": nn.Hardswish(),
    "F.hardsigmoid": F.hardsigmoid,
    "nn.Hardsigmoid": nn.Hardsigmoid(),
    "F.mish": F.mish,
    "nn.Mish": nn.Mish(),
}


@st.composite
def activations(draw: Any) -> tuple[Callable, tuple[int, ...]]:
    return ACTIVATIONS[draw(st.sampled_from(sorted(ACTIVATIONS)))], draw(shapes)


#: every call form with a direct vjp (one hypothesis test over all: each example compiles twice)
CASES = st.one_of(permutes(), transposes(), reshapes(), indexes(), parts(), expands(), products_(), activations())


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_vjp_equals_generic(name: str) -> None:
    """Each activation's direct vjp (aten's backward kernels; SiLU and Mish by autograd's differentiable formula)
    equals the generic replay exactly, on inputs spread over both sides of every kink."""
    model = OpModel(ACTIVATIONS[name], (3, 5), 0).eval()
    x = torch.linspace(-4.0, 4.0, 30, dtype=D).reshape(2, 3, 5)
    code = assert_direct_equals_generic(model, "gradient", x)
    assert "rulelang_vjp_" not in code


@given(case=CASES, seed=st.integers(0, 2**16))
def test_direct_vjp_equals_generic(case: tuple[Callable, tuple[int, ...]], seed: int) -> None:
    fn, shape = case
    model = OpModel(fn, shape, seed).eval()
    x = torch.randn((2, *shape), dtype=D, generator=torch.Generator().manual_seed(seed + 1))
    code = assert_direct_equals_generic(model, "gradient", x)
    assert "rulelang_vjp_" not in code  # every op of these models has a direct vjp


def test_advanced_indexing_falls_back_to_torch_func_inside_getitem_vjp() -> None:
    """A list index with repeats (accumulating) goes through getitem_vjp's torch.func branch: still equal."""
    model = OpModel(lambda x: x[:, [0, 0, 2]], (3, 2), 0).eval()
    x = torch.randn(2, 3, 2, dtype=D)
    assert_direct_equals_generic(model, "gradient", x)
    s = torch.ones(2, 3, 2, dtype=D)
    g = reshape.getitem_vjp(s, x, (slice(None), [0, 0, 2]))
    assert torch.equal(g[:, 0], 2 * torch.ones(2, 2, dtype=D)) and torch.equal(g[:, 1], torch.zeros(2, 2, dtype=D))


def test_forms_left_to_the_generic_vjp() -> None:
    """Padding and `roll` keep the generic vjp (and stay equal to it: the same code)."""
    model = OpModel(lambda x: F.pad(x, (1, 2)).roll(1, -1), (2, 3), 0).eval()
    x = torch.randn(2, 2, 3, dtype=D)
    code = assert_direct_equals_generic(model, "gradient", x)
    assert "rulelang_vjp_pad" in code and "rulelang_vjp_roll" in code


def test_vjp_functions_directly() -> None:
    """The vjp functions against autograd, one case each (the tests above compare them inside models)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=D, generator=g)

    def grad(fn: Callable, s: torch.Tensor, at: torch.Tensor = x) -> torch.Tensor:
        t = at.clone().requires_grad_(True)
        (out,) = torch.autograd.grad(fn(t), t, s)
        return out

    s = torch.randn(2, 4, 3, dtype=D, generator=g)
    assert torch.equal(reshape.permute_vjp(s, x, (0, 2, 1)), grad(lambda t: t.permute(0, 2, 1), s))
    assert torch.equal(reshape.transpose_vjp(s, x, 1, 2), grad(lambda t: t.transpose(1, 2), s))
    assert torch.equal(reshape.reshape_vjp(s.flatten(1), x), grad(lambda t: t.flatten(1), s.flatten(1)))
    s = torch.randn(2, 5, 3, 4, dtype=D, generator=g)
    assert torch.equal(reshape.expand_vjp(s, x[:, None]), grad(lambda t: t.expand(2, 5, 3, 4), s, x[:, None]))
    s = torch.randn(2, 1, 4, dtype=D, generator=g)
    assert torch.equal(reshape.part_vjp(s, x, "split", True, 1, (1, 1), {}), grad(lambda t: t.split(1, 1)[1], s))
    s = torch.randn(2, 4, dtype=D, generator=g)
    assert torch.equal(reshape.getitem_vjp(s, x, (slice(None), 1)), grad(lambda t: t[:, 1], s))
    s = torch.randn(2, 3, 4, dtype=D, generator=g)
    a = x[:, :1].clone()
    assert torch.equal(products.mul_vjp(s, a, x, False), grad(lambda t: t * x, s, a))
    assert torch.equal(products.mul_vjp(s, x, 0.3, True), grad(lambda t: t / 0.3, s))


# ------------------------------------------------------------------------------------------- whole models
def small_vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    randomize_(model, seed)
    nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision initialises the head to zero
    return model.to(D).eval()


class TimmAttention(nn.Module):
    """timm's attention layout: qkv reshaped to (3, N, heads, T, d), `unbind(0)`, a scaled `q @ kᵀ`."""

    def __init__(self, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        y = (a.softmax(-1) @ v).transpose(1, 2).reshape(n, t, c)
        return self.head(self.proj(y)[:, 0])


@pytest.mark.parametrize("rule", ["attn-lrp", "cp-lrp"])
@pytest.mark.parametrize("name", ["tv-vit", "digits-vit", "timm-attention"])
def test_whole_model_direct_equals_generic(name: str, rule: str) -> None:
    torch.manual_seed(0)
    if name == "tv-vit":
        model, x = small_vit(), torch.randn(2, 3, 16, 16, dtype=D)
    elif name == "digits-vit":
        model, x = rulelang.builtin_model("digits-vit").to(D).eval(), torch.randn(2, 3, 32, 32, dtype=D)
    else:
        model, x = TimmAttention().to(D).eval(), torch.randn(2, 5, 8, dtype=D)
    code = assert_direct_equals_generic(model, rule, x)
    assert "rulelang_vjp_" not in code  # no routing op or product is left to torch.func on these models
    assert "transpose_vjp" in code and "reshape_vjp" in code


def test_getitem_of_operator_form_is_direct() -> None:
    """`operator.getitem` on an activation (`x[:, 0]`, the class token) is lowered by getitem_vjp."""
    model = OpModel(lambda x: operator.getitem(x, (slice(None), 0)), (3, 2), 0).eval()
    code = assert_direct_equals_generic(model, "gradient", torch.randn(2, 3, 2, dtype=D))
    assert "getitem_vjp" in code


# ------------------------------------------------------------------------ stab (the profile's largest item)
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True), min_size=1, max_size=40),
    eps=st.sampled_from([0.0, 1e-12, 1e-6, 0.25, 2.0, 3e-38, 1e-300, 1e29]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_stab_by_sign_and_clamp_equals_the_comparison_form(values: list[float], eps: float, dtype) -> None:
    """prims.stab's `z + clamp(sign(z) * 2 eps + eps, -eps, eps)` is bit-identical to `z + ((z >= 0) * 2 eps - eps)`
    (sign(+-0) = +1, NaN stays NaN), in float32 and float64."""
    from rulelang.compiler import prims

    z = torch.tensor(values + [0.0, -0.0], dtype=dtype)
    new = prims.stab(z, eps)
    old = z + ((z >= 0).to(z.dtype) * (2 * eps) - eps)
    assert torch.equal(new.isnan(), old.isnan())
    assert torch.equal(new[~new.isnan()], old[~old.isnan()])
    assert torch.equal(torch.signbit(new[~new.isnan()]), torch.signbit(old[~old.isnan()]))


# ----------------------------------------------------------------- every part of one split: one stack / cat
@contextlib.contextmanager
def separate_parts() -> Iterator[None]:
    """Each part's vjp a zero-filled tensor, summed at the producer (the lowering before `lower.JOIN_PARTS`)."""
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(lower, "JOIN_PARTS", False)
        yield
    finally:
        mp.undo()


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns (-0.0 and 0.0 differ, NaN payloads count)."""
    return t.contiguous().view({torch.float64: torch.int64, torch.float32: torch.int32}[t.dtype])


def assert_joined_equals_separate(model: nn.Module, rule: str, x: torch.Tensor, **eps: float) -> str:
    """Joined and separate part vjps give the same attribution and relevances, bit for bit; returns the code."""
    code, new = _explain(model, rule, x, eps)
    with separate_parts():
        old_code, old = _explain(model, rule, x, eps)
    assert "join_part_vjps" not in old_code
    assert torch.equal(_bits(new.attribution), _bits(old.attribution))
    assert new.relevances.keys() == old.relevances.keys()
    for k, v in new.relevances.items():
        assert torch.equal(_bits(v), _bits(old.relevances[k])), f"relevance at {k} differs"
    return code


@st.composite
def all_parts(draw: Any) -> tuple[Callable, tuple[int, ...], bool]:
    """A split whose parts are all used (joined), or one the join leaves alone (False): a part unused, a part
    taken twice, two kinds of pick of one input."""
    shape = draw(shapes)
    rank = len(shape) + 1
    d = draw(st.integers(1, rank - 1))
    shape = shape[: d - 1] + (max(2, shape[d - 1]),) + shape[d:]  # two parts at least
    n = shape[d - 1]
    dim = _neg(draw, d, rank)
    chunks = draw(st.integers(2, 3))
    form = draw(st.sampled_from(["unbind", "chunk", "split", "split_list", "getitem", "getitem_neg", "ellipsis"]))
    form = draw(st.sampled_from([form, "unused", "twice", "mixed"]))
    lead = (slice(None),) * d

    count = len(torch.zeros(n).chunk(chunks))  # (a traced tuple cannot be iterated: its parts are indexed)

    def join(ts: Any, k0: int = 0, m: int = n) -> list[torch.Tensor]:
        return [ts[k] for k in range(k0, m)]

    def cat(ts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(t.shape[0], -1) * (k + 1.0) for k, t in enumerate(ts)], 1)

    fn: Callable = {
        "unbind": lambda x: cat(join(x.unbind(dim))),
        "chunk": lambda x: cat(join(torch.chunk(x, chunks, dim=dim), m=count)),
        "split": lambda x: cat(join(x.split(1, dim))),
        "split_list": lambda x: cat(join(torch.split(x, [1, n - 1], dim), m=2)),
        "getitem": lambda x: cat([x[lead + (k,)] for k in range(n)]),
        "getitem_neg": lambda x: cat([x[lead + (k - n,)] for k in reversed(range(n))]),
        "ellipsis": lambda x: cat([x[(Ellipsis, k) + (slice(None),) * (rank - 1 - d)] for k in range(n)]),
        "unused": lambda x: cat(join(x.unbind(dim), k0=1)),
        "twice": lambda x: cat([x[lead + (0,)], *join(x.unbind(dim), k0=1), x[lead + (0,)]]),
        "mixed": lambda x: cat([x[lead + (0,)], *join(x.unbind(dim), k0=1)]),
    }[form]
    return fn, shape, form not in ("unused", "twice", "mixed")


@given(case=all_parts(), seed=st.integers(0, 2**16))
def test_joined_part_vjps_equal_separate(case: tuple[Callable, tuple[int, ...], bool], seed: int) -> None:
    fn, shape, joined = case
    model = OpModel(fn, shape, seed).eval()
    code = assert_joined_equals_separate(model, "gradient", torch.randn(2, *shape, dtype=D))
    assert ("join_part_vjps" in code) == joined


def test_join_part_vjps_keeps_the_sums_zeros_and_falls_back_at_run_time() -> None:
    """-0.0 parts come out 0.0 (as `v + 0 + 0`); parts that do not tile the input at run time are summed."""
    x = torch.randn(2, 3, 4, dtype=D)
    s = [torch.full((2, 4), -0.0, dtype=D), torch.randn(2, 4, dtype=D), torch.randn(2, 4, dtype=torch.float32)]
    specs = tuple(((slice(None), k),) for k in (2, 0, 1))
    out = reshape.join_part_vjps(x, "getitem", specs, *s)
    assert torch.equal(_bits(out), _bits(prims.sum_all(*(reshape.getitem_vjp(t, x, *p) for t, p in zip(s, specs)))))
    assert not torch.signbit(out[:, 2]).any()  # the -0.0 part
    wide = torch.randn(2, 4, 4, dtype=D)  # a fourth position nobody picks: the sum of zero-filled parts
    out = reshape.join_part_vjps(wide, "getitem", specs, *s)
    assert torch.equal(out, prims.sum_all(*(reshape.getitem_vjp(t, wide, *p) for t, p in zip(s, specs))))
    assert torch.equal(out[:, 3], torch.zeros(2, 4, dtype=D))
    parts = tuple(("unbind", True, k, (1,), {}) for k in (1, 0, 2))
    out = reshape.join_part_vjps(x, "part", parts, *s)
    assert torch.equal(_bits(out), _bits(torch.stack([s[1], s[0], s[2].to(D)], 1) + 0.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rule", ["attn-lrp", "cp-lrp"])
@pytest.mark.parametrize("name", ["tv-vit", "digits-vit", "timm-attention"])
def test_whole_model_joined_parts_equal_separate(name: str, rule: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    if name == "tv-vit":
        model, x = small_vit(), torch.randn(2, 3, 16, 16, dtype=D)
    elif name == "digits-vit":
        model, x = rulelang.builtin_model("digits-vit").to(D).eval(), torch.randn(2, 3, 32, 32, dtype=D)
    else:
        model, x = TimmAttention().to(D).eval(), torch.randn(2, 5, 8, dtype=D)
    code = assert_joined_equals_separate(model.to(dtype), rule, x.to(dtype))
    if rule == "cp-lrp":  # q and k get no relevance (the attention is held constant): v's part alone, no sum
        assert "join_part_vjps" not in code
        return
    assert "join_part_vjps" in code
    if name == "tv-vit":  # the packed qkv's three picks `[..., k, :]`: no zero-filled tensor per pick any more
        assert not [line for line in code.splitlines() if "getitem_vjp(" in line and "Ellipsis" in line]
    if name == "timm-attention":
        assert "part_vjp(" not in code
