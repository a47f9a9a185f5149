"""The compile-time shape check: the explaining graph runs once on meta tensors (no data, no arithmetic), so that
a shape error in a rule body, or a body returning relevance of the wrong shape, is reported at that rule's line
before any real tensor is touched.

It uses only the explainer's public surface: `build`, `hoisted_graph`, `rules`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch.nn.utils import stateless

from ..errors import CompileError, NoMetaKernel, RulelangError
from .evaluate import error_at
from .keys import EXPLAIN

if TYPE_CHECKING:
    from .explainer import Explainer


class ShapeChecker(fx.Interpreter):
    """Runs a graph on meta tensors; maps failures to the rule line that emitted the failing node, and compares
    every rule result (tagged `rule_results` by the lowering) with the shape of the node input it is for."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.extra_traceback = False  # our errors are one located line, without fx's "While executing ..."

    def run_node(self, n: fx.Node) -> Any:
        try:
            value = super().run_node(n)
        except RulelangError:
            raise
        except NotImplementedError:
            raise NoMetaKernel() from None
        except Exception as e:  # a shape or dtype error in a lowered body
            pos = n.meta.get("rule_pos")
            op = n.meta.get("rule_op")
            text = str(e).strip()
            msg = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
            if pos is not None:
                raise error_at(pos, f"shape error at node {op}: {msg}") from None
            raise CompileError(f"the model cannot be run on the example input at node {n.name}: {msg}") from None
        for x, pos, op, i in n.meta.get("rule_results", ()):
            expected = tuple(x.meta["tensor_meta"].shape)
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else None
            if got != expected and i < 0:  # `init:` (shaped like the output) or `final:` (like the input)
                what = "model output" if op == "init:" else "model input"
                raise error_at(pos, f"`{op}` gives a value of shape {got}, but the {what} has shape {expected}")
            if got != expected:
                which = f"input {i} ({x.name})" if i else f"its input ({x.name})"
                raise error_at(
                    pos,
                    f"the rule for node {op} returns relevance of shape {got} for {which}, which has shape "
                    f"{expected}: a relevance body must return one value per entry of the node's input",
                    hint="`vjp(s)` maps a value shaped like the node's output (R, y) back to its input's shape",
                )
        return value


def _meta_state(gm: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: torch.empty_like(v, device="meta")
        for k, v in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    }


def check_graph(explainer: Explainer, example_input: torch.Tensor) -> None:
    """Builds the explain graph and runs it on meta tensors (skipped where an op has no meta kernel)."""
    key = EXPLAIN
    gm = explainer.build(key)
    hoisted = explainer.hoisted_graph(key)
    x = torch.empty_like(example_input, device="meta")
    args: list[Any] = [x, None]
    if explainer.rules.reference:
        args.append(torch.empty_like(example_input, device="meta") if explainer.rules.reference == "input" else None)
    try:
        with torch.no_grad():
            if hoisted is not None:
                derive, _ = hoisted
                attrs = [
                    torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t
                    for t in explainer.hoisted_inputs(key)
                ]
                args.extend(ShapeChecker(derive).run(*attrs))
            with stateless._reparametrize_module(gm, _meta_state(gm)):
                ShapeChecker(gm).run(*args)
    except NoMetaKernel:
        return
