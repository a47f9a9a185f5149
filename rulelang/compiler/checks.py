"""Compile-time checks: run the explaining graph on meta tensors, so shape errors in rule bodies are reported
with the rule file's line before any real tensor is touched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx

from ..errors import CompileError, RulelangError
from .evaluate import error_at

if TYPE_CHECKING:
    from .explainer import Explainer


class _Checker(fx.Interpreter):
    def run_node(self, n: fx.Node) -> Any:
        try:
            return super().run_node(n)
        except RulelangError:
            raise
        except NotImplementedError:
            raise _NoMeta() from None
        except Exception as e:  # a shape or dtype error in a lowered body
            pos = n.meta.get("rule_pos")
            op = n.meta.get("rule_op")
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if pos is not None:
                raise error_at(pos, f"shape error at node {op}: {msg}") from None
            raise CompileError(f"the model cannot be run on the example input at node {n.name}: {msg}") from None


class _NoMeta(Exception):
    """An op without a meta kernel: the check cannot run on meta tensors."""


def _meta_state(gm: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: torch.empty_like(v, device="meta")
        for k, v in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
    }


def check_graph(explainer: Explainer, example_input: torch.Tensor) -> None:
    """Builds the explain graph and runs it on meta tensors (skipped where an op has no meta kernel)."""
    key = ("explain", None, False)
    gm = explainer._build(*key)
    cache = explainer._caches.get(key)
    x = torch.empty_like(example_input, device="meta")
    args: list[Any] = [x, None]
    if explainer.rules.reference:
        args.append(torch.empty_like(example_input, device="meta") if explainer.rules.reference == "input" else None)
    try:
        with torch.no_grad():
            if cache is not None:
                with torch.nn.utils.stateless._reparametrize_module(cache.derive, _meta_state(cache.derive)):
                    args.extend(_Checker(cache.derive).run())
            with torch.nn.utils.stateless._reparametrize_module(gm, _meta_state(gm)):
                _Checker(gm).run(*args)
    except _NoMeta:
        return
