"""The op kinds of the rule language: what selectors may name and what each kind offers to rule bodies.

`Kind` is the contract between the language (``lang``) and the model side (``graph``): the catalog
(rulelang/graph/catalog.py) has one spec row per kind and maps every traced node to exactly one kind (``other``
when it recognises nothing); the compiler (rulelang/compiler/impls/) registers one implementation per kind.
`tests/compiler/test_tables.py` checks that the three tables agree.

The language facts of a kind live on its enum member, so the checker (torch-free) reads them directly:
``parametric`` (the op owns a weight ``w`` and a bias ``b``) and ``arity`` (how many activation inputs its nodes
have: 1, or None for one or more, in which case a rule body is evaluated once per input ``i``).
"""

from __future__ import annotations

from enum import Enum


class Kind(str, Enum):
    """One op kind. A `str` subclass: ``op.kind == "relu"`` and ``"relu" in {Kind.RELU}`` hold."""

    parametric: bool
    arity: int | None
    doc: str

    def __new__(cls, value: str, parametric: bool = False, arity: int | None = 1, doc: str = "") -> Kind:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.parametric = parametric
        obj.arity = arity
        obj.doc = doc
        return obj

    # value, parametric, arity (None: one or more activation inputs), what it covers
    DENSE = "dense", True, 1, "nn.Linear, F.linear"
    CONV = "conv", True, 1, "nn.Conv1d/2d/3d, F.conv*"
    AFFINE = "affine", True, 1, "an unfoldable BatchNorm (eval): element-wise scale + shift per channel"
    RELU = "relu", False, 1, "nn.ReLU, F.relu, torch.relu, x.relu(), in-place forms"
    ACTIVATION = "activation", False, 1, "other element-wise nonlinearities: sigmoid, tanh, silu, gelu, elu, ..."
    MAXPOOL = "maxpool", False, 1, "max-pooling, adaptive max-pooling"
    AVGPOOL = "avgpool", False, 1, "average pooling, adaptive and global mean"
    ADD = "add", False, None, "a + b, torch.add, iadd"
    MUL = "mul", False, None, "element-wise product of two activations, or of an activation and a constant"
    CAT = "cat", False, None, "torch.cat / stack"
    RESHAPE = "reshape", False, 1, "view, reshape, flatten, permute, transpose, getitem, pad, contiguous, chunk"
    DROPOUT = "dropout", False, 1, "dropout in any form (identity at explanation time)"
    IDENTITY = "identity", False, 1, "nn.Identity and no-ops"
    SOFTMAX = "softmax", False, 1, "softmax, log_softmax"
    NORM = "norm", False, 1, "layer norm, group norm, instance norm (statistics from the input itself)"
    MATMUL = "matmul", False, None, "product of two activations (matmul, bmm, einsum)"
    OTHER = "other", False, None, "anything the catalog does not recognise: only a `default:` rule matches it"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return self.value.__format__(spec)

    @property
    def multi_input(self) -> bool:
        """Whether nodes of this kind may take several activation inputs (`i` and `x[i]` exist)."""
        return self.arity != 1


#: Every concrete op kind a graph node can have.
KINDS: frozenset[Kind] = frozenset(Kind)

#: Selector names that stand for a union of kinds.
ALIASES: dict[str, frozenset[Kind]] = {
    "linear": frozenset({Kind.DENSE, Kind.CONV, Kind.AFFINE}),
}

#: Positional selector atoms (they constrain where a node is, not what it is).
POSITIONS: frozenset[str] = frozenset({"first", "last"})

#: Kinds that own a weight `w` and a bias `b`.
PARAMETRIC: frozenset[Kind] = frozenset(k for k in Kind if k.parametric)

#: Kinds whose nodes may take several activation inputs (a body is evaluated once per input `i`).
#: (`other` is included: an unrecognised call may have any number of inputs; only `default:` rules see it.)
MULTI_INPUT: frozenset[Kind] = frozenset(k for k in Kind if k.multi_input)


def expand(name: str) -> frozenset[Kind]:
    """The concrete kinds a selector atom names (raises KeyError for an unknown atom)."""
    if name in ALIASES:
        return ALIASES[name]
    if name in KINDS:
        return frozenset({Kind(name)})
    raise KeyError(name)


def selector_words() -> list[str]:
    """Every word a selector may use as an atom, for error hints."""
    return sorted({str(k) for k in KINDS} | set(ALIASES) | POSITIONS)
