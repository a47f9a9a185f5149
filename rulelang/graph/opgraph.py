"""From a traced GraphModule to an `OpGraph`: op kinds, activation inputs, BatchNorm folding, tuple picks."""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import TensorMetadata

from ..errors import CompileError
from ..lang.kinds import Kind
from .catalog import batch_norm_is_affine, describe_target, node_kind, source_line
from .ir import Op, OpGraph
from .trace import is_tensor_node

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def build_opgraph(gm: fx.GraphModule, fold_batchnorm: bool = True) -> OpGraph:
    """Classifies every node of `gm` that carries an activation (depends on the input and is a tensor)."""
    nodes = list(gm.graph.nodes)
    inp = next(n for n in nodes if n.op == "placeholder")
    output = next(n for n in nodes if n.op == "output").args[0]
    live = _input_dependent(nodes, inp)

    ops: list[Op] = []
    by_node: dict[fx.Node, Op] = {}
    for n in nodes:
        if n.op not in ("call_module", "call_function", "call_method") or n not in live:
            continue
        if not is_tensor_node(n):
            if _is_tuple_of_tensors(n):
                _check_tuple_users(n)
            continue
        src = n.args[0] if n.args else None
        if _is_pick(n, live):
            tup: fx.Node = n.args[0]
            op = Op(
                name=n.name,
                kind=_pick_kind(tup, gm),
                node=tup,
                out=n,
                inputs=_act_inputs(tup, live),
                target=f"{describe_target(tup, gm)}[{n.args[1]}]",
                module=_module_path(tup),
                source=source_line(tup),
                pick=n.args[1],
            )
        else:
            op = Op(
                name=n.name,
                kind=node_kind(n, gm),
                node=n,
                out=n,
                inputs=_act_inputs(n, live),
                target=describe_target(n, gm),
                module=_module_path(n),
                source=source_line(n),
            )
            if fold_batchnorm and op.kind == Kind.AFFINE and isinstance(src, fx.Node) and src in by_node:
                prev = by_node[src]
                if _foldable(prev, src, n, gm):
                    prev.out, prev.fold = n, n
                    prev.target += f" + {describe_target(n, gm)} (folded)"
                    by_node[n] = prev
                    continue
        if not op.inputs:
            continue
        ops.append(op)
        by_node[n] = op

    if output not in by_node and output is not inp:
        raise CompileError(f"the model's output ({output.name}) does not depend on its input")
    graph = OpGraph(gm=gm, input=inp, output=output, ops=ops)
    _mark_positions(graph)
    return graph


def _input_dependent(nodes: list[fx.Node], inp: fx.Node) -> set[fx.Node]:
    live = {inp}
    for n in nodes:
        if any(a in live for a in n.all_input_nodes):
            live.add(n)
    return live


def _act_inputs(n: fx.Node, live: set[fx.Node]) -> list[fx.Node]:
    """Activation (tensor, input-dependent) arguments of `n`, in argument order, repeats kept."""
    found: list[fx.Node] = []
    fx.node.map_arg((n.args, n.kwargs), lambda a: found.append(a) if a in live and is_tensor_node(a) else None)
    return found


def _is_tuple_of_tensors(n: fx.Node) -> bool:
    meta = n.meta.get("tensor_meta")
    # TensorMetadata is itself a NamedTuple: a tensor's metadata must not read as a tuple of tensors
    return isinstance(meta, (tuple, list)) and not isinstance(meta, TensorMetadata) and len(meta) > 0


def _check_tuple_users(n: fx.Node) -> None:
    import operator

    for u in n.users:
        if not (u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int)):
            raise CompileError(
                f"node {n.name} ({n.target}) returns a tuple that is used whole by {u.name}; "
                "only element access (`t[0]`) of tuple results is supported"
            )


def _is_pick(n: fx.Node, live: set[fx.Node]) -> bool:
    import operator

    return (
        n.op == "call_function"
        and n.target is operator.getitem
        and isinstance(n.args[0], fx.Node)
        and _is_tuple_of_tensors(n.args[0])
        and isinstance(n.args[1], int)
    )


def _pick_kind(tup: fx.Node, gm: fx.GraphModule) -> Kind:
    kind = node_kind(tup, gm)
    return kind if kind in (Kind.RESHAPE, Kind.MAXPOOL) else Kind.OTHER


def _module_path(n: fx.Node) -> str | None:
    if n.op == "call_module":
        return str(n.target)
    stack = n.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1]
        return path[0] if isinstance(path, tuple) else str(path)
    return None


def _foldable(prev: Op, src: fx.Node, bn: fx.Node, gm: fx.GraphModule) -> bool:
    """A BatchNorm (module, or eval-form F.batch_norm) right after a conv/dense module whose output nothing else
    reads."""
    if prev.kind not in (Kind.CONV, Kind.DENSE) or prev.fold is not None or prev.pick is not None:
        return False
    if prev.node.op != "call_module" or not _only_tensor_user(src, bn):
        return False
    if bn.op == "call_function":
        return bn.target is F.batch_norm and batch_norm_is_affine(bn)
    if bn.op != "call_module":
        return False
    m = gm.get_submodule(str(bn.target))
    return isinstance(m, _BN) and m.running_mean is not None and m.running_var is not None


def _only_tensor_user(src: fx.Node, user: fx.Node) -> bool:
    """Whether `user` is the only consumer of `src`'s values (other users only read its shape, e.g. timm's
    `_assert(x.ndim == 4)`)."""
    return all(u is user or not (is_tensor_node(u) or _is_tuple_of_tensors(u)) for u in src.users)


def _mark_positions(graph: OpGraph) -> None:
    """`first`: consumes the model input through reshape ops only; `last`: reaches the output likewise."""
    reach_in = {graph.input}
    for op in graph.ops:
        if any(x in reach_in for x in op.inputs):
            if op.kind == Kind.RESHAPE:
                reach_in.add(op.out)
            else:
                op.first = True
    by_out = graph.by_out
    cur = by_out.get(graph.output)
    while cur is not None:
        if cur.kind != Kind.RESHAPE:
            cur.last = True
            break
        cur = by_out.get(cur.inputs[0]) if len(cur.inputs) == 1 else None
