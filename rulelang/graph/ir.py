"""The model side's output: the traced graph as a list of ops with kinds, inputs and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx as fx

from ..lang.kinds import Kind


@dataclass
class Op:
    """One op of the model: an fx call node (or a fused pair) with its op kind.

    `node` computes the op; `out` is the fx node whose value the op produces (different from `node` when a
    BatchNorm was folded in (`fold`) or when the op is one element (`pick`) of a tuple-producing call such as
    `chunk`). `inputs` are the activation nodes it consumes, in argument order (repeats kept: `x + x`).
    """

    name: str
    kind: Kind
    node: fx.Node
    out: fx.Node
    inputs: list[fx.Node]
    target: str
    module: str | None = None
    source: str | None = None
    fold: fx.Node | None = None
    pick: int | None = None
    first: bool = False
    last: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.out.meta["tensor_meta"].shape)


@dataclass
class OpGraph:
    """The model as ops in topological order, plus the traced GraphModule they refer to."""

    gm: fx.GraphModule
    input: fx.Node
    output: fx.Node
    ops: list[Op]
    by_out: dict[fx.Node, Op] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_out = {op.out: op for op in self.ops}

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name or op.module == name or op.out.name == name:
                return op
        names = ", ".join(o.name for o in self.ops[:12])
        raise KeyError(f"no node named {name!r} (nodes: {names}, ...)")

    def consumers(self) -> dict[fx.Node, list[Op]]:
        users: dict[fx.Node, list[Op]] = {}
        for op in self.ops:
            for x in op.inputs:
                users.setdefault(x, []).append(op)
        return users
