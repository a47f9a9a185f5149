"""Compatibility re-exports: the per-kind implementations moved to `rulelang.compiler.impls`.

Import from `rulelang.compiler.impls` instead (`ConvDense` is the former `Linear`).
"""

from __future__ import annotations

from .impls import GENERIC, REGISTRY, ConvDense, Generic, impl_for, inplace_free

Linear = ConvDense  # former name (it shadowed torch.nn.Linear)
IMPLS = REGISTRY

__all__ = ["GENERIC", "IMPLS", "REGISTRY", "ConvDense", "Generic", "Linear", "impl_for", "inplace_free"]
