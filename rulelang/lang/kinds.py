"""The op kinds of the rule language: what selectors may name and what each kind offers to rule bodies.

This table is the contract between the language (``lang``) and the model side (``graph``): the catalog maps
every traced node to exactly one of ``KINDS`` (``other`` when it recognises nothing).
"""

from __future__ import annotations

#: Every concrete op kind a graph node can have.
KINDS: frozenset[str] = frozenset(
    {
        "dense",  # nn.Linear, F.linear
        "conv",  # nn.Conv1d/2d/3d, F.conv*
        "affine",  # an unfoldable BatchNorm (eval), element-wise scale + shift per channel
        "relu",  # nn.ReLU, F.relu, torch.relu, x.relu(), inplace forms
        "activation",  # other element-wise nonlinearities: sigmoid, tanh, silu, gelu, hardswish, elu, ...
        "maxpool",  # max-pooling, adaptive max-pooling
        "avgpool",  # average pooling, adaptive and global mean
        "add",  # a + b, torch.add, iadd, a - b (sub is add of a negated input)
        "mul",  # element-wise product of two activations, or of an activation and a constant
        "cat",  # torch.cat / stack
        "reshape",  # view, reshape, flatten, permute, transpose, getitem/slicing, pad, contiguous, chunk pieces
        "dropout",  # dropout in any form (identity at explanation time)
        "identity",  # nn.Identity and no-ops
        "softmax",  # softmax, log_softmax
        "norm",  # layer norm, group norm, instance norm (statistics from the input itself)
        "matmul",  # product of two activations (matmul, bmm, einsum)
        "other",  # anything the catalog does not recognise: only a `default:` rule matches it
    }
)

#: Selector names that stand for a union of kinds.
ALIASES: dict[str, frozenset[str]] = {
    "linear": frozenset({"dense", "conv", "affine"}),
}

#: Positional selector atoms (they constrain where a node is, not what it is).
POSITIONS: frozenset[str] = frozenset({"first", "last"})

#: Kinds that own a weight `w` and a bias `b`.
PARAMETRIC: frozenset[str] = frozenset({"dense", "conv", "affine"})

#: Kinds whose nodes may take several activation inputs (a body is evaluated once per input `i`).
MULTI_INPUT: frozenset[str] = frozenset({"add", "mul", "cat", "matmul"})


def expand(name: str) -> frozenset[str]:
    """The concrete kinds a selector atom names (raises KeyError for an unknown atom)."""
    if name in ALIASES:
        return ALIASES[name]
    if name in KINDS:
        return frozenset({name})
    raise KeyError(name)


def selector_words() -> list[str]:
    """Every word a selector may use as an atom, for error hints."""
    return sorted(KINDS | set(ALIASES) | POSITIONS)
