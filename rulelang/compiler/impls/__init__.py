"""Per-kind lowering of the rule primitives, one implementation class per kind family (JAX-style table of
per-primitive rules): how an op of a kind emits its forward pass, its parameters, `layer(t, w=, b=)` and
`vjp(s, w=)`.

Each class registers for its kinds with ``@register(Kind.CONV, Kind.DENSE)``; `impl_for(op)` looks the op's kind
up. Kinds whose catalog row says ``generic=True`` have no class and use `Generic`: a replay of the traced call
and `torch.func.vjp` of that replay. Direct ops where they exist (conv -> transposed conv via
`convolution_backward`, linear -> matmul, ReLU -> mask).

To add a kind: a `Kind` member (rulelang/lang/kinds.py), a `KindSpec` row (rulelang/graph/catalog.py), and here
either a registered class in a new module imported below or ``generic=True`` in the row.
"""

from __future__ import annotations

from . import (  # noqa: F401  (they register themselves)
    activation,
    add,
    affine,
    cat,
    linear,
    norm,
    passthrough,
    pooling,
    products,
    relu,
    reshape,
)
from .base import Generic, Lowerer, Value, inplace_free
from .linear import ConvDense
from .registry import GENERIC, REGISTRY, impl_for, register

__all__ = ["GENERIC", "REGISTRY", "ConvDense", "Generic", "Lowerer", "Value", "impl_for", "inplace_free", "register"]
